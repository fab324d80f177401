-- Observability (DESIGN section 10, scenario 15): Prometheus metrics
-- checked by promtool and scraped by a real Prometheus server, JSON log
-- lines, pool events as Lua tables, and OpenTelemetry spans exported as
-- OTLP/HTTP JSON to a receiver written here (none exists to install).
local tether = require "tether"
local json = require "dkjson"
local httpd = require "spec.support.httpd"
local promtext = require "spec.support.promtext"
local prometheus = require "spec.support.prometheus"
local accounting = require "spec.support.accounting"

local bg = tether.background()

-- Settings are process-wide: every test leaves them as it found them.
local function reset()
  tether.log.configure{level = "info", sink = "stderr"}
  assert(tether.trace.configure{})
end

local function tmpname()
  local f = os.tmpname()
  os.remove(f)
  return f
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local s = f:read("a")
  f:close()
  return s
end

local function lines_of(s)
  local t = {}
  for l in s:gmatch("([^\n]*)\n") do t[#t + 1] = l end
  return t
end

-- child runs a Lua script in a fresh lua5.4 process (the plain build of
-- the module), with 'env' (a string of VAR=value words) before it; it
-- returns a pipe to read its output from.
local function child(src, env)
  local f = tmpname() .. ".lua"
  local h = assert(io.open(f, "w"))
  h:write('package.path = "./lua/?.lua;./lua/?/init.lua;" .. package.path\n',
          'package.cpath = "./build/?.so;" .. package.cpath\n', src)
  h:close()
  return io.popen((env or "") .. " lua5.4 " .. f .. " 2>&1; rm -f " .. f)
end

-- work runs a pool that completes, fails, retries and refuses, and
-- returns once it drained: 3 accepted (2 completed, 1 dead after 2
-- attempts), 2 refused with queue_full.
local function work(name, opts)
  opts = opts or {}
  local p = tether.pool{name = name, workers = 1, queue = 2, quiet = true,
                        retry = {attempts = 2, backoff = 0.001},
                        metrics = opts.metrics}
  local gate, open = tether.with_cancel(bg)
  local started = tether.chan(1)
  assert(p:submit(bg, "blocker", function()
    started:send(true)
    gate:wait()
  end))
  assert(started:recv())
  assert(p:submit(bg, "ok", function() return 1 end))
  assert(p:submit(bg, "bad", function() error("no stock") end))
  for _ = 1, 2 do
    local h, err = p:submit(bg, "late", function() end)
    assert.is_nil(h)
    assert.equal("queue_full", err.code)
  end
  open()
  assert(p:drain())
  return p
end

describe("metrics", function()
  it("pass promtool check metrics after a workload, and the checks "
     .. "promtool does not make", function()
    work("spec_promtool")
    -- Hostile pool names are label values like any other.
    local hostile = tether.pool{name = 'q"uo\\te\nnew\255bad',
                                workers = 1, quiet = true}
    assert(hostile:submit(bg, "x", function() end):wait() == nil)
    assert(hostile:drain())
    local text = tether.metrics.text()
    local f = tmpname()
    local h = assert(io.open(f, "w"))
    h:write(text)
    h:close()
    local p = io.popen("promtool check metrics < " .. f .. " 2>&1")
    local out = p:read("a")
    local ok, _, code = p:close()
    os.remove(f)
    assert.equal("", out)
    assert.is_true(ok, "promtool exit " .. tostring(code))
    assert.same({}, promtext.check(text))
    local function v(name, labels)
      return promtext.value(text, name, labels)
    end
    local pool = {pool = "spec_promtool"}
    assert.equal(3, v("tether_pool_submitted_total", pool))
    assert.equal(2, v("tether_pool_ops_total",
                      {pool = "spec_promtool", outcome = "completed"}))
    assert.equal(1, v("tether_pool_ops_total",
                      {pool = "spec_promtool", outcome = "dead"}))
    assert.equal(0, v("tether_pool_ops_total",
                      {pool = "spec_promtool", outcome = "abandoned"}))
    assert.equal(2, v("tether_pool_rejected_total",
                      {pool = "spec_promtool", code = "queue_full"}))
    assert.equal(1, v("tether_pool_retries_total", pool))
    assert.equal(4, v("tether_pool_op_duration_seconds_count", pool))
    assert.equal(4, v("tether_pool_op_duration_seconds_bucket",
                      {pool = "spec_promtool", le = "+Inf"}))
    assert.equal(0, v("tether_pool_queued", pool))
    assert.equal(0, v("tether_pool_workers", pool))
    assert.equal(1, v("tether_pool_submitted_total",
                      {pool = 'q"uo\\te\nnew\u{FFFD}bad'}))
    -- The family checks catch what they are for.
    assert.is_true(#promtext.check(
      "# HELP h x\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\n"
      .. "h_bucket{le=\"2\"} 1\nh_sum 1\nh_count 1\n") >= 2)
    assert.is_true(#promtext.check(
      "# HELP c_total x\n# TYPE c_total counter\nc_total 1\nc_total 2\n")
      == 1)
  end)

  it("add up over pools that share a name, bound the tenant label, and "
     .. "leave out pools made with metrics = false", function()
    work("spec_shared")
    work("spec_shared")
    work("spec_off", {metrics = false})
    local key = tether.key("tenant")
    local p = tether.pool{name = "spec_tenants", workers = 1, quiet = true,
                          tenant_key = key,
                          metrics = {tenant = true, max_tenants = 2}}
    for _, t in ipairs {"acme", "globex", "initech", "umbrella"} do
      assert(p:submit(tether.with_value(bg, key, t), "op",
                      function() end):wait() == nil)
    end
    assert(p:drain())
    local text = tether.metrics.text()
    assert.same({}, promtext.check(text))
    assert.equal(6, promtext.value(text, "tether_pool_submitted_total",
                                   {pool = "spec_shared"}))
    assert.is_nil(text:find('pool="spec_off"', 1, true))
    local function tv(t)
      return promtext.value(text, "tether_pool_submitted_total",
                            {pool = "spec_tenants", tenant = t})
    end
    assert.equal(1, tv("acme"))
    assert.equal(1, tv("globex"))
    assert.equal(2, tv("other"))
    assert.is_nil(tv("initech"))
    assert.has_error(function()
      tether.pool{name = "x", metrics = {tenants = true}}
    end, "bad argument #1 to 'pool' (unknown option 'metrics.tenants'; "
         .. "did you mean 'metrics.tenant'?)")
    assert.has_error(function() tether.pool{name = "x", metrics = 1} end,
      "bad argument #1 to 'pool' (field 'metrics' must be a boolean or a "
      .. "table)")
  end)

  it("are scraped by a real Prometheus server, which finds the values",
     function()
    work("spec_scraped")
    local srv = httpd.listen()
    local prom = prometheus.start(srv.port)
    finally(function()
      prom:stop()
      srv:close()
    end)
    local scrapes = 0
    local function handler(req)
      if req.path ~= "/metrics" then return 404, "not found" end
      scrapes = scrapes + 1
      return 200, tether.metrics.text(), "text/plain; version=0.0.4"
    end
    local found
    -- The first scrape comes about 5 s after the start: bounded wait.
    local ok = srv:serve_until(handler, function()
      if not prom:alive() then error("prometheus ended:\n" .. prom:log()) end
      local r = prom:query('tether_pool_ops_total{pool="spec_scraped"}')
      if r and r.status == "success" and #r.data.result == 6 then
        found = r.data.result
        return true
      end
      return false
    end, 30)
    assert.is_true(ok, "no value within 30 s; scrapes: " .. scrapes
                       .. "\n" .. prom:log())
    local by = {}
    for _, s in ipairs(found) do
      assert.equal("tether", s.metric.job)
      assert.equal("127.0.0.1:" .. srv.port, s.metric.instance)
      by[s.metric.outcome] = s.value[2]
    end
    assert.same({completed = "2", dead = "1", failed = "0", stopped = "0",
                 spilled = "0", abandoned = "0"}, by)
    local r = prom:query('tether_pool_rejected_total{pool="spec_scraped",'
                         .. 'code="queue_full"}')
    assert.equal("2", r.data.result[1].value[2])
    r = prom:query('up{job="tether"}')
    assert.equal("1", r.data.result[1].value[2])
  end)
