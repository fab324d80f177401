-- Scenario 17: durable overflow.  When a pool's queue is full, named ops
-- go to a durable store; a drainer (in-process, or a separate lua5.4
-- process running tether.worker) runs them later; a process killed in
-- between loses nothing that was acknowledged.  Both backends, SQLite and
-- Redis Streams, run the same suite (`suite` below, run twice); the Redis
-- one runs against a redis-server the spec starts itself.
local tether = require "tether"
local S = require "spec.support.store"
local accounting = require "spec.support.accounting"
local child = require "spec.support.child"
local scale = require "spec.support.scale"

local bg = tether.background()

-- fill makes a pool whose only worker is held by a gate and whose queue
-- (1 slot) is taken, so that the next named submissions spill.
local function full_pool(store, opts)
  opts = opts or {}
  local gate = tether.chan(0)
  local pool = tether.pool { name = opts.name or "p", workers = 1,
    queue = 1, overflow = store, quiet = true, tenant_key = "tenant",
    spill_timeout = opts.spill_timeout, retry = opts.retry }
  local started = tether.chan(1)
  local blocker = assert(pool:submit(bg, "blocker", function(_, g, s)
    s:send(true)
    g:recv()
  end, gate, started))
  assert(started:recv(tether.with_timeout(bg, 10)))
  assert(pool:submit(bg, "filler", function() end))
  return pool, function()
    gate:close()
    blocker:wait()
  end
end

local function spill(pool, parent, fn, ...)
  local h, err = pool:submit(parent, "op", fn, ...)
  assert(h, err)
  local v, e = h:wait(tether.with_timeout(bg, 20))
  return v, e
end

