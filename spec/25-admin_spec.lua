-- The admin page (scenario 25; DESIGN section 12, docs/admin.md): its
-- JSON after a known workload (exact counts, the schema, paging, strings
-- that are not text), its actions, and its security: tokens, Host,
-- Origin, loopback, the Content-Security-Policy, the audit lines; its
-- own threads; mounting; `tether run --admin`.  Requests go through curl,
-- as an operator's would.  The page in a real browser is
-- 25-admin_browser_spec.lua.
local tether = require "tether"
local A = require "spec.support.admin"
local child = require "spec.support.child"
local eventually = require "spec.support.eventually"
local check_invariant = require("spec.support.accounting").check
local scale = require "spec.support.scale"

local json = A.json
local bg = tether.background()
local TOKEN = "t0ken-" .. ("%08x"):format(math.random(0, 0x7fffffff))

-- What each spec made, released after it.
local pools, servers, gates

local function pool(opts)
  opts.quiet = true
  local p = tether.pool(opts)
  pools[#pools + 1] = p
  return p
end

local function serve(opts)
  local srv = tether.admin.serve(opts)
  servers[#servers + 1] = srv
  return srv
end

local function gate(n)
  local g = tether.chan(n or 100)
  gates[#gates + 1] = g
  return g
end

before_each(function()
  pools, servers, gates = {}, {}, {}
end)

after_each(function()
  for _, g in ipairs(gates) do pcall(g.close, g) end
  for _, s in ipairs(servers) do s:close() end
  for _, p in ipairs(pools) do
    assert(p:drain(tether.with_timeout(bg, 10)))
  end
  pools, servers, gates = nil, nil, nil
  collectgarbage()
  collectgarbage()
end)

local function state(srv, query, headers)
  local r, v = A.get_json(A.base(srv) .. "/api/state" .. (query or ""),
                          headers)
  assert.equal(200, r.status, r.body)
  return v, r
end

local function post(srv, path, headers)
  return A.request("POST", A.base(srv) .. path, headers)
end

local function bearer(t)
  return { Authorization = "Bearer " .. (t or TOKEN) }
end

-- A pool with a known history: 3 ops completed, 2 dead letters, 2 ops
-- running (blocked on 'g'), 1 queued behind them.
local function known_pool(g)
  local p = pool { name = "jobs", workers = 2, queue = 8 }
  for _ = 1, 3 do assert(p:submit(bg, "ok-op", A.ok)) end
  for i = 1, 2 do assert(p:submit(bg, "doomed", A.fail, "boom " .. i)) end
  eventually(function()
    local s = p:stats()
    return s.completed == 3 and s.dead == 2
  end, "3 completed and 2 dead")
  for _ = 1, 3 do assert(p:submit(bg, "blocked", A.blocked, g)) end
  eventually(function() return p:stats().inflight == 2 end, "2 running")
  return p
end

describe("tether.admin: /api/state", function()
  it("counts a known workload exactly, field by field", function()
    local g = gate()
    local p = known_pool(g)
    local srv = serve { token = TOKEN, pools = { p } }
    local st = state(srv)
    assert.equal(1, st.version)
    assert.is_number(st.now)
    assert.is_true(math.abs(st.now - os.time()) < 5)
    assert.is_number(st.pid)
    assert.equal("admin", st.name)
    assert.is_true(st.actions)
    assert.is_false(st.authorized)
    assert.is_false(st.reads_need_token)
    assert.equal(1, #st.pools)
    local j = st.pools[1]
    assert.equal(p:id(), j.id)
    assert.equal("jobs", j.name)
    assert.equal("open", j.state)
    assert.is_false(j.idle)
    assert.same({ total = 2, busy = 2, idle = 0 }, j.workers)
    assert.equal(8, j.queue_capacity)
    assert.equal(0, j.waiting)
    assert.same({ { name = "default", workers = 2, busy = 2, idle = 0,
                    queued = 1, lend = false } }, j.classes)
    assert.equal(json.null, j.timeout)
    assert.equal(100, j.dead_capacity)
    assert.equal(100, j.failures_capacity)
    local s = j.stats
    assert.same({ submitted = 8, completed = 3, failed = 0, retried = 0,
                  stopped = 0, dead = 2, rejected = 0, queued = 1,
                  inflight = 2, spilled = 0, abandoned = 0, dead_held = 2,
                  dead_dropped = 0 }, s)
    check_invariant(s, "the page's stats")
    -- In flight: the two blocked ops, with their ages.
    assert.equal(2, j.inflight.total)
    assert.equal(0, j.inflight.offset)
    assert.equal(100, j.inflight.limit)
    assert.equal(2, #j.inflight.items)
    local ids = {}
    for _, o in ipairs(j.inflight.items) do
      assert.equal("blocked", o.name)
      assert.equal(json.null, o.tenant)
      assert.equal("default", o.class)
      assert.equal(1, o.attempt)
      assert.is_true(o.age >= 0 and o.age < 60)
      assert.is_true(math.abs(o.started_at + o.age - st.now) < 0.5)
      ids[#ids + 1] = o.id
    end
    table.sort(ids)
    assert.same({ 6, 7 }, ids)
    -- Dead letters and failures, newest first.  The two doomed ops ran
    -- side by side: the pool's own lists (oldest first) say which died
    -- first.
    local function newest_first(recs)
      local out = {}
      for _, d in ipairs(recs) do table.insert(out, 1, d.id) end
      return out
    end
    for _, pair in ipairs { { j.dead, p:dead_letters() },
                            { j.failures, p:failures() } } do
      local list = pair[1]
      assert.equal(2, list.total)
      assert.equal(0, list.offset)
      assert.equal(2, #list.items)
      assert.same(newest_first(pair[2]), { list.items[1].id,
                                           list.items[2].id })
      for _, f in ipairs(list.items) do
        assert.equal("boom " .. (f.id - 3), f.error)
        assert.equal("doomed", f.name)
        assert.equal(json.null, f.tenant)
        assert.equal("failed", f.code)
        assert.equal(f.error, f.cause)
        assert.is_string(f.traceback)
        assert.equal(1, f.attempt)
        assert.is_true(math.abs(f.at - st.now) < 60)
      end
    end
    assert.equal(20, j.dead.limit)
    assert.equal(20, j.failures.limit)
    assert.equal(json.null, j.tenants)
    assert.equal(json.null, j.store)
    -- A drained pool says so.
    g:close()
    assert(p:drain())
    j = state(srv).pools[1]
    assert.equal("drained", j.state)
    assert.is_true(j.idle)
    assert.same({ total = 2, busy = 0, idle = 0 }, j.workers)
    assert.equal(6, j.stats.completed)
  end)

  it("shows classes, tenants' quotas in use, retries waiting and the "
     .. "store's depth", function()
    local g = gate()
    local p = pool { name = "tiers", queue = 4, tenant_key = "tenant",
                     quotas = { default = 5, acme = 2 },
                     priorities = { { name = "high", workers = 1 },
                                    { name = "low", workers = 1 } },
                     retry = { attempts = 2, backoff = 30 } }
    local acme = tether.with_value(bg, "tenant", "acme")
    local globex = tether.with_value(bg, "tenant", "globex")
    assert(p:submit(acme, { name = "a", priority = "high" }, A.blocked, g))
    assert(p:submit(globex, { name = "b", priority = "low" }, A.blocked, g))
    assert(p:submit(acme, { name = "c", priority = "low" }, A.blocked, g))
    assert(p:submit(bg, { name = "d", priority = "low" }, A.blocked, g))
    eventually(function() return p:stats().inflight == 2 end, "2 running")
    -- An op that fails once waits 30 s for its retry: queued, in no
    -- class's queue.
    local qctx, qstop = tether.with_cancel(bg)
    local q = pool { name = "retrying", workers = 1, shutdown = qctx,
                     retry = { attempts = 2, backoff = 30 } }
    assert(q:submit(bg, "flaky", A.fail, "not yet"))
    eventually(function() return q:stats().retried == 1 end, "a retry")
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. dir))
    local store = assert(tether.store.open("sqlite:" .. dir .. "/db"))
    local o = pool { name = "spiller", workers = 1, queue = 1,
                     overflow = store }
    local srv = serve { token = TOKEN, pools = { p, q, o } }
    local st = state(srv)
    local j = A.pool_of(st, p:id())
    assert.same({ total = 2, busy = 2, idle = 0 }, j.workers)
    assert.same({ name = "high", workers = 1, busy = 1, idle = 0, queued = 0,
                  lend = false }, j.classes[1])
    assert.same({ name = "low", workers = 1, busy = 1, idle = 0, queued = 2,
                  lend = false }, j.classes[2])
    -- Ops without a tenant count under "default"; the busiest first.
    assert.same({ total = 3, items = {
      { tenant = "acme", active = 2, limit = 2 },
      { tenant = "default", active = 1, limit = 5 },
      { tenant = "globex", active = 1, limit = 5 },
    } }, j.tenants)
    local running = {}
    for _, it in ipairs(j.inflight.items) do
      running[it.name] = it.tenant
    end
    assert.same({ a = "acme", b = "globex" }, running)
    local r = A.pool_of(st, q:id())
    assert.equal(1, r.waiting)
    assert.equal(1, r.stats.queued)
    assert.equal(1, r.stats.retried)
    assert.equal(0, r.classes[1].queued)
    local sp = A.pool_of(st, o:id())
    assert.equal("sqlite:" .. dir .. "/db", sp.store.url)
    assert.equal(0, sp.store.depth)
    assert.equal(json.null, sp.store.error)
    qstop()     -- ends the retry's wait: the op fails for good
    store:close()
    os.execute("rm -rf " .. dir)
  end)

  it("pages dead letters, failures and in-flight ops, newest first",
     function()
    local n = scale.n(2000, 60)
    local p = pool { name = "many", workers = 4, dead_letters = n,
                     failures = 50 }
    for i = 1, n do
      assert(p:submit(bg, { name = "d" .. i, wait = 10 }, A.fail, "e" .. i))
    end
    eventually(function() return p:stats().dead == n end, "all dead", 30)
    local srv = serve { pools = { p } }
    -- Ops die in the order their workers finish them: the pool's own
    -- lists (oldest first) say which order that was.
    local newest = {}
    for _, f in ipairs(p:dead_letters()) do table.insert(newest, 1, f.id) end
    local function slice(from, count)
      return { table.unpack(newest, from + 1, math.min(#newest,
                                                        from + count)) }
    end
    local function dead_ids(query)
      local st = state(srv, query)
      local d = st.pools[1].dead
      local ids = {}
      for k, f in ipairs(d.items) do ids[k] = f.id end
      return ids, d
    end
    -- The newest is op n; offset 10 starts ten older.
    local ids, d = dead_ids("?offset=10&limit=5")
    assert.equal(n, d.total)
    assert.equal(10, d.offset)
    assert.equal(5, d.limit)
    assert.same(slice(10, 5), ids)
    -- A page far from the newest end (walked from the oldest end).
    ids = dead_ids(("?offset=%d&limit=4"):format(n - 3))
    assert.same(slice(n - 3, 4), ids)
    assert.equal(3, #ids)
    ids, d = dead_ids(("?offset=%d&limit=10"):format(n))
    assert.same({}, ids)
    assert.equal(n, d.total)
    ids = dead_ids("?limit=0")
    assert.same({}, ids)
    -- The failures ring keeps 50, newest first.
    local st = state(srv, "?failures_offset=48&failures_limit=10")
    local f = st.pools[1].failures
    local ring = p:failures()
    assert.equal(50, f.total)
    assert.equal(2, #f.items)
    assert.same({ ring[2].id, ring[1].id }, { f.items[1].id, f.items[2].id })
    -- In flight, paged too.
    local g = gate()
    for _ = 1, 4 do assert(p:submit(bg, "blk", A.blocked, g)) end
    eventually(function() return p:stats().inflight == 4 end, "4 running")
    st = state(srv, "?inflight_offset=1&inflight_limit=2")
    local inf = st.pools[1].inflight
    assert.equal(4, inf.total)
    assert.equal(2, #inf.items)
    st = state(srv, "?inflight_offset=3&inflight_limit=5")
    assert.equal(1, #st.pools[1].inflight.items)
  end)

  it("refuses a bad query with 400 and picks one pool with ?pool=ID",
     function()
    local p, q = pool { name = "one", workers = 1 },
                 pool { name = "two", workers = 1 }
    local srv = serve { pools = { q, p } }
    local st = state(srv)
    assert.same({ p:id(), q:id() }, { st.pools[1].id, st.pools[2].id })
    st = state(srv, "?pool=" .. q:id())
    assert.equal(1, #st.pools)
    assert.equal("two", st.pools[1].name)
    st = state(srv, "?pool=999999")
    assert.same({}, st.pools)
    for _, bad in ipairs { "?limit=1001", "?offset=-1", "?limit=x",
                           "?inflight_limit=5000", "?pool=1.5",
                           "?failures_limit" } do
      local r, v = A.get_json(A.base(srv) .. "/api/state" .. bad)
      assert.equal(400, r.status, bad)
      assert.equal("bad_query", v.error, bad)
    end
  end)

  it("stays valid JSON whatever the strings hold", function()
    local nasty = 'q"uote\\ back\nnew\ttab \1\31 bad\255\254 end'
    local p = pool { name = 'pool "x"\n\127\200', workers = 1,
                     tenant_key = "tenant" }
    local ctx = tether.with_value(bg, "tenant", "ten\0ant\255")
    assert(p:submit(ctx, "op\226\130", A.fail, nasty))
    eventually(function() return p:stats().dead == 1 end, "a dead letter")
    local srv = serve { pools = { p } }
    local st, r = state(srv)
    assert.equal("application/json; charset=utf-8",
                 r.headers["content-type"])
    local j = st.pools[1]
    assert.equal('pool "x"\n\127\239\191\189', j.name)
    local d = j.dead.items[1]
    assert.equal('q"uote\\ back\nnew\ttab \1\31 bad\239\191\189\239\191\189'
                 .. ' end', d.error)
    assert.equal("ten\0ant\239\191\189", d.tenant)
    assert.equal("op\239\191\189\239\191\189", d.name)
    -- Raw control bytes never reach the text.
    assert.is_nil(r.body:find("[%z\1-\31]", 1) and
                  r.body:sub(1, -2):find("[%z\1-\31]"))
  end)

  it("lists every pool the program made when given no list, also pools "
     .. "made later", function()
    local p = pool { name = "early", workers = 1 }
    local srv = serve { token = TOKEN }
    local q = pool { name = "late", workers = 1 }
    local st = state(srv)
    assert.is_table(A.pool_of(st, p:id()))
    assert.is_table(A.pool_of(st, q:id()))
    for k = 2, #st.pools do
      assert.is_true(st.pools[k - 1].id < st.pools[k].id)
    end
  end)

  it("serves /metrics, and 404 and 405 for what it does not serve",
     function()
    local p = pool { name = "metered", workers = 1 }
    assert(p:submit(bg, "x", A.ok):wait())
    local srv = serve { pools = { p } }
    local r = A.request("GET", A.base(srv) .. "/metrics")
    assert.equal(200, r.status)
    assert.matches("^text/plain; version=0.0.4", r.headers["content-type"])
    assert.truthy(r.body:find('tether_pool_ops_total{pool="metered"', 1,
                              true) or r.body:find('pool="metered"', 1, true))
    assert.equal(404, A.request("GET", A.base(srv) .. "/nope").status)
    assert.equal(404, post(srv, "/api/pools/1/dead/x/retry").status)
    assert.equal(404, post(srv, "/api/pools/1/sideways").status)
    r = A.request("GET", A.base(srv) .. "/api/pools/1/drain")
    assert.equal(405, r.status)
    assert.equal("POST", r.headers.allow)
    r = post(srv, "/api/state")
    assert.equal(405, r.status)
    assert.equal("GET, HEAD", r.headers.allow)
    r = A.request("HEAD", A.base(srv) .. "/api/state")
    assert.equal(200, r.status)
  end)
end)

describe("tether.admin: actions", function()
  it("retries, drops and drains with the token, each with an audit line",
     function()
    local g = gate()
    local p = known_pool(g)
    local srv = serve { token = TOKEN, pools = { p } }
    local logs = A.capture_log()
    local r = post(srv, ("/api/pools/%d/dead/4/retry"):format(p:id()),
                   bearer())
    assert.equal(200, r.status, r.body)
    local v = json.decode(r.body)
    assert.same({ ok = true, action = "retry", pool = p:id(), dead = 4,
                  op = 9 }, v)
    -- Moved back to the queue, behind the two running ops.
    local s = p:stats()
    assert.equal(1, s.dead_held)
    assert.equal(2, s.queued)
    assert.equal(9, s.submitted)
    check_invariant(s, "after a retry")
    r = post(srv, ("/api/pools/%d/dead/4/retry"):format(p:id()), bearer())
    assert.equal(404, r.status)
    assert.equal("no_dead_letter", json.decode(r.body).error)
    r = post(srv, ("/api/pools/%d/dead/5/drop"):format(p:id()), bearer())
    assert.equal(200, r.status)
    assert.equal(0, p:stats().dead_held)
    assert.equal(404, post(srv, ("/api/pools/%d/dead/5/drop"):format(
      p:id()), bearer()).status)
    assert.equal(404, post(srv, "/api/pools/999999/drain", bearer()).status)
    r = post(srv, ("/api/pools/%d/drain"):format(p:id()), bearer())
    assert.equal(200, r.status)
    local _, err = p:submit(bg, "late", A.ok)
    assert.equal("closed", err.code)
    assert.equal("draining", state(srv).pools[1].state)
    local lines = logs()
    local seen, other = {}, nil
    for _, l in ipairs(lines) do
      if l.pool_id == 999999 then
        other = l
      elseif l.msg == "admin action" or l.msg == "admin action refused" then
        seen[#seen + 1] = ("%s %s %s %s %s"):format(l.msg, l.action,
          tostring(l.dead_id), l.status, l.result)
        assert.equal(p:id(), l.pool_id)
        assert.is_string(l.remote)
        assert.is_string(l.request_id)
        assert.equal("jobs", l.pool)
      end
    end
    assert.same({
      "admin action retry 4 200 ok",
      "admin action refused retry 4 404 no_dead_letter",
      "admin action drop 5 200 ok",
      "admin action refused drop 5 404 no_dead_letter",
      "admin action drain nil 200 ok",
    }, seen)
    assert.equal("admin action refused", other.msg)
    assert.equal("no_pool", other.result)
    assert.equal(404, other.status)
    for _, l in ipairs(lines) do
      if l.msg == "admin action" and l.action == "retry" then
        assert.equal(9, l.op_id)
      end
    end
  end)

  it("answers 409 when the pool refuses the retry, and the dead letter "
     .. "stays", function()
    local g = gate()
    local p = pool { name = "full", workers = 1, queue = 1 }
    assert(p:submit(bg, "doomed", A.fail, "x"))
    eventually(function() return p:stats().dead == 1 end, "dead")
    assert(p:submit(bg, "blk", A.blocked, g))
    eventually(function() return p:stats().inflight == 1 end, "running")
    assert(p:submit(bg, "filler", A.blocked, g))
    local srv = serve { token = TOKEN, pools = { p } }
    local r = post(srv, ("/api/pools/%d/dead/1/retry"):format(p:id()),
                   bearer())
    assert.equal(409, r.status)
    assert.equal("queue_full", json.decode(r.body).error)
    assert.equal(1, p:stats().dead_held)
  end)
end)

describe("tether.admin: security", function()
  local function dead_pool()
    local p = pool { name = "sec", workers = 1 }
    for i = 1, 3 do assert(p:submit(bg, "doomed", A.fail, "x" .. i)) end
    eventually(function() return p:stats().dead == 3 end, "3 dead")
    return p
  end

  it("needs 'Authorization: Bearer TOKEN' for actions (401), compared "
     .. "whole", function()
    local p = dead_pool()
    local srv = serve { token = TOKEN, pools = { p } }
    local path = ("/api/pools/%d/dead/1/retry"):format(p:id())
    local logs = A.capture_log()
    local r = post(srv, path)
    assert.equal(401, r.status)
    assert.equal('Bearer realm="tether admin"',
                 r.headers["www-authenticate"])
    assert.equal("unauthorized", json.decode(r.body).error)
    for _, wrong in ipairs { TOKEN:sub(1, -2), TOKEN .. "x",
                             TOKEN:sub(1, -2) .. "!", "", TOKEN:upper() } do
      assert.equal(401, post(srv, path, bearer(wrong)).status, wrong)
    end
    -- Basic credentials (which a browser sends by itself) never act.
    local basic = { Authorization = "Basic " .. (function()
      local p2 = io.popen("printf %s " .. A.shq("op:" .. TOKEN)
                          .. " | base64 -w0")
      local b = p2:read("a")
      p2:close()
      return b
    end)() }
    assert.equal(401, post(srv, path, basic).status)
    assert.equal(3, p:stats().dead_held)
    assert.equal(200, post(srv, path, bearer()).status)
    local refused = 0
    for _, l in ipairs(logs()) do
      if l.msg == "admin action refused" then
        refused = refused + 1
        assert.equal(401, l.status)
        assert.equal("unauthorized", l.result)
        assert.equal("sec", l.pool)
      end
    end
    assert.equal(7, refused)
  end)

  it("refuses actions from another origin, token or not (403)", function()
    local p = dead_pool()
    local srv = serve { token = TOKEN, pools = { p } }
    local path = ("/api/pools/%d/dead/1/retry"):format(p:id())
    local function with(h)
      local t = bearer()
      for k, v in pairs(h) do t[k] = v end
      return t
    end
    for _, h in ipairs {
      { Origin = "http://evil.example" },
      { Origin = "null" },
      { Origin = "http://localhost:1" },
      { Origin = "http://" .. srv:addr() .. ".evil.example" },
      { ["Sec-Fetch-Site"] = "cross-site" },
      { ["Sec-Fetch-Site"] = "same-site" },
    } do
      local r = post(srv, path, with(h))
      assert.equal(403, r.status, next(h))
      assert.equal("foreign_origin", json.decode(r.body).error)
    end
    assert.equal(3, p:stats().dead_held)
    -- The page's own origin is fine.
    local r = post(srv, path, with { Origin = "http://" .. srv:addr(),
                                     ["Sec-Fetch-Site"] = "same-origin" })
    assert.equal(200, r.status)
  end)

  it("is read-only without a token: actions answer 403", function()
    local p = dead_pool()
    -- The environment's TETHER_ADMIN_TOKEN may not be set here.
    assert.is_nil(os.getenv("TETHER_ADMIN_TOKEN"))
    local srv = serve { pools = { p } }
    local st = state(srv)
    assert.is_false(st.actions)
    local r = post(srv, ("/api/pools/%d/dead/1/retry"):format(p:id()),
                   bearer())
    assert.equal(403, r.status)
    assert.equal("read_only", json.decode(r.body).error)
    assert.equal(3, p:stats().dead_held)
    assert.equal(200, A.request("GET", A.base(srv) .. "/").status)
  end)

  it("checks the Host header (DNS rebinding)", function()
    local srv = serve { token = TOKEN, pools = {},
                        hosts = { "admin.internal", "ops.example:8443" } }
    local port = srv:addr():match(":(%d+)$")
    local function host(h)
      return A.request("GET", A.base(srv) .. "/api/state",
                       { Host = h }).status
    end
    assert.equal(200, host("127.0.0.1:" .. port))
    assert.equal(200, host("localhost:" .. port))
    assert.equal(200, host("LOCALHOST:" .. port))
    assert.equal(200, host("admin.internal"))
    assert.equal(200, host("admin.internal:1234"))
    assert.equal(200, host("ops.example:8443"))
    assert.equal(421, host("ops.example:8444"))
    assert.equal(421, host("evil.example"))
    assert.equal(421, host("evil.example:" .. port))
    assert.equal(421, host("localhost:" .. (tonumber(port) + 1)))
    assert.equal(421, host("127.0.0.1"))
    assert.equal(421, host("127.0.0.1:" .. port .. ".evil.example"))
    local r = A.request("GET", A.base(srv) .. "/", { Host = "evil.example" })
    assert.equal(421, r.status)
    assert.is_nil(r.body:find("<script>", 1, true))
  end)

  it("refuses to bind off loopback without a token; off loopback every "
     .. "route needs it", function()
    -- Every address, on purpose: without a token it is refused before
    -- anything is bound.
    local ok, err = pcall(tether.admin.serve, { addr = "0.0.0.0:0" })
    assert.is_false(ok)
    assert.matches("not loopback%) needs a token", err)
    -- Bound to every address (with a token made for this spec alone):
    -- each route needs the token, as Bearer or as Basic's password.
    local tok = TOKEN .. "-" .. tostring(os.time())
    local srv = serve { addr = "0.0.0.0:0", token = tok, pools = {} }
    local port = srv:addr():match(":(%d+)$")
    local base = "http://127.0.0.1:" .. port
    local st = A.request("GET", base .. "/api/state")
    assert.equal(401, st.status)
    assert.equal('Bearer realm="tether admin"', st.headers["www-authenticate"])
    local page = A.request("GET", base .. "/")
    assert.equal(401, page.status)
    assert.matches('^Basic realm="tether admin"',
                   page.headers["www-authenticate"])
    assert.equal(401, A.request("GET", base .. "/metrics").status)
    assert.equal(200, A.request("GET", base .. "/api/state",
                                bearer(tok)).status)
    local p = io.popen("printf %s " .. A.shq("anyone:" .. tok)
                       .. " | base64 -w0")
    local b64 = p:read("a")
    p:close()
    local r = A.request("GET", base .. "/", { Authorization = "Basic " .. b64 })
    assert.equal(200, r.status)
    local _, v = A.get_json(base .. "/api/state",
                            { Authorization = "Basic " .. b64 })
    assert.is_true(v.reads_need_token)
    assert.is_true(v.authorized)
  end)

  it("sends its Content-Security-Policy, with the hashes of the page's "
     .. "inline script and style, and nosniff on every response",
     function()
    local srv = serve { token = TOKEN, pools = {} }
    local page = A.request("GET", A.base(srv) .. "/")
    assert.equal(200, page.status)
    assert.equal("text/html; charset=utf-8", page.headers["content-type"])
    local body = page.body
    -- One inline script, one inline style, nothing from outside.
    local _, nscript = body:gsub("<script", "")
    local _, nstyle = body:gsub("<style", "")
    assert.equal(1, nscript)
    assert.equal(1, nstyle)
    -- (The one URL is the SVG namespace, a name, never fetched.)
    assert.is_nil(body:gsub("http://www.w3.org/2000/svg", ""):find(
      "https?://"))
    local script = body:match("<script>(.-)</script>")
    local style = body:match("<style>(.-)</style>")
    -- The script sets text, never markup.
    for _, bad in ipairs { "innerHTML", "outerHTML", "insertAdjacentHTML",
                           "document.write", "eval(", "new Function",
                           "setAttribute('style'", "on%a+=" } do
      assert.is_nil(script:find(bad, 1, not bad:find("%%")), bad)
    end
    local want = ("default-src 'none'; script-src 'sha256-%s'; "
      .. "style-src 'sha256-%s'; connect-src 'self'; img-src 'self' data:; "
      .. "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
      :format(A.sha256_b64(script), A.sha256_b64(style))
    for _, path in ipairs { "/", "/api/state", "/metrics", "/nope",
                            "/api/pools/1/drain" } do
      local r = A.request(path == "/api/pools/1/drain" and "POST" or "GET",
                          A.base(srv) .. path)
      assert.equal(want, r.headers["content-security-policy"], path)
      assert.equal("nosniff", r.headers["x-content-type-options"], path)
      assert.equal("DENY", r.headers["x-frame-options"], path)
      assert.equal("no-store", r.headers["cache-control"], path)
    end
  end)

  it("keeps the page's C source in step with admin.html", function()
    local p = io.popen("lua5.4 tools/embed.lua csrc/core/admin.html -")
    local made = p:read("a")
    p:close()
    local f = assert(io.open("csrc/core/admin_page.c", "rb"))
    local have = f:read("a")
    f:close()
    assert.is_true(made == have, "run make: admin_page.c is stale")
  end)
end)

describe("tether.admin: threads, mounting, options, the runner", function()
  it("answers from its own threads while the application's pool is "
     .. "saturated", function()
    local g = gate()
    local app = pool { name = "app", workers = 1, queue = 1 }
    local web = tether.http.server {
      pool = app,
      routes = { ["/"] = function(_, _, res) res:send("hi") end },
    }
    assert(app:submit(bg, "hog", A.blocked, g))
    eventually(function() return app:stats().inflight == 1 end, "running")
    assert(app:submit(bg, "hog2", A.blocked, g))
    -- The application answers 503: its pool is full.
    local r = A.request("GET", "http://" .. web:addr() .. "/")
    assert.equal(503, r.status)
    local srv = serve { pools = { app } }
    for _ = 1, 5 do
      local st = state(srv)
      assert.equal(1, st.pools[1].stats.inflight)
      assert.equal(1, st.pools[1].stats.queued)
    end
    web:close()
  end)

  it("mounts under a prefix on an application's server", function()
    local p = pool { name = "mounted", workers = 1 }
    for i = 1, 2 do assert(p:submit(bg, "doomed", A.fail, "m" .. i)) end
    eventually(function() return p:stats().dead == 2 end, "dead")
    local admin = tether.admin.handler { prefix = "/admin", token = TOKEN,
                                         pools = { p } }
    assert.is_false(admin:readonly())
    local web = tether.http.server {
      handler = function(ctx, req, res)
        if admin:handle(ctx, req, res) then return end
        res:send("app: " .. req.path)
      end,
    }
    local base = "http://" .. web:addr()
    local r = A.request("GET", base .. "/admin")
    assert.equal(308, r.status)
    assert.equal("/admin/", r.headers.location)
    r = A.request("GET", base .. "/admin/")
    assert.equal(200, r.status)
    assert.matches("<title>tether admin</title>", r.body, 1, true)
    local _, st = A.get_json(base .. "/admin/api/state")
    assert.equal("mounted", st.pools[1].name)
    assert.equal("app: /administrator",
                 A.request("GET", base .. "/administrator").body)
    assert.equal("app: /", A.request("GET", base .. "/").body)
    r = A.request("POST", base .. ("/admin/api/pools/%d/dead/1/drop")
                  :format(p:id()), bearer())
    assert.equal(200, r.status)
    assert.equal(1, p:stats().dead_held)
    -- Host: any loopback name (the server's port is not the admin's to
    -- know), or one of 'hosts'.
    assert.equal(200, A.request("GET", base .. "/admin/api/state",
                                { Host = "localhost:1" }).status)
    assert.equal(421, A.request("GET", base .. "/admin/api/state",
                                { Host = "evil.example" }).status)
    web:close()
  end)

  it("reads its options strictly", function()
    local function err_of(f, opts)
      local ok, e = pcall(f, opts)
      assert.is_false(ok)
      return e
    end
    assert.matches("unknown option 'tokn'; did you mean 'token'%?",
                   err_of(tether.admin.serve, { tokn = "x" }))
    assert.matches("unknown option 'prefix'",
                   err_of(tether.admin.serve, { prefix = "/a" }))
    assert.matches("field 'token' must not be empty",
                   err_of(tether.admin.serve, { token = "" }))
    assert.matches("field 'pools' must be a list of tether.Pool %(item 1 "
                   .. "is string%)",
                   err_of(tether.admin.serve, { pools = { "jobs" } }))
    assert.matches("field 'workers' must be",
                   err_of(tether.admin.serve, { workers = 0 }))
    assert.matches("prefix '/a/' must be",
                   err_of(tether.admin.handler, { prefix = "/a/" }))
    assert.matches("host 'a b' is not a host name",
                   err_of(tether.admin.handler, { hosts = { "a b" } }))
    assert.matches("addr 'nowhere' must be HOST:PORT",
                   err_of(tether.admin.serve, { addr = "nowhere" }))
  end)

  it("serves every pool of a script under `tether run --admin`, its "
     .. "token from TETHER_ADMIN_TOKEN", function()
    local c = child.start([[
      local tether = require "tether"
      local p = tether.pool { name = "from-run", workers = 1, quiet = true }
      for i = 1, 2 do
        p:submit(tether.background(), "doomed", function() error("x", 0) end)
      end
      assert(p:wait_idle())
      print("ready")
      tether.sleep(60, (tether.run_context()))   -- until SIGTERM
    ]], { runner = { "--admin", "127.0.0.1:0" },
          env = { TETHER_ADMIN_TOKEN = TOKEN } })
    assert.is_true(c:expect("ready"))
    local url
    eventually(function()
      local f = io.open(c.errf)
      local text = f and f:read("a") or ""
      if f then f:close() end
      url = text:match("admin page at (http://[%d%.:]+)/")
      return url ~= nil
    end, "the runner's admin line")
    local _, st = A.get_json(url .. "/api/state")
    local p
    for _, q in ipairs(st.pools) do
      if q.name == "from-run" then p = q end
    end
    assert.is_table(p)
    assert.equal(2, p.dead.total)
    local r = A.request("POST", ("%s/api/pools/%d/dead/%d/drop"):format(url,
                        p.id, p.dead.items[1].id), bearer())
    assert.equal(200, r.status)
    _, st = A.get_json(url .. "/api/state?pool=" .. p.id)
    assert.equal(1, st.pools[1].dead.total)
    c:signal("TERM")
    local res = c:finish()
    assert.equal(143, res.status, child.describe(res))
  end)
end)
