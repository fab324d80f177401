-- Observability where it meets HTTP servers and durable stores (DESIGN
-- sections 9, 10 and 11): the HTTP families after a known workload,
-- /metrics on tether.http.server when asked for, and the store gauges
-- after spills, all checked by promtool and by the checks promtool does
-- not make.  The server spans are in 12-observability_spec.lua, next to
-- the OTLP receiver they are sent to.
local tether = require "tether"
local promtext = require "spec.support.promtext"
local eventually = require "spec.support.eventually"
local S = require "spec.support.store"

local bg = tether.background()

-- Child processes run without the sanitizer runtime that `make check`
-- preloads into this one (curl hangs with ASan's preloaded).
local CURL = "env -u LD_PRELOAD curl"

-- curl runs curl with 'args' and returns its output (headers and body
-- with -i) and exit status.
local function curl(args)
  local p = io.popen(CURL .. " -s " .. args .. " 2>/dev/null; echo \"#rc=$?\"")
  local out = p:read("a")
  p:close()
  local body, rc = out:match("^(.*)#rc=(%d+)\n$")
  return body, tonumber(rc)
end

local function url(srv, path)
  return "'http://" .. srv:addr() .. path .. "'"
end

-- promtool checks a text as `promtool check metrics` does; it returns
-- its output and whether it passed.
local function promtool(text)
  local f = os.tmpname()
  local h = assert(io.open(f, "w"))
  h:write(text)
  h:close()
  local p = io.popen("promtool check metrics < " .. f .. " 2>&1")
  local out = p:read("a")
  local ok = p:close()
  os.remove(f)
  return out, ok
end

local function value(text, name, labels)
  return promtext.value(text, name, labels)
end

-- full_pool returns a pool whose only worker is busy and whose queue is
-- full, so that named ops spill to 'store', and the function that lets
-- it go.
local function full_pool(name, store)
  local pool = tether.pool{name = name, workers = 1, queue = 1,
                           overflow = store, quiet = true}
  local gate, open = tether.with_cancel(bg)
  local started = tether.chan(1)
  assert(pool:submit(bg, "blocker", function(_, g, s)
    s:send(true)
    g:wait()
  end, gate, started))
  assert(started:recv())
  assert(pool:submit(bg, "filler", function() end))
  return pool, function()
    open()
    assert(pool:drain())
  end
end

describe("HTTP metrics", function()
  it("count a known workload exactly, and pass promtool with the store "
     .. "families", function()
    local started = tether.chan(1)
    local srv = tether.http.server{name = "spec_http_obs", metrics = true,
      routes = {
        ["GET /hello"] = function(_, _, res) res:send("hello") end,
        ["POST /fail"] = function() error("broken") end,
        ["GET /slow"] = function(ctx)
          started:send(true)
          ctx:wait()
        end,
      }}
    finally(function() srv:close() end)
    for _ = 1, 3 do
      local body, rc = curl(url(srv, "/hello"))
      assert.equal(0, rc)
      assert.equal("hello", body)
    end
    assert.equal("500", (curl("-o /dev/null -w '%{http_code}' -X POST "
                              .. url(srv, "/fail"))))
    -- A method outside the standard ones is counted as OTHER.
    assert.equal("405", (curl("-o /dev/null -w '%{http_code}' -X BREW "
                              .. url(srv, "/hello"))))
    -- A client that gives up while its handler runs.
    local p = io.popen(CURL .. " -s --max-time 1 " .. url(srv, "/slow")
                       .. " >/dev/null 2>&1")
    assert.is_true(started:recv())
    p:close()
    -- A store, with spills, in the same text.
    local dir = S.tmpdir()
    local store = assert(tether.store.open("sqlite:" .. dir .. "/q.db",
                                           {name = "spec_obs_store"}))
    local pool, release = full_pool("spec_obs_spill", store)
    for i = 1, 3 do
      local _, err = pool:submit(bg, "op", "string:rep", "x", i):wait()
      assert.equal("spilled", err.code)
    end
    local labels = {server = "spec_http_obs"}
    eventually(function()
      return value(tether.metrics.text(),
                   "tether_http_request_duration_seconds_count",
                   labels) == 6
    end, "six requests finished")
    local text = tether.metrics.text()
    release()
    store:close()
    S.rmdir(dir)
    local out, ok = promtool(text)
    assert.equal("", out)
    assert.is_true(ok)
    assert.same({}, promtext.check(text))
    local function req(method, code)
      return value(text, "tether_http_requests_total",
                   {server = "spec_http_obs", method = method, code = code})
    end
    assert.equal(4, req("GET", "200"))  -- 3 hellos, the slow one
    assert.equal(1, req("POST", "500"))
    assert.equal(1, req("OTHER", "405"))
    assert.is_nil(req("BREW", "405"))
    assert.equal(1, value(text, "tether_http_client_gone_total", labels))
    assert.equal(6, value(text, "tether_http_request_duration_seconds_bucket",
                          {server = "spec_http_obs", le = "+Inf"}))
    -- The hang-up's second is in the sum.
    assert.is_true(value(text, "tether_http_request_duration_seconds_sum",
                         labels) >= 0.5)
    local st = {store = "spec_obs_store", pool = "spec_obs_spill"}
    assert.equal(1, value(text, "tether_store_up",
                          {store = "spec_obs_store"}))
    assert.equal(3, value(text, "tether_store_depth", st))
    assert.equal(0, value(text, "tether_store_leased", st))
    assert.equal(0, value(text, "tether_store_dead", st))
    assert.is_true(value(text, "tether_store_oldest_age_seconds", st) >= 0)
    assert.equal(3, value(text, "tether_store_records_written_total",
                          {store = "spec_obs_store"}))
    -- A closed store leaves the text.
    assert.is_nil(tether.metrics.text():find("spec_obs_store", 1, true))
  end)

  it("add up over servers that share a name, and leave out servers made "
     .. "with metrics = false", function()
    local function hello(_, _, res) res:send("hi") end
    local a = tether.http.server{name = "spec_shared_srv", handler = hello}
    local b = tether.http.server{name = "spec_shared_srv", handler = hello}
    local off = tether.http.server{name = "spec_srv_off", metrics = false,
                                   handler = hello}
    finally(function()
      a:close()
      b:close()
      off:close()
    end)
    curl(url(a, "/"))
    curl(url(b, "/x"))
    curl(url(off, "/"))
    local labels = {server = "spec_shared_srv", method = "GET", code = "200"}
    eventually(function()
      return value(tether.metrics.text(), "tether_http_requests_total",
                   labels) == 2
    end, "two requests of the shared name")
    -- (Its pool, named after it, has pool metrics of its own.)
    assert.is_nil(tether.metrics.text():find('server="spec_srv_off"', 1,
                                             true))
  end)
end)

describe("/metrics on tether.http.server", function()
  it("is served with metrics = true: GET and HEAD, the Prometheus "
     .. "content type, a text promtool passes", function()
    local srv = tether.http.server{name = "spec_metrics_on", metrics = true,
      handler = function(_, req, res) res:send("handler " .. req.path) end}
    finally(function() srv:close() end)
    local out, rc = curl("-i " .. url(srv, "/metrics"))
    assert.equal(0, rc)
    local head, body = out:match("^(.-)\r\n\r\n(.*)$")
    assert.matches("^HTTP/1%.1 200", head)
    assert.matches("\r\nContent%-Type: text/plain; version=0%.0%.4; "
                   .. "charset=utf%-8\r\n", head .. "\r\n")
    local pout, ok = promtool(body)
    assert.equal("", pout)
    assert.is_true(ok)
    assert.same({}, promtext.check(body))
    assert.matches("# TYPE tether_http_requests_total counter", body)
    -- HEAD: the headers only.
    out = curl("-I " .. url(srv, "/metrics"))
    assert.matches("^HTTP/1%.1 200", out)
    assert.matches("text/plain; version=0%.0%.4", out)
    -- Other methods: 405 with Allow.
    out = curl("-i -X POST " .. url(srv, "/metrics"))
    assert.matches("^HTTP/1%.1 405", out)
    assert.matches("\r\nAllow: GET, HEAD\r\n", out)
    -- Everything else still goes to the handler.
    assert.equal("handler /other", (curl(url(srv, "/other"))))
  end)

  it("is absent without metrics = true, and a route of one's own wins",
     function()
    local plain = tether.http.server{name = "spec_metrics_off",
      handler = function(_, req, res) res:send("handler " .. req.path) end}
    local routed = tether.http.server{name = "spec_metrics_routed",
                                      routes = {["GET /x"] = function() end}}
    local own = tether.http.server{name = "spec_metrics_own", metrics = true,
      routes = {["GET /metrics"] = function(_, _, res) res:send("mine") end}}
    finally(function()
      plain:close()
      routed:close()
      own:close()
    end)
    assert.equal("handler /metrics", (curl(url(plain, "/metrics"))))
    assert.equal("404", (curl("-o /dev/null -w '%{http_code}' "
                              .. url(routed, "/metrics"))))
    assert.equal("mine", (curl(url(own, "/metrics"))))
    assert.has_error(function()
      tether.http.server{metrics = 1, handler = function() end}
    end, "bad argument #1 to 'server' (field 'metrics' must be a boolean, "
         .. "got number)")
  end)
end)

describe("store metrics", function()
  it("label a Redis store by its URL without the password, and count "
     .. "claims and acknowledgements", function()
    local R = S.redis()
    finally(function() R.stop() end)
    assert.matches("OK", (R.cli("CONFIG SET requirepass s3cret-pw")))
    local u = ("redis://:s3cret-pw@127.0.0.1:%d/0?prefix=obs"):format(R.port)
    local store = assert(tether.store.open(u))
    local label = store:url()
    assert.is_nil(label:find("s3cret", 1, true))
    local pool, release = full_pool("spec_obs_redis", store)
    -- math.type(ctx, i) returns nil: an op that ends well.
    for i = 1, 2 do
      local _, err = pool:submit(bg, "op", "math:type", i):wait()
      assert.equal("spilled", err.code)
    end
    release()
    local text = tether.metrics.text()
    assert.is_nil(text:find("s3cret", 1, true))
    assert.same({}, promtext.check(text))
    local st = {store = label, pool = "spec_obs_redis"}
    assert.equal(2, value(text, "tether_store_depth", st))
    assert.equal(2, value(text, "tether_store_records_written_total",
                          {store = label}))
    -- A drainer claims and acknowledges both; the pool's series stays,
    -- at 0.
    local drainer = tether.pool{name = "spec_obs_redis", workers = 1,
                                quiet = true}
    assert(drainer:drain_store(store, bg, {allow = {"math"}}))
    assert(drainer:drain())
    text = tether.metrics.text()
    assert.equal(0, value(text, "tether_store_depth", st))
    assert.equal(2, value(text, "tether_store_records_claimed_total",
                          {store = label}))
    assert.equal(2, value(text, "tether_store_records_acked_total",
                          {store = label}))
    assert.equal(0, value(text, "tether_store_records_buried_total",
                          {store = label}))
    store:close()
    assert.is_nil(tether.metrics.text():find(label, 1, true))
  end)

  it("leave a store out with metrics = false, and report one that does "
     .. "not answer as down", function()
    local dir = S.tmpdir()
    finally(function() S.rmdir(dir) end)
    local quiet = assert(tether.store.open("sqlite:" .. dir .. "/a.db",
                                           {metrics = false}))
    assert.is_nil(tether.metrics.text():find(dir, 1, true))
    quiet:close()
    local R = S.redis()
    local store = assert(tether.store.open(R.url .. "?prefix=down",
                                           {name = "spec_obs_down",
                                            timeout = 1}))
    local labels = {store = "spec_obs_down"}
    assert.equal(1, value(tether.metrics.text(), "tether_store_up", labels))
    R.stop()
    local text = tether.metrics.text()
    assert.equal(0, value(text, "tether_store_up", labels))
    assert.is_nil(value(text, "tether_store_depth",
                        {store = "spec_obs_down", pool = "x"}))
    assert.same({}, promtext.check(text))
    store:close()
  end)
end)