-- The suite both backends run.  'B' makes stores: B.new() returns a
-- fresh {url = ..., ...} (its own file or key prefix); B.corrupt(env,
-- pool) writes a damaged record for 'pool'; B.block(env) makes the store
-- unable to commit and returns a function that undoes it.
local function suite(B)
  local dir
  lazy_setup(function() dir = S.setup_dir() end)
  lazy_teardown(function() S.rmdir(dir) end)
  before_each(function() os.remove(dir .. "/done.log") end)

  it("scenario 17: a full queue spills named ops; the handle resolves "
     .. "'spilled' with the store's id once committed", function()
    local env = B.new()
    local store = assert(tether.store.open(env.url))
    local pool, release = full_pool(store)
    local parent = tether.with_value(bg, "tenant", "acme")
    local ids = {}
    for i = 1, 20 do
      local v, err = spill(pool, parent, "storeops:record", "s" .. i)
      assert.is_nil(v)
      assert.equal("spilled", err.code)
      assert.is_string(err.id)
      assert.is_nil(ids[err.id], "ids are distinct")
      ids[err.id] = i
    end
    local s = pool:stats()
    assert.equal(20, s.spilled)
    accounting.check(s, accounting.describe(s))
    local st = assert(store:stats())
    assert.equal(20, st.depth)
    assert.equal(0, st.leased)
    assert.is_true(st.oldest_age >= 0)
    -- A closure cannot travel: queue_full, saying why.
    local h, err = pool:submit(bg, "c", function() end)
    assert.is_nil(h)
    assert.equal("queue_full", err.code)
    assert.matches("only named ops", err.message)
    -- Nor a named op whose arguments are not plain data.
    h, err = pool:submit(bg, "c", "storeops:record", { f = print })
    assert.is_nil(h)
    assert.equal("queue_full", err.code)
    assert.matches("holds a function", err.message)
    release()
    assert(pool:drain(tether.with_timeout(bg, 10)))
    s = pool:stats()
    assert.equal(2, s.rejected)
    accounting.check(s, accounting.describe(s))
    -- A drainer runs them with their tenant and their store id.
    local drainer = tether.pool { name = "d", workers = 2, queue = 4 }
    local ok, rep = drainer:drain_store(store, tether.with_timeout(bg, 30),
                                        { allow = { "storeops" } })
    assert.is_true(ok, tostring(rep))
    assert.equal(20, rep.claimed)
    assert.equal(20, rep.completed)
    local done = S.done(dir)
    assert.equal(20, #done)
    for _, d in ipairs(done) do
      assert.equal("acme", d.tenant)
      assert.equal(1, d.deliveries)
      assert.equal("s" .. ids[d.id], d.tag, "the op keeps its store id")
    end
    st = assert(store:stats())
    assert.equal(0, st.depth)
    assert.equal(0, st.dead)
    store:close()
  end)

  it("plain data travels whole: integers, floats, strings with zeros, "
     .. "nested tables, booleans", function()
    local env = B.new()
    local store = assert(tether.store.open(env.url))
    local pool, release = full_pool(store)
    local arg = { 1, 2.5, "a\0b", { deep = { deeper = { true, false } } },
                  [10] = math.mininteger, big = math.maxinteger,
                  ["k\0"] = -0.125 }
    local _, err = spill(pool, bg, "storeops:echo", arg, nil, "tail")
    assert.equal("spilled", err.code)
    release()
    local drainer = tether.pool { name = "d", workers = 1, queue = 1 }
    assert(drainer:drain_store(store, nil, { allow = { "storeops" } }))
    -- The drained op's results are not returned to anyone; read the
    -- record back through a dead letter instead: spill, fail, list.
    local p2, release2 = full_pool(store, { name = "q" })
    _, err = spill(p2, bg, "storeops:fail", arg, nil, "tail")
    assert.equal("spilled", err.code)
    release2()
    assert(drainer:drain_store(store, nil, { allow = { "storeops" },
                                             pool = "q" }))
    local dl = assert(store:dead_letters("q"))
    assert.equal(1, #dl)
    assert.matches("always fails", dl[1].reason)
    assert.equal("storeops:fail", dl[1].fn)
    assert.same(arg, dl[1].args[1])
    assert.is_nil(dl[1].args[2])
    assert.equal("tail", dl[1].args[3])
    assert.equal(math.type(arg[10]), math.type(dl[1].args[1][10]))
    assert.equal("float", math.type(dl[1].args[1][2]))
    store:close()
  end)

  it("a record over max_payload is refused at spill", function()
    local env = B.new()
    local store = assert(tether.store.open(env.url, { max_payload = 4096 }))
    local pool, release = full_pool(store)
    local h, err = pool:submit(bg, "big", "storeops:record",
                               string.rep("x", 5000))
    assert.is_nil(h)
    assert.equal("queue_full", err.code)
    assert.matches("max_payload", err.message)
    local _, e2 = spill(pool, bg, "storeops:record", string.rep("x", 100))
    assert.equal("spilled", e2.code)
    release()
    assert(pool:drain())
    local s = pool:stats()
    assert.equal(1, s.rejected)
    assert.equal(1, s.spilled)
    accounting.check(s, accounting.describe(s))
    assert.equal(1, store:stats().depth)
    store:close()
  end)

  it("only modules on the allow-list run; with no allow-list nothing "
     .. "runs; refused records become dead letters with the reason",
     function()
    local env = B.new()
    local store = assert(tether.store.open(env.url))
    local pool, release = full_pool(store)
    local marker = dir .. "/pwned"
    local _, err = spill(pool, bg, "os:execute", "touch " .. marker)
    assert.equal("spilled", err.code)
    _, err = spill(pool, bg, "storeops:record", "ok")
    assert.equal("spilled", err.code)
    release()
    local drainer = tether.pool { name = "d", workers = 1, queue = 2 }
    -- No allow-list: nothing runs.
    local ok, rep = drainer:drain_store(store)
    assert.is_true(ok)
    assert.equal(2, rep.refused)
    assert.is_nil(io.open(marker))
    local dl = assert(store:dead_letters())
    assert.equal(2, #dl)
    table.sort(dl, function(a, b) return a.fn < b.fn end)
    assert.equal("os:execute", dl[1].fn)
    assert.matches("module 'os' may not run", dl[1].reason)
    -- Retry both and drain with an allow-list: os still never runs.
    for _, d in ipairs(dl) do assert(store:retry_dead(d)) end
    ok, rep = drainer:drain_store(store, nil, { allow = { "storeops" } })
    assert.is_true(ok)
    assert.equal(1, rep.completed)
    assert.equal(1, rep.refused)
    assert.is_nil(io.open(marker))
    dl = assert(store:dead_letters())
    assert.equal(1, #dl)
    assert.matches("module 'os' is not on the drainer's allow%-list",
                   dl[1].reason)
    assert.is_true(store:drop_dead(dl[1]))
    assert.equal(0, #assert(store:dead_letters()))
    local nope = store:drop_dead(dl[1])
    assert.is_nil(nope)
    store:close()
  end)

  it("an op that fails every attempt becomes a dead letter of the store; "
     .. "retry_dead puts it back", function()
    local env = B.new()
    local store = assert(tether.store.open(env.url))
    local pool, release = full_pool(store, { retry = { attempts = 2,
                                                        backoff = 0.01 } })
    local _, err = spill(pool, bg, "storeops:fail", "f1")
    assert.equal("spilled", err.code)
    release()
    local drainer = tether.pool { name = "d", workers = 1, queue = 1 }
    local ok, rep = drainer:drain_store(store, nil, { allow = { "storeops" } })
    assert.is_true(ok)
    assert.equal(1, rep.failed)
    local ds = drainer:stats()
    assert.equal(1, ds.retried, "the retry policy travelled")
    assert.equal(0, ds.dead_held, "not a dead letter of the pool")
    accounting.check(ds, accounting.describe(ds))
    local st = assert(store:stats())
    assert.equal(0, st.depth)
    assert.equal(1, st.dead)
    local dl = assert(store:dead_letters())
    assert.matches("always fails: f1", dl[1].reason)
    assert.equal("p", dl[1].pool)
    assert(store:retry_dead(dl[1]))
    assert.equal(1, assert(store:stats()).depth)
    assert.equal(0, assert(store:stats()).dead)
    store:close()
  end)

  it("a corrupted record becomes a dead letter with the reason, never a "
     .. "crash", function()
    local env = B.new()
    local store = assert(tether.store.open(env.url))
    local pool, release = full_pool(store)
    local _, err = spill(pool, bg, "storeops:record", "good")
    assert.equal("spilled", err.code)
    release()
    B.corrupt(env, "p")
    local drainer = tether.pool { name = "d", workers = 1, queue = 1 }
    local ok, rep = drainer:drain_store(store, nil, { allow = { "storeops" } })
    assert.is_true(ok, tostring(rep))
    assert.equal(1, rep.completed)
    assert.equal(2, rep.refused)
    local reasons = {}
    for _, d in ipairs(assert(store:dead_letters())) do
      reasons[#reasons + 1] = d.reason
    end
    table.sort(reasons)
    assert.same({ "corrupted record: bad checksum (the record is damaged)",
                  "corrupted record: not a tether record (bad magic)" },
                reasons)
    store:close()
  end)

  it("a spill the store cannot commit within spill_timeout resolves "
     .. "store_unavailable", function()
    local env = B.new()
    local store = assert(tether.store.open(env.url))
    local pool, release = full_pool(store, { spill_timeout = 0.3 })
    local unblock = B.block(env)
    local ok, v, err = pcall(spill, pool, bg, "storeops:record", "late")
    unblock()
    assert(ok, v)
    assert.is_nil(v)
    assert.equal("store_unavailable", err.code)
    assert.matches("spill_timeout", err.message)
    release()
    assert(pool:drain())
    local s = pool:stats()
    assert.equal(1, s.failed)
    assert.equal(0, s.spilled)
    accounting.check(s, accounting.describe(s))
    -- The store did take it once it could: at least once, never lost.
    local drainer = tether.pool { name = "d", workers = 1, queue = 1 }
    assert(drainer:drain_store(store, nil, { allow = { "storeops" } }))
    store:close()
  end)

  it("drain_store returns nil, err when its context ends first; the op "
     .. "is still acknowledged when it ends", function()
    local env = B.new()
    local store = assert(tether.store.open(env.url))
    local pool, release = full_pool(store)
    local _, err = spill(pool, bg, "storeops:record", "slow", 0.5)
    assert.equal("spilled", err.code)
    release()
    local drainer = tether.pool { name = "d", workers = 1, queue = 1 }
    local ok, e = drainer:drain_store(store, tether.with_timeout(bg, 0.05),
                                      { allow = { "storeops" } })
    assert.is_nil(ok)
    assert.equal(tether.deadline_exceeded, e)
    assert(drainer:drain(tether.with_timeout(bg, 10)))
    assert.equal(1, #S.done(dir))
    -- Its acknowledgement was queued as it ended.
    local deadline = tether.now() + 10
    while assert(store:stats()).depth ~= 0 and tether.now() < deadline do
      tether.sleep(0.02)
    end
    assert.equal(0, assert(store:stats()).depth)
    store:close()
  end)

  it("long ops renew their lease: another drainer never takes them",
     function()
    local env = B.new()
    local a = assert(tether.store.open(env.url, { lease = 0.3,
                                                  consumer = "a" }))
    local b = assert(tether.store.open(env.url, { lease = 0.3,
                                                  consumer = "b" }))
    local pool, release = full_pool(a)
    local _, err = spill(pool, bg, "storeops:record", "long", 1.2)
    assert.equal("spilled", err.code)
    release()
    local pa = tether.pool { name = "da", workers = 1, queue = 1 }
    local pb = tether.pool { name = "db", workers = 1, queue = 1 }
    local h = tether.go(function(p, s)
      return p:drain_store(s, nil, { allow = { "storeops" } })
    end, pa, a)
    local deadline = tether.now() + 10
    while assert(a:stats()).leased == 0 and tether.now() < deadline do
      tether.sleep(0.01)
    end
    -- While the op runs, the other drainer finds nothing to claim.
    local rounds = 0
    while #S.done(dir) == 0 do
      local ok, rep = pb:drain_store(b, nil, { allow = { "storeops" } })
      assert.is_true(ok)
      assert.equal(0, rep.claimed)
      rounds = rounds + 1
      tether.sleep(0.05)
      assert(rounds < 400, "the op never ended")
    end
    assert(h:wait(tether.with_timeout(bg, 20)))
    local done = S.done(dir)
    assert.equal(1, #done)
    assert.equal(1, done[1].deliveries)
    assert.equal(0, assert(a:stats()).depth)
    a:close()
    b:close()
  end)

  it("an op delivered more than max_deliveries times becomes a dead "
     .. "letter", function()
    local env = B.new()
    local store = assert(tether.store.open(env.url, { lease = 0.3,
                                                      max_deliveries = 1 }))
    local pool, release = full_pool(store)
    local _, err = spill(pool, bg, "storeops:hang", "h")
    assert.equal("spilled", err.code)
    release()
    -- A worker process claims it and is killed while it runs.
    S.write(dir .. "/drainer.lua", [[
      local w = require "tether.worker"
      assert(w.run { store = arg[1], allow = { "storeops" }, workers = 1,
                     lease = 0.3, max_deliveries = 1, poll = 0.05 })]])
    local pid = S.spawn(dir, "drainer.lua", S.quote(env.url))
    local deadline = tether.now() + 20
    while #S.done(dir) == 0 and tether.now() < deadline do
      tether.sleep(0.02)
    end
    S.kill(pid, "KILL")
    assert(S.wait_gone(pid, 10))
    assert.equal(1, #S.done(dir))
    -- Once its lease ran out, the next claim buries it.
    local drainer = tether.pool { name = "d", workers = 1, queue = 1 }
    deadline = tether.now() + 20
    while assert(store:stats()).dead == 0 and tether.now() < deadline do
      assert(drainer:drain_store(store, nil, { allow = { "storeops" } }))
      tether.sleep(0.05)
    end
    local dl = assert(store:dead_letters())
    assert.equal(1, #dl)
    assert.matches("max_deliveries", dl[1].reason)
    assert.equal(1, #S.done(dir), "it did not run again")
    store:close()
  end)

  it("a second worker process takes over the killed one's ops", function()
    local env = B.new()
    local store = assert(tether.store.open(env.url))
    local pool, release = full_pool(store)
    for i = 1, 6 do
      local _, err = spill(pool, bg, "storeops:record", "t" .. i, 0.4)
      assert.equal("spilled", err.code)
    end
    release()
    S.write(dir .. "/drainer.lua", [[
      local w = require "tether.worker"
      local rep = assert(w.run { store = arg[1], allow = { "storeops" },
        workers = 3, queue = 3, lease = 0.5, poll = 0.05,
        until_empty = arg[2] == "empty" })
      print("completed", rep.completed)]])
    local a = S.spawn(dir, "drainer.lua", S.quote(env.url))
    local deadline = tether.now() + 20
    while assert(store:stats()).leased == 0 and tether.now() < deadline do
      tether.sleep(0.01)
    end
    S.kill(a, "KILL")
    assert(S.wait_gone(a, 10))
    local out, ok = S.run(dir, "drainer.lua",
                          S.quote(env.url) .. " empty", 60)
    assert(ok, out)
    local seen, again = {}, 0
    for _, d in ipairs(S.done(dir)) do
      seen[d.tag] = true
      if d.deliveries > 1 then again = again + 1 end
    end
    for i = 1, 6 do assert.is_true(seen["t" .. i], "t" .. i .. " ran") end
    assert.is_true(again > 0, "some op was taken over")
    assert.equal(0, assert(store:stats()).depth)
    store:close()
  end)

  it("crash: a producer spilling under load and a drainer are killed "
     .. "with kill -9 at random moments; every acknowledged spill is "
     .. "completed", function()
    local env = B.new()
    local rounds = scale.n(8, 2)
    S.write(dir .. "/producer.lua", [[
      local tether = require "tether"
      local bg = tether.background()
      local store = assert(tether.store.open(arg[1]))
      local gate, started = tether.chan(0), tether.chan(1)
      local pool = tether.pool { name = "crash", workers = 1, queue = 1,
                                 overflow = store, quiet = true }
      -- The worker held and the queue full: every named op spills.
      pool:submit(bg, "blocker", function(_, g, s)
        s:send(true)
        g:recv()
      end, gate, started)
      started:recv()
      pool:submit(bg, "filler", function() end)
      local acks = assert(io.open(arg[3], "a"))
      local i, cap = 0, tonumber(arg[4])
      while i < cap do
        local batch = {}
        for k = 1, 50 do
          i = i + 1
          local tag = arg[2] .. "-" .. i
          batch[k] = { tag, pool:submit(bg, "rec", "storeops:record", tag,
                                        0.001) }
        end
        for _, b in ipairs(batch) do
          if b[2] then
            local _, err = b[2]:wait()
            if err and err.code == "spilled" then
              acks:write(b[1], "\n")
              acks:flush()
            end
          end
        end
      end
      tether.sleep(3600)  -- until killed]])
    -- The drainer is the real command line: `tether worker`.
    local worker = { "worker", "--store", env.url, "--require", "storeops",
                     "--workers", "4", "--lease", "1" }
    local acks = dir .. "/acks.log"
    os.remove(acks)
    math.randomseed(os.time())
    for r = 1, rounds do
      local p = S.spawn(dir, "producer.lua", S.quote(env.url) .. " r" .. r
                        .. " " .. S.quote(acks) .. " " .. scale.n(4000, 500))
      local d = S.spawn_cli(dir, worker)
      tether.sleep(0.3 + math.random() * 0.6)
      S.kill(p, "KILL")
      tether.sleep(math.random() * 0.4)
      S.kill(d, "KILL")
      assert(S.wait_gone(p, 10))
      assert(S.wait_gone(d, 10))
    end
    worker[#worker + 1] = "--until-empty"
    local status, out = S.cli(dir, worker, 120):finish()
    assert.equal(0, status, out)
    local acked, nacked = {}, 0
    for tag in S.read(acks):gmatch("[^\n]+") do
      acked[tag] = true
      nacked = nacked + 1
    end
    local count, ran, dups, again = {}, 0, 0, 0
    for _, d in ipairs(S.done(dir)) do
      ran = ran + 1
      count[d.tag] = (count[d.tag] or 0) + 1
      if count[d.tag] > 1 then dups = dups + 1 end
      if d.deliveries > 1 then again = again + 1 end
    end
    local lost = {}
    for tag in pairs(acked) do
      if not count[tag] then lost[#lost + 1] = tag end
    end
    io.stderr:write(("\n  crash (%s): %d rounds, %d spills acknowledged, "
      .. "%d ops completed, %d duplicates, %d redelivered, %d lost\n")
      :format(B.name, rounds, nacked, ran, dups, again, #lost))
    assert.is_true(nacked > 0, "the producer spilled something")
    assert.same({}, lost)
    assert.equal(0, assert(tether.store.open(env.url)):stats().depth)
    if B.integrity then assert.equal("ok", B.integrity(env)) end
  end)

  -- {================================================================
  -- tether worker, tether run --store, exit
  -- =================================================================

  -- tags reads the completed ops' tags: tag -> how many times it ran.
  local function tags()
    local count = {}
    for _, d in ipairs(S.done(dir)) do
      count[d.tag] = (count[d.tag] or 0) + 1
    end
    return count
  end

  it("worker.run refuses bad options in Lua's words", function()
    local w = require "tether.worker"
    assert.has_error(function() w.run() end,
      "bad argument #1 to 'run' (table expected, got no value)")
    assert.has_error(function() w.run { stor = "sqlite:x" } end,
      "bad argument #1 to 'run' (unknown option 'stor'; did you mean "
      .. "'store'?)")
    assert.has_error(function() w.run { store = 42 } end,
      "bad argument #1 to 'run' (field 'store' must be a URL or a "
      .. "tether.Store)")
  end)

  it("tether worker drains the store; an op of a module not on its "
     .. "--require list becomes a dead letter and never runs", function()
    local env = B.new()
    local store = assert(tether.store.open(env.url))
    local pool, release = full_pool(store)
    for i = 1, 10 do
      local _, err = spill(pool, bg, "storeops:record", "w" .. i)
      assert.equal("spilled", err.code)
    end
    local pwned = dir .. "/pwned"
    os.remove(pwned)
    local _, err = spill(pool, bg, "os:execute", "touch " .. pwned)
    assert.equal("spilled", err.code)
    release()
    local status, out = S.cli(dir, { "worker", "--store", env.url,
      "--require", "storeops", "--workers", "2", "--until-empty" }):finish()
    assert.equal(0, status, out)
    assert.matches("tether worker %d+: draining .* %(every pool%) with 2 "
                   .. "workers; allowed: storeops", out)
    assert.matches("tether worker: store empty: claimed 11, completed 10, "
                   .. "failed 0, refused 1; drained in [%d.]+ s; nothing "
                   .. "left running", out)
    local count = tags()
    for i = 1, 10 do assert.equal(1, count["w" .. i], out) end
    assert.is_nil(io.open(pwned), "os.execute never ran")
    local dl = assert(store:dead_letters())
    assert.equal(1, #dl)
    assert.equal("os:execute", dl[1].fn)
    assert.equal("module 'os' is not on the drainer's allow-list",
                 dl[1].reason)
    assert.equal(0, assert(store:stats()).depth)
    store:close()
  end)

  it("tether worker on SIGTERM stops claiming, finishes the ops it "
     .. "claimed and exits 143; the rest waits in the store", function()
    local env = B.new()
    local store = assert(tether.store.open(env.url))
    local pool, release = full_pool(store)
    local n = 12
    for i = 1, n do
      local _, err = spill(pool, bg, "storeops:slow", "g" .. i, 0.4)
      assert.equal("spilled", err.code)
    end
    release()
    local w = S.cli(dir, { "worker", "--store", env.url, "--require",
                           "storeops", "--workers", "2" })
    -- Both workers run an op: the signal comes while ops are claimed.
    assert.truthy(w:expect("^start g%d+$"))
    assert.truthy(w:expect("^start g%d+$"))
    assert.is_number(w.pid)
    S.kill(w.pid, "TERM")
    local status, out = w:finish()
    assert.equal(143, status, out)
    local claimed = tonumber(out:match("claimed (%d+),"))
    assert.matches("tether worker: SIGTERM: claimed %d+, completed "
                   .. claimed .. ", failed 0, refused 0; drained in "
                   .. "[%d.]+ s; nothing left running", out)
    -- Every op it claimed ran to its end (two at least; it claims its
    -- workers plus its queue, 6, and more only as ops end), the others
    -- it left alone.
    assert.is_true(claimed >= 2, out)
    assert.equal(claimed, S.count(out, "^start g%d+$"))
    assert.equal(claimed, #S.done(dir))
    local st = assert(store:stats())
    assert.equal(n - claimed, st.depth)
    assert.equal(0, st.leased)
    -- Another worker takes the rest: every op ran exactly once.
    status, out = S.cli(dir, { "worker", "--store", env.url, "--require",
      "storeops", "--workers", "4", "--until-empty" }):finish()
    assert.equal(0, status, out)
    local count = tags()
    for i = 1, n do assert.equal(1, count["g" .. i], "g" .. i) end
    assert.equal(0, assert(store:stats()).depth)
    store:close()
  end)

  it("tether worker whose --drain runs out leaves the ops still running "
     .. "to their lease: another worker runs them, nothing is lost",
     function()
    local env = B.new()
    local store = assert(tether.store.open(env.url))
    local pool, release = full_pool(store)
    for i = 1, 2 do
      local _, err = spill(pool, bg, "storeops:slow", "l" .. i, 1.5)
      assert.equal("spilled", err.code)
    end
    release()
    local args = { "worker", "--store", env.url, "--require", "storeops",
                   "--workers", "2", "--lease", "1", "--drain", "0.1" }
    local w = S.cli(dir, args)
    assert.truthy(w:expect("^start l%d$"))
    assert.truthy(w:expect("^start l%d$"))
    S.kill(w.pid, "INT")
    local status, out = w:finish()
    assert.equal(130, status, out)
    assert.matches("tether worker: SIGINT: claimed 2, completed 0, failed "
                   .. "0, refused 0; drained in [%d.]+ s; 2 ops still "
                   .. "running, left to their lease", out)
    assert.equal(2, S.count(out, '"msg":"abandoned at exit"'), out)
    assert.equal(0, #S.done(dir))
    -- Their leases run out; another worker takes them over.
    args[#args] = "25"
    args[#args + 1] = "--until-empty"
    status, out = S.cli(dir, args):finish()
    assert.equal(0, status, out)
    local done = S.done(dir)
    assert.equal(2, #done, out)
    for _, d in ipairs(done) do assert.equal(2, d.deliveries) end
    assert.equal(0, assert(store:stats()).depth)
    store:close()
  end)

  it("tether run --store spills a full queue's named ops, puts the "
     .. "queued ones back in the store on SIGTERM, and tether worker runs "
     .. "each once", function()
    local env = B.new()
    local c = child.start(([[
package.path = %q .. "/?.lua;" .. package.path
local tether = require "tether"
local ctx = tether.run_context()
local bg = tether.background()
-- No overflow option: the runner's --store is the pool's.
local pool = tether.pool { name = "jobs", workers = 1, queue = 4 }
local gate, started = tether.chan(0), tether.chan(1)
pool:submit(bg, "blocker", function(_, g, s)
  s:send(true)
  g:recv()
end, gate, started)
started:recv()
local hs = {}
for i = 1, 10 do
  hs[i] = assert(pool:submit(bg, "job", "storeops:record", "r" .. i))
end
local spilled = 0
for i = 5, 10 do
  local _, err = hs[i]:wait()
  if err and err.code == "spilled" then spilled = spilled + 1 end
end
print("spilled " .. spilled .. ", queued " .. pool:stats().queued)
print("ready")
ctx:wait()
]]):format(dir), { runner = { "--store", env.url, "--drain", "0.5" } })
    assert.is_true(c:expect("ready"), table.concat(c.out, "\n"))
    assert.is_true(c:blocked())
    c:signal("TERM")
    local r = c:finish()
    assert.equal(143, r.status, child.describe(r))
    assert.equal("spilled 6, queued 4", r.out[1], child.describe(r))
    -- The blocker (a closure, running) is abandoned; the four queued
    -- named ops go back to the store.
    assert.equal(1, S.count(r.stderr, '"msg":"abandoned at exit"'),
                 r.stderr)
    assert.equal(1, S.count(r.stderr, '"state":"running"'), r.stderr)
    assert.matches('"msg":"queued ops put back in the store at exit",'
                   .. '"pool":"jobs","ops":4', r.stderr)
    assert.matches("tether run: SIGTERM: 1 pool drained in [%d.]+ s; 4 "
                   .. "queued ops put back in the store; 1 op abandoned "
                   .. "%(see the lines above%)\n$", r.stderr)
    local store = assert(tether.store.open(env.url))
    assert.equal(10, assert(store:stats("jobs")).depth)
    local status, out = S.cli(dir, { "worker", "--store", env.url,
      "--require", "storeops", "--until-empty" }):finish()
    assert.equal(0, status, out)
    local count = tags()
    for i = 1, 10 do assert.equal(1, count["r" .. i], "r" .. i) end
    assert.equal(0, assert(store:stats()).depth)
    store:close()
  end)

  -- exiting is a script whose pool (exit_timeout = 0, a store) holds a
  -- running closure, a queued closure and five queued named ops when it
  -- ends; 'ending' is how it ends.
  local function exiting(url, ending)
    return ([[
package.path = %q .. "/?.lua;" .. package.path
local tether = require "tether"
local store = assert(tether.store.open(%q))
local bg = tether.background()
local pool = tether.pool { name = "exiting", workers = 1, queue = 8,
                           overflow = store, exit_timeout = 0 }
local gate, started = tether.chan(0), tether.chan(1)
pool:submit(bg, "blocker", function(_, g, s)
  s:send(true)
  g:recv()
end, gate, started)
started:recv()
local hs = { assert(pool:submit(bg, "closure", function() end)) }
for i = 1, 5 do
  hs[#hs + 1] = assert(pool:submit(bg, "job", "storeops:record", "e" .. i))
end
print("queued " .. pool:stats().queued)
%s
]]):format(dir, url, ending)
  end

  it("exit with exit_timeout = 0 and a store: the queued named ops are "
     .. "spilled, counted and resolved so; closures are abandoned",
     function()
    local env = B.new()
    -- tether.drain_all is what exit runs: the script reads the outcome.
    local r = child.run(exiting(env.url, [[
local rep = tether.drain_all(0)
print(("pools %d, spilled %d, abandoned %d"):format(rep.pools,
  rep.spilled, rep.abandoned))
local codes = {}
for _, h in ipairs(hs) do
  local _, err = h:wait()
  codes[#codes + 1] = err.code
end
print(table.concat(codes, " "))
local s = pool:stats()
print(("submitted %d = spilled %d + abandoned %d + queued %d + inflight %d")
  :format(s.submitted, s.spilled, s.abandoned, s.queued, s.inflight))
assert(s.submitted == s.completed + s.failed + s.stopped + s.dead
       + s.spilled + s.abandoned + s.queued + s.inflight)
]]))
    assert.equal(0, r.status, child.describe(r))
    assert.same({ "queued 6", "pools 1, spilled 5, abandoned 2",
                  "abandoned spilled spilled spilled spilled spilled",
                  "submitted 7 = spilled 5 + abandoned 2 + queued 0 + "
                  .. "inflight 0" }, r.out)
    assert.equal(2, S.count(r.stderr, '"msg":"abandoned at exit"'),
                 r.stderr)
    assert.matches('"op":"closure".*"state":"queued"', r.stderr)
    assert.matches('"op":"blocker".*"state":"running"', r.stderr)
    -- At a real exit, by the state's close or by os.exit: the same.
    for _, ending in ipairs { "", "os.exit(0)" } do
      r = child.run(exiting(env.url, ending))
      assert.equal(0, r.status, child.describe(r))
      assert.equal(2, S.count(r.stderr, '"msg":"abandoned at exit"'),
                   r.stderr)
      assert.matches('"msg":"queued ops put back in the store at exit",'
                     .. '"pool":"exiting","ops":5', r.stderr)
    end
    local store = assert(tether.store.open(env.url))
    assert.equal(15, assert(store:stats("exiting")).depth)
    local drainer = tether.pool { name = "d", workers = 2, queue = 4 }
    local ok, rep = drainer:drain_store(store, tether.with_timeout(bg, 30),
                                        { allow = { "storeops" } })
    assert.is_true(ok, tostring(rep))
    assert.equal(15, rep.completed)
    local count = tags()
    for i = 1, 5 do assert.equal(3, count["e" .. i], "e" .. i) end
    store:close()
  end)

  -- }================================================================
end

-- {==================================================================
-- SQLite
-- ===================================================================

describe("durable overflow, sqlite", function()
  local base
  local n = 0
  lazy_setup(function() base = S.tmpdir() end)
  lazy_teardown(function() S.rmdir(base) end)
  suite {
    name = "sqlite",
    new = function()
      n = n + 1
      local file = ("%s/q%d.db"):format(base, n)
      return { url = "sqlite:" .. file, file = file }
    end,
    corrupt = function(env, pool)
      local out = S.sh(("sqlite3 %s \"INSERT INTO tether_ops(pool, rec, "
        .. "enqueued) VALUES ('%s', X'5454524301010203040506', 0), ('%s', "
        .. "X'00112233445566778899', 0)\""):format(S.quote(env.file), pool,
        pool))
      assert.equal("", out)
    end,
    block = function(env)
      -- Another process holds the write lock until told to let go.
      local go = env.file .. ".go"
      local held = env.file .. ".held"
      os.remove(go)
      local cmd = ("(echo 'BEGIN IMMEDIATE;'; echo \".shell touch %s\"; "
        .. "for i in $(seq 200); do [ -e %s ] && break; sleep 0.05; done; "
        .. "echo 'COMMIT;') | sqlite3 %s >/dev/null 2>&1 &"):format(
        S.quote(held), S.quote(go), S.quote(env.file))
      S.sh(cmd)
      local deadline = tether.now() + 10
      while not io.open(held) and tether.now() < deadline do
        tether.sleep(0.01)
      end
      return function() S.write(go, "") end
    end,
    integrity = function(env)
      return (S.sh("sqlite3 " .. S.quote(env.file)
                   .. " 'PRAGMA integrity_check'"):gsub("%s+$", ""))
    end,
  }

  it("creates its file 0600, and so its WAL", function()
    local file = base .. "/mode.db"
    local store = assert(tether.store.open("sqlite:" .. file))
    local pool, release = full_pool(store)
    local _, err = spill(pool, bg, "x:y", 1)
    assert.equal("spilled", err.code)
    release()
    assert.equal("600", (S.sh("stat -c %a " .. S.quote(file)):gsub("%s", "")))
    assert.equal("600", (S.sh("stat -c %a " .. S.quote(file .. "-wal"))
                         :gsub("%s", "")))
    store:close()
  end)

  it("open refuses a file that is not a database, clearly", function()
    local file = base .. "/notes.txt"
    S.write(file, string.rep("these are not the pages you want\n", 200))
    local store, err = tether.store.open("sqlite:" .. file)
    assert.is_nil(store)
    assert.equal("store_unavailable", err.code)
    assert.matches("not a database", err.message)
    store, err = tether.store.open("sqlite:/nonexistent-dir/q.db")
    assert.is_nil(store)
    assert.matches("No such file or directory", err.message)
  end)

  it("keeps the WAL bounded", function()
    local file = base .. "/wal.db"
    local store = assert(tether.store.open("sqlite:" .. file))
    local pool, release = full_pool(store)
    local hs = {}
    for i = 1, scale.n(2000, 100) do
      hs[i] = assert(pool:submit(bg, "op", "storeops:record", i,
                                 string.rep("w", 500)))
    end
    for _, h in ipairs(hs) do h:wait() end
    release()
    local drainer = tether.pool { name = "d", workers = 2, queue = 8 }
    assert(drainer:drain_store(store, nil, { allow = { "storeops" } }))
    store:close()
    local size = tonumber((S.sh("stat -c %s " .. S.quote(file .. "-wal"))
                           :match("%d+"))) or 0
    assert.is_true(size < 1024 * 1024, "WAL of " .. size .. " bytes")
  end)
end)

-- }==================================================================

-- {==================================================================
-- Redis
-- ===================================================================

describe("durable overflow, redis", function()
  local R
  local n = 0
  lazy_setup(function() R = S.redis() end)
  lazy_teardown(function() if R then R.stop() end end)
  suite {
    name = "redis",
    new = function()
      n = n + 1
      local prefix = ("t%d_%d"):format(n, math.random(1e6))
      return { url = R.url .. "?prefix=" .. prefix, prefix = prefix }
    end,
    corrupt = function(env, pool)
      local key = env.prefix .. ":" .. pool
      assert.matches("%d+%-%d+", (R.cli("XADD " .. key
        .. " '*' rec \"$(printf 'TTRC\\001\\001\\002\\003\\004\\005\\006')\"")))
      assert.matches("%d+%-%d+", (R.cli("XADD " .. key
        .. " '*' rec garbage-bytes")))
    end,
    block = function()
      S.kill(R.pid, "STOP")
      return function() S.kill(R.pid, "CONT") end
    end,
  }

  it("two tether worker processes on one stream split the work and each "
     .. "op completes once", function()
    local dir = S.setup_dir()
    os.remove(dir .. "/done.log")
    local url = R.url .. "?prefix=scale" .. math.random(1e6)
    local store = assert(tether.store.open(url))
    local pool, release = full_pool(store)
    -- Enough work that one worker alone would take over a second, so
    -- that both have started long before the stream is empty.
    local total = scale.n(600, 250)
    local hs = {}
    for i = 1, total do
      hs[i] = assert(pool:submit(bg, "op", "storeops:record", "x" .. i,
                                 0.01))
    end
    for _, h in ipairs(hs) do
      local _, err = h:wait()
      assert.equal("spilled", err.code)
    end
    release()
    -- Two `tether worker` processes at once.
    local args = { "worker", "--store", url, "--require", "storeops",
                   "--workers", "2", "--until-empty" }
    local a, b = S.cli(dir, args, 120), S.cli(dir, args, 120)
    local sa, outa = a:finish()
    local sb, outb = b:finish()
    assert.equal(0, sa, outa)
    assert.equal(0, sb, outb)
    local count, pids, n2 = {}, {}, 0
    for _, d in ipairs(S.done(dir)) do
      count[d.tag] = (count[d.tag] or 0) + 1
      pids[d.pid] = (pids[d.pid] or 0) + 1
      n2 = n2 + 1
    end
    assert.equal(total, n2, "no op ran twice")
    for i = 1, total do assert.equal(1, count["x" .. i]) end
    local np = 0
    for _ in pairs(pids) do np = np + 1 end
    assert.equal(2, np, "both workers took a share")
    assert.equal(0, assert(store:stats()).depth)
    store:close()
    S.rmdir(dir)
  end)

  it("open reports an unreachable server clearly, without the password",
     function()
    local port = R.port + 1
    local store, err = tether.store.open(
      ("redis://:s3cret-pw@127.0.0.1:%d/0"):format(port), { timeout = 1 })
    assert.is_nil(store)
    assert.equal("store_unavailable", err.code)
    assert.matches("cannot connect to redis at 127.0.0.1:" .. port,
                   err.message)
    assert.is_nil(err.message:find("s3cret", 1, true))
    -- A wrong password: refused, and the password is not repeated.
    store, err = tether.store.open(("redis://:s3cret-pw@127.0.0.1:%d/0")
                                   :format(R.port))
    assert.is_nil(store)
    assert.is_nil(err.message:find("s3cret", 1, true))
  end)
end)

-- }==================================================================

describe("tether.store.open", function()
  it("raises on a malformed URL, never repeating it", function()
    for _, url in ipairs { "sqlite:", "redis://", "redis://h:port",
                           "redis://:pw@h:99999", "mysql://x",
                           "redis://h:1/db", "redis://h:1/0?prefix=a b",
                           "redis://h:1/0?user=x", "redis://pw@h:1" } do
      local ok, err = pcall(function() return tether.store.open(url) end)
      assert.is_false(ok, url)
      assert.matches("bad argument #1 to 'open' %(malformed store URL: ",
                     err)
      assert.is_nil(err:find("pw@", 1, true), err)
    end
  end)

  it("checks its options strictly", function()
    assert.has_error(function()
      tether.store.open("sqlite:/tmp/x.db", { leases = 1 })
    end, "bad argument #2 to 'open' (unknown option 'leases'; did you "
      .. "mean 'lease'?)")
    assert.has_error(function()
      tether.pool { overflow = "sqlite:/tmp/x.db" }
    end, "bad argument #1 to 'pool' (field 'overflow' must be a "
      .. "tether.Store or false)")
  end)
end)

describe("tether.store.default", function()
  it("is the overflow of every pool made without one; overflow = false "
     .. "takes none", function()
    local dir = S.setup_dir()
    local url = "sqlite:" .. dir .. "/default.db"
    local store = assert(tether.store.open(url))
    assert.is_nil(tether.store.default())
    assert.equal(url, tether.store.default(store):url())
    assert.equal(url, tether.store.default():url())
    local gate = tether.chan(0)
    -- full makes a pool whose worker is held and whose queue is full.
    local function full(opts)
      local started = tether.chan(1)
      opts.workers, opts.queue, opts.quiet = 1, 1, true
      local pool = tether.pool(opts)
      assert(pool:submit(bg, "blocker", function(_, g, s)
        s:send(true)
        g:recv()
      end, gate, started))
      assert(started:recv(tether.with_timeout(bg, 10)))
      assert(pool:submit(bg, "filler", function() end))
      return pool
    end
    local with = full { name = "with" }
    local without = full { name = "without", overflow = false }
    assert.is_nil(tether.store.default(false))
    local later = full { name = "later" }
    local h = assert(with:submit(bg, "op", "storeops:record", "d1"))
    local _, err = h:wait(tether.with_timeout(bg, 20))
    assert.equal("spilled", err.code)
    for _, p in ipairs { without, later } do
      local h2, err2 = p:submit(bg, "op", "storeops:record", "d2")
      assert.is_nil(h2)
      assert.equal("queue_full", err2.code)
      assert.equal(("queue full: pool '%s'"):format(p:name()),
                   err2.message)
    end
    gate:close()
    for _, p in ipairs { with, without, later } do
      assert(p:drain(tether.with_timeout(bg, 10)))
    end
    assert.equal(1, assert(store:stats("with")).depth)
    assert.has_error(function() tether.store.default(42) end,
      "bad argument #1 to 'default' (tether.Store or false expected, got "
      .. "number)")
    assert.has_error(function() tether.pool { overflow = true } end,
      "bad argument #1 to 'pool' (field 'overflow' must be a tether.Store "
      .. "or false)")
    store:close()
    S.rmdir(dir)
  end)
end)

describe("tether worker's command line", function()
  local dir
  lazy_setup(function()
    dir = S.setup_dir()
    S.write(dir .. "/broken.lua", "error('this module is broken')\n")
  end)
  lazy_teardown(function() S.rmdir(dir) end)

  local function cli(args)
    local status, out = S.cli(dir, args):finish()
    return status, out
  end

  it("needs --store and a --require, and loads each module at once",
     function()
    local db = "sqlite:" .. dir .. "/w.db"
    local hint = "\nTry 'tether worker %-%-help' for more information%.$"
    local status, out = cli { "worker", "--require", "storeops" }
    assert.equal(2, status)
    assert.matches("^tether worker: %-%-store URL is required" .. hint, out)
    status, out = cli { "worker", "--store", db }
    assert.equal(2, status)
    assert.matches("^tether worker: at least one %-%-require MOD is "
                   .. "needed: only the functions of those modules run"
                   .. hint, out)
    status, out = cli { "worker", "--store", db, "--require", "storeops",
                        "--require", "storeopz" }
    assert.equal(2, status)
    assert.matches("^tether worker: %-%-require storeopz: module "
                   .. "'storeopz' not found" .. hint, out)
    status, out = cli { "worker", "--store", db, "--require", "broken" }
    assert.equal(1, status)
    assert.matches("^tether worker: %-%-require broken: .*this module is "
                   .. "broken", out)
    status, out = cli { "worker", "--store", db, "--require", "storeops",
                        "--workers", "0" }
    assert.equal(2, status)
    assert.matches("option '%-%-workers' expects an integer from 1 to "
                   .. "4096, got '0'", out)
    status, out = cli { "worker", "--store", db, "--require", "storeops",
                        "extra" }
    assert.equal(2, status)
    assert.matches("unexpected argument 'extra'", out)
    assert.is_nil(io.open(dir .. "/w.db"), "nothing was opened")
  end)

  it("says clearly when the store cannot be opened, never repeating a "
     .. "password", function()
    local status, out = cli { "worker", "--store", "mysql://u:pw@h/x",
                              "--require", "storeops" }
    assert.equal(2, status)
    assert.matches("^tether worker: %-%-store: malformed store URL: "
                   .. "unknown scheme", out)
    status, out = cli { "worker", "--store", "sqlite:" .. dir
                        .. "/no/such/dir/x.db", "--require", "storeops" }
    assert.equal(1, status)
    assert.matches("^tether worker: cannot open store sqlite:", out)
    status, out = cli { "run", "--store", "redis://:s3cret@h:0",
                        dir .. "/storeops.lua" }
    assert.equal(2, status)
    assert.matches("^tether run: option '%-%-store': malformed store URL",
                   out)
    assert.matches("\nTry 'tether run %-%-help' for more information%.\n?$",
                   out)
    assert.is_nil(out:find("s3cret", 1, true), out)
  end)

  it("documents itself", function()
    local status, out = cli { "worker", "--help" }
    assert.equal(0, status)
    assert.matches("^Usage: tether worker %-%-store URL %-%-require MOD",
                   out)
    for _, opt in ipairs { "store URL", "require MOD", "pool NAME",
                           "workers N", "drain SECONDS", "lease SECONDS",
                           "until%-empty" } do
      assert.matches("%-%-" .. opt, out)
    end
    assert.matches("exits with 130 %(SIGINT%) or 143 %(SIGTERM%)", out)
    status, out = cli { "--help" }
    assert.equal(0, status)
    assert.matches("\n  worker   drain a durable store", out)
  end)
end)
