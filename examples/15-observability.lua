-- Scenario 15: observability.  Ten ops on a pool, three of which fail;
-- one is submitted by an HTTP handler whose request came with a W3C
-- traceparent header (as from an upstream service), so it runs detached
-- from the request yet stays in its trace, under the request's server
-- span.  Everything the ops leave behind is printed: the Prometheus
-- metrics (fetched from the server's /metrics), the JSON log lines, and
-- the OpenTelemetry spans.
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

-- The server: POST /orders submits op 5 for the tenant the request
-- names and answers at once; metrics = true serves /metrics.  The
-- handler runs on a worker (a Lua state of its own): it hands the op's
-- handle back through a channel.
local handles, op5 = {}, tether.chan(1)
local srv = tether.http.server { name = "shop", metrics = true, routes = {
  ["POST /orders"] = function(ctx, req, res)
    local tctx = tether.with_value(ctx, "tenant", req.headers["x-tenant"])
    op5:send(assert(pool:submit(tctx, "order-5", handle, 5)))
    res:status(202):send("accepted\n")
  end } }
-- curl asks the server for 'path' with curl (one of the Makefile's
-- Debian packages) and returns the body.
local function curl(path, args)
  local p = io.popen(("curl -s %s http://%s%s"):format(args or "",
                                                       srv:addr(), path))
  local out = p:read("a")
  p:close()
  return out
end

-- The request, from an upstream service whose span is 00f067aa0ba902b7;
-- the other ops are background work.
local upstream = "4bf92f3577b34da6a3ce929d0e0e4736"
assert(curl("/orders", "-X POST -H 'x-tenant: acme' -H 'traceparent: 00-"
            .. upstream .. "-00f067aa0ba902b7-01'") == "accepted\n")
handles[5] = op5:recv()
for n = 1, 10 do
  if n ~= 5 then
    handles[n] = assert(pool:submit(bg, "order-" .. n, handle, n))
  end
end
assert(pool:drain())
for n = 1, 10 do
  local v, err = handles[n]:wait()
  assert(v == n or (n % 3 == 0 and err.message:find("card declined")))
end
-- The metrics, as a Prometheus server scrapes them; the server is then
-- closed, which ends the span of that request too.
local text = curl("/metrics")
srv:close()
assert(tether.trace.flush(10))
tether.log.configure { level = "info", sink = "stderr" }

print("== metrics (GET /metrics, Prometheus text format)")
for line in text:gmatch("[^\n]+") do
  if line:find('pool="orders"', 1, true) or
     line:find('^tether_http_requests_total{server="shop"') then
    print(line)
  end
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
assert(value('tether_http_requests_total{server="shop",method="POST",'
             .. 'code="202"}') == 1)
local detached, server
for _, sp in ipairs(spans) do
  if sp.name == "order-5" then detached = sp end
  if sp.name == "POST /orders" then server = sp end
end
-- The two requests, 10 ops, 3 retried attempts.
assert(#spans == 15)
assert(server.kind == 2 and server.traceId == upstream)
assert(server.parentSpanId == "00f067aa0ba902b7")
assert(detached.parentSpanId == server.spanId)
assert(detached.traceId == upstream)
assert(detached.links[1].spanId == server.spanId)
assert(per_op["order-5"].trace_id == upstream)
assert(per_op["order-5"].tenant == "acme")
-- The two attempts of a failed op share a trace, even without a caller.
local order3 = {}
for _, sp in ipairs(spans) do
  if sp.name == "order-3" then order3[#order3 + 1] = sp.traceId end
end
assert(#order3 == 2 and order3[1] == order3[2])