end)

describe("logs", function()
  after_each(reset)

  local ts_pat = "^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$"
  local fields = {"ts", "level", "msg", "pool", "op", "id", "tenant",
                  "attempt", "outcome", "duration_ms", "error", "trace_id",
                  "span_id", "state"}

  -- decode parses one line; JSON null stays json.null, so that a key
  -- written as null is still there.
  local function decode(line)
    local v, _, err = json.decode(line, 1, json.null)
    assert(type(v) == "table", "not a JSON object (" .. tostring(err)
                               .. "): " .. line:sub(1, 200))
    return v
  end

  it("are JSON lines with every field, one per op outcome", function()
    local path = tmpname()
    assert(tether.log.configure{level = "debug", sink = path})
    local key = tether.key("tenant")
    local p = tether.pool{name = "spec_log", workers = 2, tenant_key = key,
                          retry = {attempts = 2, backoff = 0.001}}
    local rctx, req = tether.trace.start(tether.with_value(bg, key, "acme"),
                                         "request")
    for i = 1, 4 do
      p:submit(rctx, "op" .. i, function(_, n)
        if n % 2 == 0 then error("failed " .. n) end
      end, i)
    end
    assert(p:drain())
    req:finish()
    reset()
    local n, outcomes = 0, {}
    for _, line in ipairs(lines_of(read_file(path))) do
      local r = decode(line)
      if r.pool == "spec_log" then
        n = n + 1
        for _, k in ipairs(fields) do
          assert.is_not_nil(r[k], k .. " missing in " .. line)
        end
        assert.matches(ts_pat, r.ts)
        assert.equal("acme", r.tenant)
        assert.equal("number", type(r.id))
        assert.equal("number", type(r.attempt))
        assert.equal("number", type(r.duration_ms))
        assert.equal(req.trace_id, r.trace_id)
        assert.equal(req.span_id, r.span_id)
        outcomes[r.outcome] = (outcomes[r.outcome] or 0) + 1
        if r.outcome == "completed" then
          assert.equal("debug", r.level)
          assert.equal(json.null, r.error)
        else
          assert.equal(r.outcome == "retried" and "warn" or "error", r.level)
          assert.matches("failed %d", r.error)
        end
      end
    end
    os.remove(path)
    assert.equal(6, n)
    assert.same({completed = 2, retried = 2, dead = 2}, outcomes)
  end)

  it("stay valid JSON whatever the strings hold", function()
    local path = tmpname()
    assert(tether.log.configure{sink = path})
    -- Names and messages are C strings (they end at a NUL); the fields
    -- of a script's own line keep every byte.
    local name = 'po"ol\n\255' .. ("\\"):rep(3)
    local big = ("x"):rep(1 << 20) .. '"\n\255'
    local p = tether.pool{name = name, workers = 1}
    local h = p:submit(bg, big, function() error('e"\n\255\1', 0) end)
    h:wait()
    assert(p:drain())
    tether.log.warn("hostile", {v = 'a\0b"\n\255\\', big = big})
    reset()
    local found, mine = false, false
    for _, line in ipairs(lines_of(read_file(path))) do
      local r = decode(line)
      if r.outcome == "dead" and r.id == 1 and #r.op > (1 << 20) then
        found = true
        assert.equal('po"ol\n\u{FFFD}\\\\\\', r.pool)
        assert.equal(("x"):rep(1 << 20) .. '"\n\u{FFFD}', r.op)
        assert.equal('e"\n\u{FFFD}\1', r.error)
      elseif r.msg == "hostile" then
        mine = true
        assert.equal('a\0b"\n\u{FFFD}\\', r.v)
        assert.equal(("x"):rep(1 << 20) .. '"\n\u{FFFD}', r.big)
      end
    end
    os.remove(path)
    assert.is_true(found)
    assert.is_true(mine)
  end)

  it("go to a channel as tables; a full channel drops and counts, and "
     .. "the pool never waits", function()
    local ch = tether.chan(2)
    local before = tether.log.dropped()
    assert(tether.log.configure{sink = ch})
    local p = tether.pool{name = "spec_log_chan", workers = 2}
    for i = 1, 6 do p:submit(bg, "op" .. i, function() error("x") end) end
    assert(p:drain())
    reset()
    local got = {}
    while true do
      local r, ok = ch:try_recv()
      if not ok then break end
      got[#got + 1] = r
    end
    assert.equal(2, #got)
    for _, r in ipairs(got) do
      assert.equal("error", r.level)
      assert.equal("op dead", r.msg)
      assert.equal("spec_log_chan", r.pool)
      assert.matches(ts_pat, r.ts)
      assert.equal("dead", r.outcome)
    end
    assert.is_true(tether.log.dropped() - before >= 4)
  end)

  it("of several processes and threads share a file line by line",
     function()
    local path = tmpname()
    local src = ([[
      local tether = require "tether"
      assert(tether.log.configure{sink = %q})
      local pad = ("y"):rep(5000)
      local p = tether.pool{name = "writers", workers = 4}
      for w = 1, 4 do
        p:submit(tether.background(), "w", function()
          for i = 1, 100 do
            tether.log.info("line", {w = w, i = i, pad = pad})
          end
        end)
      end
      assert(p:drain())
    ]]):format(path)
    local pipes = {}
    for i = 1, 3 do pipes[i] = child(src) end
    for i = 1, 3 do
      local out = pipes[i]:read("a")
      assert.is_true(pipes[i]:close(), out)
    end
    local all = lines_of(read_file(path))
    os.remove(path)
    assert.equal(1200, #all)
    for _, line in ipairs(all) do
      local r = decode(line)
      assert.equal("line", r.msg)
      assert.equal(5000, #r.pad)
    end
  end)

  it("are silenced by quiet = true", function()
    local path = tmpname()
    assert(tether.log.configure{sink = path, level = "debug"})
    local p = tether.pool{name = "spec_quiet", workers = 1, quiet = true}
    p:submit(bg, "op", function() error("x") end)
    assert(p:drain())
    reset()
    assert.is_nil(read_file(path):find("spec_quiet", 1, true))
    os.remove(path)
  end)

  it("configure checks its options", function()
    assert.has_error(function() tether.log.configure{levle = "debug"} end,
      "bad argument #1 to 'configure' (unknown option 'levle'; did you "
      .. "mean 'level'?)")
    assert.has_error(function() tether.log.configure{level = "loud"} end,
      "bad argument #1 to 'configure' (field 'level' must be one of "
      .. "'debug', 'info', 'warn', 'error', 'off')")
    assert.has_error(function() tether.log.configure{sink = 3} end,
      "bad argument #1 to 'configure' (field 'sink' must be 'stderr', a "
      .. "file path or a tether.Chan)")
    local ok, err = tether.log.configure{sink = "/nonexistent/dir/x.log"}
    assert.is_nil(ok)
    assert.matches("cannot open log file '/nonexistent/dir/x.log'",
                   err.message)
    tether.log.configure{level = "warn"}
    assert.equal("warn", tether.log.level())
  end)
end)

describe("pool:events()", function()
  it("receives each event as a table, and is closed once the pool "
     .. "drained", function()
    local p = tether.pool{name = "spec_events", workers = 1, quiet = true,
                          retry = {attempts = 2, backoff = 0.001}}
    local ch = p:events()
    p:submit(bg, "good", function() end)
    p:submit(bg, "bad", function() error("broken") end)
    assert(p:drain())
    local kinds, last = {good = {}, bad = {}}, nil
    while true do
      local e, ok = ch:recv()
      if not ok then break end
      assert.equal("spec_events", e.pool)
      last = e.kind
      if e.name then table.insert(kinds[e.name], e.kind) end
      if e.kind == "completed" then
        assert.equal(1, e.id)
        assert.equal(1, e.attempt)
        assert.equal("number", type(e.duration))
      elseif e.kind == "retried" or e.kind == "dead" then
        assert.matches("broken", e.error)
        assert.equal("failed", e.code)
      end
    end
    assert.same({good = {"submitted", "started", "completed"},
                 bad = {"submitted", "started", "retried", "started",
                        "dead"}}, kinds)
    assert.equal("drained", last)
    assert.equal(0, p:stats().events_dropped)
  end)

  it("never blocks the pool: a full channel drops and counts", function()
    local p = tether.pool{name = "spec_events_full", workers = 2,
                          quiet = true}
    local ch = p:events(3)
    for i = 1, 20 do p:submit(bg, "op" .. i, function() end) end
    assert(p:drain())
    local s = p:stats()
    accounting.check(s, accounting.describe(s))
    assert.equal(20, s.completed)
    -- 20 submitted, 20 started, 20 completed and drained: 61 events.
    assert.equal(61 - 3, s.events_dropped)
    local n = 0
    while true do
      local _, ok = ch:recv()
      if not ok then break end
      n = n + 1
    end
    assert.equal(3, n)
    assert.has_error(function() p:events(0) end,
      "bad argument #1 to 'events' (capacity out of range (1 to 16777216))")
  end)
end)

describe("traces", function()
  after_each(reset)

  local function is_hex(s, n)
    return type(s) == "string" and #s == n and s:match("^[0-9a-f]+$") ~= nil
  end

  -- receiver collects what an exporter POSTs to /v1/traces.
  local function receiver()
    local r = {srv = httpd.listen(), requests = {}, spans = {}}
    function r.handler(req)
      if req.method ~= "POST" or req.path ~= "/v1/traces" then
        return 404, "not found"
      end
      local body = json.decode(req.body)
      if type(body) ~= "table" then return 400, "bad json" end
      r.requests[#r.requests + 1] = {headers = req.headers, body = body}
      for _, rs in ipairs(body.resourceSpans or {}) do
        for _, ss in ipairs(rs.scopeSpans or {}) do
          for _, sp in ipairs(ss.spans or {}) do
            r.spans[#r.spans + 1] = sp
            r.spans[sp.spanId] = sp
          end
        end
      end
      return 200, "{}", "application/json"
    end
    function r:wait_for(n, timeout)
      return self.srv:serve_until(self.handler, function()
        return #self.spans >= n
      end, timeout or 20)
    end
    return r
  end

  local function attrs(sp)
    local t = {}
    for _, a in ipairs(sp.attributes) do
      local v = a.value
      t[a.key] = v.stringValue or v.intValue or v.doubleValue
      if v.boolValue ~= nil then t[a.key] = v.boolValue end
    end
    return t
  end

  -- check_shape asserts the OTLP JSON shape of one span.
  local function check_shape(sp)
    assert.is_true(is_hex(sp.traceId, 32), sp.traceId)
    assert.is_true(is_hex(sp.spanId, 16), sp.spanId)
    if sp.parentSpanId ~= nil then
      assert.is_true(is_hex(sp.parentSpanId, 16))
    end
    assert.equal("string", type(sp.startTimeUnixNano))
    assert.equal("string", type(sp.endTimeUnixNano))
    assert.matches("^%d+$", sp.startTimeUnixNano)
    assert.matches("^%d+$", sp.endTimeUnixNano)
    assert.is_true(#sp.startTimeUnixNano >= 19)
    assert.is_true(math.tointeger(sp.endTimeUnixNano)
                   >= math.tointeger(sp.startTimeUnixNano))
    assert.equal("number", type(sp.kind))
    assert.equal("table", type(sp.attributes))
    assert.equal("table", type(sp.links))
    assert.is_true(sp.status.code == 0 or sp.status.code == 2)
  end

  it("of pool attempts are exported as OTLP/HTTP JSON, children of the "
     .. "submitter's span with a link to it", function()
    local r = receiver()
    finally(function() r.srv:close() end)
    assert(tether.trace.configure{
      endpoint = r.srv:url("/v1/traces"), service_name = "spec-svc",
      headers = {["x-api-key"] = "s3cret"}, resource = {region = "eu"},
      schedule_delay = 0.05, export_timeout = 5})
    assert.is_true(tether.trace.enabled())
    local p = tether.pool{name = "spec_traced", workers = 2, quiet = true,
                          retry = {attempts = 2, backoff = 0.001}}
    local rctx, req = tether.trace.start(bg, "request", {route = "/orders",
                                                         n = 3, ok = true})
    assert.is_true(req:recording())
    local seen = tether.chan(2)
    p:submit(rctx, "charge", function(ctx)
      seen:send(tether.trace.traceparent(ctx))
    end)
    p:submit(rctx, "reserve", function() error("no stock") end)
    assert(p:drain())
    assert.is_true(req:finish())
    assert.is_false(req:finish("late"))
    -- 1 request + 1 charge + 2 reserve attempts.
    assert.is_true(r:wait_for(4), "spans: " .. #r.spans)
    local inside = seen:recv()
    for _, q in ipairs(r.requests) do
      assert.equal("application/json", q.headers["content-type"])
      assert.equal("s3cret", q.headers["x-api-key"])
      local rs = q.body.resourceSpans[1]
      local res = attrs(rs.resource)
      assert.equal("spec-svc", res["service.name"])
      assert.equal("eu", res.region)
      assert.equal("tether", rs.scopeSpans[1].scope.name)
    end
    local root = r.spans[req.span_id]
    assert.is_not_nil(root)
    check_shape(root)
    assert.is_nil(root.parentSpanId)
    assert.equal(req.trace_id, root.traceId)
    assert.same({route = "/orders", n = "3", ok = true}, attrs(root))
    local ops = {}
    for _, sp in ipairs(r.spans) do
      check_shape(sp)
      if sp.spanId ~= req.span_id then
        ops[#ops + 1] = sp
        assert.equal(req.trace_id, sp.traceId)
        assert.equal(req.span_id, sp.parentSpanId)
        assert.equal(1, #sp.links)
        assert.equal(req.trace_id, sp.links[1].traceId)
        assert.equal(req.span_id, sp.links[1].spanId)
        local a = attrs(sp)
        assert.equal("spec_traced", a["tether.pool"])
        assert.equal(sp.name, a["tether.op"])
        if sp.name == "reserve" then
          assert.equal(2, sp.status.code)
          assert.matches("no stock", sp.status.message)
        else
          assert.equal(0, sp.status.code)
          -- The op's context carried its own span.
          assert.equal(("00-%s-%s-01"):format(sp.traceId, sp.spanId), inside)
        end
      end
    end
    assert.equal(3, #ops)
    local attempts = {}
    for _, sp in ipairs(ops) do
      if sp.name == "reserve" then
        attempts[#attempts + 1] = attrs(sp)["tether.attempt"]
      end
    end
    table.sort(attempts)
    assert.same({"1", "2"}, attempts)
  end)

  it("continue a request's traceparent, and of saga steps and "
     .. "compensations", function()
    local r = receiver()
    finally(function() r.srv:close() end)
    assert(tether.trace.configure{endpoint = r.srv:url("/v1/traces"),
                                  schedule_delay = 0.05})
    local header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    local rctx = assert(tether.trace.with_traceparent(bg, header))
    assert.equal(header, tether.trace.traceparent(rctx))
    local p = tether.pool{name = "spec_remote", workers = 1, quiet = true}
    assert(p:submit(rctx, "audit", function() end):wait() == nil)
    assert(p:drain())
    local s = tether.saga{
      name = "order",
      {name = "reserve", action = function() end,
       compensate = function() end},
      {name = "charge", action = function() error("declined") end},
    }
    local ok = s:run(rctx, {})
    assert.is_nil(ok)
    assert.is_true(r:wait_for(4), "spans: " .. #r.spans)
    local by = {}
    for _, sp in ipairs(r.spans) do
      check_shape(sp)
      by[sp.name] = sp
      assert.equal("4bf92f3577b34da6a3ce929d0e0e4736", sp.traceId)
      assert.equal("00f067aa0ba902b7", sp.parentSpanId)
    end
    assert.is_not_nil(by.audit)
    assert.is_not_nil(by.reserve)
    assert.equal(2, by.charge.status.code)
    assert.matches("declined", by.charge.status.message)
    local comp = by["compensate reserve"]
    assert.is_not_nil(comp)
    assert.equal("00f067aa0ba902b7", comp.links[1].spanId)
    assert.is_true(attrs(comp)["tether.compensation"])
    local nilv, err = tether.trace.with_traceparent(bg, "00-zz")
    assert.is_nil(nilv)
    assert.equal("invalid", err.code)
  end)

  it("of HTTP requests: a request's traceparent is the parent of its "
     .. "server span, which is the parent of the ops its handler submits",
     function()
    local r = receiver()
    finally(function() r.srv:close() end)
    assert(tether.trace.configure{endpoint = r.srv:url("/v1/traces"),
                                  schedule_delay = 0.05})
    local audit = tether.pool{name = "spec_http_audit", workers = 1,
                              quiet = true}
    local seen = tether.chan(1)
    local srv = tether.http.server{name = "spec_http_traced", routes = {
      ["POST /orders"] = function(ctx, _, res)
        seen:send(tether.trace.traceparent(ctx))
        audit:submit(ctx, "audit", function() end)
        res:status(201):send("ok")
      end,
      ["GET /fail"] = function() error("broken") end,
    }}
    local base = "http://" .. srv:addr()
    local function curl(args)
      local p = io.popen("env -u LD_PRELOAD curl -s -o /dev/null " .. args
                         .. " 2>&1")
      p:read("a")
      p:close()
    end
    curl("-X POST -H 'traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-"
         .. "00f067aa0ba902b7-01' " .. base .. "/orders")
    curl(base .. "/fail")
    curl("-X BREW " .. base .. "/other")
    assert(audit:drain())
    assert(srv:shutdown())
    -- 3 server spans, 1 audit op; nothing for the handlers' own attempts.
    assert.is_true(r:wait_for(4), "spans: " .. #r.spans)
    r.srv:serve(r.handler, 0.2)
    assert.equal(4, #r.spans)
    local by = {}
    for _, sp in ipairs(r.spans) do
      check_shape(sp)
      by[sp.name] = sp
    end
    local server = by["POST /orders"]
    assert.is_not_nil(server)
    assert.equal(2, server.kind)
    assert.equal("4bf92f3577b34da6a3ce929d0e0e4736", server.traceId)
    assert.equal("00f067aa0ba902b7", server.parentSpanId)
    assert.equal(0, server.status.code)
    local a = attrs(server)
    assert.equal("POST", a["http.request.method"])
    assert.equal("/orders", a["url.path"])
    assert.equal("/orders", a["http.route"])
    assert.equal("201", a["http.response.status_code"])
    assert.equal("spec_http_traced", a["tether.server"])
    -- The handler's context carried the server span.
    assert.equal(("00-%s-%s-01"):format(server.traceId, server.spanId),
                 seen:recv())
    local op = by.audit
    assert.equal(server.traceId, op.traceId)
    assert.equal(server.spanId, op.parentSpanId)
    assert.equal(server.spanId, op.links[1].spanId)
    -- Without a traceparent: a trace of its own; a 5xx is an error.
    local fail = by["GET /fail"]
    assert.is_nil(fail.parentSpanId)
    assert.equal(2, fail.status.code)
    assert.matches("broken", fail.status.message)
    assert.equal("500", attrs(fail)["http.response.status_code"])
    -- A method outside the standard ones: "HTTP" in the name.
    local other = by["HTTP /other"]
    assert.equal("_OTHER", attrs(other)["http.request.method"])
    assert.equal("BREW", attrs(other)["http.request.method_original"])
    assert.equal("404", attrs(other)["http.response.status_code"])
  end)

  it("are configured by the OTEL_* variables and flushed when the "
     .. "script ends", function()
    local r = receiver()
    finally(function() r.srv:close() end)
    local src = [[
      local tether = require "tether"
      assert(tether.trace.enabled())
      local p = tether.pool{name = "child", workers = 1, quiet = true}
      local ctx, req = tether.trace.start(tether.background(), "job")
      p:submit(ctx, "step", function() end)
      assert(p:drain())
      req:finish()
      print(req.trace_id, req.span_id)
    ]]
    local env = ("OTEL_EXPORTER_OTLP_ENDPOINT=%s "
      .. "OTEL_SERVICE_NAME=child-svc "
      .. "OTEL_EXPORTER_OTLP_HEADERS='authorization=Bearer%%20t0k,x-b=1' "
      .. "OTEL_TRACES_SAMPLER=parentbased_traceidratio "
      .. "OTEL_TRACES_SAMPLER_ARG=1"):format(r.srv:url())
    -- The script ends normally, and then with os.exit (no close).
    for _, tail in ipairs {"", "os.exit(0)"} do
      local first = #r.spans
      local pipe = child(src .. tail, env)
      assert.is_true(r:wait_for(first + 2), "spans: " .. #r.spans)
      local out = pipe:read("a")
      assert.is_true(pipe:close(), out)
      local tid, sid = out:match("^(%x+)\t(%x+)\n$")
      assert.is_not_nil(tid, out)
      local q = r.requests[#r.requests]
      assert.equal("Bearer t0k", q.headers.authorization)
      assert.equal("1", q.headers["x-b"])
      assert.equal("child-svc",
                   attrs(q.body.resourceSpans[1].resource)["service.name"])
      assert.equal(tid, r.spans[sid].traceId)
      local step = r.spans[#r.spans].name == "step" and r.spans[#r.spans]
                   or r.spans[#r.spans - 1]
      assert.equal(sid, step.parentSpanId)
    end
    -- A sampler that says no sends nothing, yet ids still propagate.
    local pipe = child([[
      local tether = require "tether"
      assert(not tether.trace.enabled())
      local ctx, s = tether.trace.start(tether.background(), "x")
      assert(not s:recording() and not s.sampled)
      assert(tether.trace.traceparent(ctx):match("%-00$"))
      s:finish()
      print("done")
    ]], env:gsub("parentbased_traceidratio", "always_off"))
    local before = #r.requests
    r.srv:serve(r.handler, 0.5)
    local out = pipe:read("a")
    assert.is_true(pipe:close(), out)
    r.srv:serve(r.handler, 0.2)
    assert.equal("done\n", out)
    assert.equal(before, #r.requests)
  end)

  it("go to a file as OTLP JSON lines", function()
    local path = tmpname()
    assert(tether.trace.configure{file = path, schedule_delay = 0.05})
    local ctx, a = tether.trace.start(bg, "a")
    local _, b = tether.trace.start(ctx, "b \"quoted\"\n")
    b:set("k", 1.5)
    b:finish(tether.canceled)
    a:finish()
    assert(tether.trace.flush(10))
    local all = lines_of(read_file(path))
    os.remove(path)
    assert.is_true(#all >= 1)
    local spans = {}
    for _, line in ipairs(all) do
      local body = json.decode(line)
      for _, sp in ipairs(body.resourceSpans[1].scopeSpans[1].spans) do
        spans[sp.name] = sp
      end
    end
    assert.equal(a.span_id, spans["b \"quoted\"\n"].parentSpanId)
    assert.equal("context canceled", spans["b \"quoted\"\n"].status.message)
    assert.same({{key = "k", value = {doubleValue = 1.5}}},
                spans["b \"quoted\"\n"].attributes)
    assert.has_error(function() tether.trace.configure{endpont = "x"} end,
      "bad argument #1 to 'configure' (unknown option 'endpont'; did you "
      .. "mean 'endpoint'?)")
    assert.has_error(function() tether.trace.start(bg, "x", {k = {}}) end,
      "bad argument #3 to 'start' (attribute 'k' must be a string, number "
      .. "or boolean, got table)")
    local ok, err = tether.trace.configure{file = "/nonexistent/d/t.jsonl"}
    assert.is_nil(ok)
    assert.matches("cannot open trace file", err.message)
  end)
end)

describe("scenario 15", function()
  after_each(reset)

  it("ten ops show counters, a duration histogram, a log line per op and "
     .. "a span per op linked to the submitting span", function()
    local path = tmpname()
    local logs = tether.chan(100)
    assert(tether.log.configure{level = "debug", sink = logs})
    assert(tether.trace.configure{file = path, schedule_delay = 0.05})
    local p = tether.pool{name = "scenario15", workers = 3}
    local rctx, req = tether.trace.start(bg, "request")
    local handles = {}
    for i = 1, 10 do
      -- One op is detached from the request's span; the others have no
      -- caller span of their own.
      local parent = i == 5 and rctx or bg
      handles[i] = p:submit(parent, "op" .. i, function(_, n)
        tether.sleep(0.001 * n)
        if n % 4 == 0 then error("op " .. n .. " failed") end
        return n
      end, i)
    end
    req:finish()
    assert(p:drain())
    for i = 1, 10 do
      local v, err = handles[i]:wait()
      if i % 4 == 0 then
        assert.matches("op " .. i .. " failed", err.message)
      else
        assert.equal(i, v)
      end
    end
    assert(tether.trace.flush(10))
    reset()
    -- Counters and the histogram.
    local text = tether.metrics.text()
    local pool = {pool = "scenario15"}
    assert.equal(10, promtext.value(text, "tether_pool_submitted_total", pool))
    assert.equal(8, promtext.value(text, "tether_pool_ops_total",
      {pool = "scenario15", outcome = "completed"}))
    assert.equal(2, promtext.value(text, "tether_pool_ops_total",
                                   {pool = "scenario15", outcome = "dead"}))
    assert.equal(10, promtext.value(text,
      "tether_pool_op_duration_seconds_count", pool))
    assert.is_true(promtext.value(text, "tether_pool_op_duration_seconds_sum",
                                  pool) >= 0.055)
    -- One log line per op.
    local lines = {}
    while true do
      local r, ok = logs:try_recv()
      if not ok then break end
      if r.pool == "scenario15" then lines[r.op] = r end
    end
    for i = 1, 10 do
      local r = lines["op" .. i]
      assert.is_not_nil(r, "no line for op" .. i)
      assert.equal(i % 4 == 0 and "dead" or "completed", r.outcome)
    end
    -- One span per op; the detached one is the request's child, linked.
    local spans = {}
    for _, line in ipairs(lines_of(read_file(path))) do
      for _, sp in ipairs(json.decode(line).resourceSpans[1]
                              .scopeSpans[1].spans) do
        spans[sp.name] = sp
      end
    end
    os.remove(path)
    for i = 1, 10 do assert.is_not_nil(spans["op" .. i]) end
    assert.equal(req.span_id, spans.op5.parentSpanId)
    assert.equal(req.trace_id, spans.op5.traceId)
    assert.equal(req.span_id, spans.op5.links[1].spanId)
    assert.is_nil(spans.op1.parentSpanId)
    assert.equal(2, spans.op4.status.code)
    assert.equal(lines.op5.span_id, spans.op5.spanId)
  end)
end)
