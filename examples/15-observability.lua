-- Scenario 15: observability.  Ten ops on a pool, three of which fail;
-- one is submitted from a span the script starts (it stands in for an
-- HTTP request's span), so it runs detached from it yet stays in its
-- trace.  Everything the ops leave behind is printed: the Prometheus
-- metrics, the JSON log lines, and the OpenTelemetry spans.
local tether = require "tether"
local json = require "dkjson"

local bg = tether.background()

-- Log lines go to a channel (as tables), spans to a file of OTLP JSON
-- lines; an OTLP/HTTP collector would be OTEL_EXPORTER_OTLP_ENDPOINT.
local logs = tether.chan(100)
assert(tether.log.configure { level = "debug", sink = logs })
local spans_file = os.tmpname()
assert(tether.trace.configure { file = spans_file, service_name = "shop",
                                schedule_delay = 0.05 })

local pool = tether.pool { name = "orders", workers = 3, tenant_key = "tenant",
                           retry = { attempts = 2, backoff = 0.005 } }

local function handle(ctx, n)
  tether.sleep(0.002 * n, ctx)
  if n % 3 == 0 then error(("order %d: card declined"):format(n), 0) end
  return n
end

-- The request: its span, and the tenant it serves.
local request = tether.with_value(bg, "tenant", "acme")
local rctx, rspan = tether.trace.start(request, "POST /orders",
                                       { ["http.method"] = "POST" })
local handles = {}
for n = 1, 10 do
  -- Op 5 is the request's; the others are background work.
  local parent = n == 5 and rctx or bg
  handles[n] = assert(pool:submit(parent, "order-" .. n, handle, n))
end
rspan:finish()
assert(pool:drain())
for n = 1, 10 do
  local v, err = handles[n]:wait()
  assert(v == n or (n % 3 == 0 and err.message:find("card declined")))
end
assert(tether.trace.flush(10))
tether.log.configure { level = "info", sink = "stderr" }

print("== metrics (tether.metrics.text(), Prometheus text format)")
local text = tether.metrics.text()
for line in text:gmatch("[^\n]+") do
  if line:find('pool="orders"', 1, true) then print(line) end
end

print("\n== log lines (one per op outcome; JSON on stderr or a file)")
local per_op = {}
while true do
  local r, ok = logs:try_recv()
  if not ok then break end
  if r.pool == "orders" then
    per_op[r.op] = r
    print(json.encode(r, { keyorder = { "ts", "level", "msg", "pool", "op",
      "id", "tenant", "attempt", "outcome", "duration_ms", "error",
      "trace_id", "span_id" } }))
  end
end

print("\n== spans (OTLP JSON, one line per exported batch)")
local spans = {}
for line in io.lines(spans_file) do
  local batch = json.decode(line)
  for _, sp in ipairs(batch.resourceSpans[1].scopeSpans[1].spans) do
    spans[#spans + 1] = sp
  end
end
os.remove(spans_file)
table.sort(spans, function(a, b) return a.startTimeUnixNano
                                         < b.startTimeUnixNano end)
for _, sp in ipairs(spans) do
  local attempt
  for _, a in ipairs(sp.attributes) do
    if a.key == "tether.attempt" then attempt = a.value.intValue end
  end
  print(("%-13s trace %s span %s parent %-16s links %d attempt %-2s %s")
        :format(sp.name, sp.traceId, sp.spanId, sp.parentSpanId or "-",
                #sp.links, attempt or "-",
                sp.status.code == 2 and "ERROR " .. sp.status.message
                or "ok"))
end

-- What the example shows holds.
local function value(series)
  return tonumber(text:match(series:gsub("[%[%]%(%)%.%-%+]", "%%%0")
                             .. " (%S+)\n"))
end
assert(value('tether_pool_submitted_total{pool="orders"}') == 10)
assert(value('tether_pool_ops_total{pool="orders",outcome="completed"}') == 7)
assert(value('tether_pool_ops_total{pool="orders",outcome="dead"}') == 3)
assert(value('tether_pool_retries_total{pool="orders"}') == 3)
assert(value('tether_pool_op_duration_seconds_count{pool="orders"}') == 13)
for n = 1, 10 do assert(per_op["order-" .. n], "no log line for op " .. n) end
local detached
for _, sp in ipairs(spans) do
  if sp.name == "order-5" then detached = sp end
end
assert(#spans == 14)  -- the request, 10 ops, 3 retried attempts
assert(detached.parentSpanId == rspan.span_id)
assert(detached.traceId == rspan.trace_id)
assert(detached.links[1].spanId == rspan.span_id)
assert(per_op["order-5"].trace_id == rspan.trace_id)
assert(per_op["order-5"].tenant == "acme")
-- The two attempts of a failed op share a trace, even without a caller.
local order3 = {}
for _, sp in ipairs(spans) do
  if sp.name == "order-3" then order3[#order3 + 1] = sp.traceId end
end
assert(#order3 == 2 and order3[1] == order3[2])
