-- Pools: detached Lua work on worker threads, with drain, shutdown, stop,
-- in-flight listing, idle reports and interrupts.
local tether = require "tether"

local bg = tether.background()

local check_invariant = require("spec.support.accounting").check
local eventually = require "spec.support.eventually"

-- submit_retrying submits, retrying on queue_full as a caller should, for
-- at most 5 s.
local function submit_retrying(pool, parent, name, fn, ...)
  local args = table.pack(...)
  local h, err
  eventually(function()
    h, err = pool:submit(parent, name, fn, table.unpack(args, 1, args.n))
    if not h then assert.equal("queue_full", err.code) end
    return h ~= nil
  end, "room in the queue of pool '" .. pool:name() .. "'")
  return h
end

-- running waits until 'n' ops of 'pool' run.
local function running(pool, n)
  eventually(function() return pool:stats().inflight >= n end,
             n .. " running ops in pool '" .. pool:name() .. "'")
end

describe("pools", function()
  it("scenario 7: 100 submissions through 5 workers and a queue of 20 "
     .. "all run, each once", function()
    local pool = tether.pool { name = "seed", workers = 5, queue = 20 }
    local seen = tether.chan(200)
    local refused = 0
    local handles = {}
    for i = 1, 100 do
      eventually(function()
        local h, err = pool:submit(bg, "op", function(ctx, n, out)
          out:send(n)
          return n
        end, i, seen)
        if h then handles[i] = h; return true end
        assert.equal("queue_full", err.code)
        refused = refused + 1
        return false
      end, "room in the queue")
    end
    assert.is_true(pool:drain(tether.with_timeout(bg, 30)))
    local count = {}
    for _ = 1, 100 do
      local n = seen:recv()
      count[n] = (count[n] or 0) + 1
    end
    for i = 1, 100 do
      assert.equal(1, count[i])
      assert.equal(i, handles[i]:wait())
    end
    assert.equal(0, seen:len())
    local s = pool:stats()
    assert.equal(100, s.submitted)
    assert.equal(100, s.completed)
    assert.equal(refused, s.rejected)
    check_invariant(s)
  end)

  it("submit never blocks: a full queue refuses with queue_full", function()
    local gate = tether.chan()
    local pool = tether.pool { name = "tight", workers = 1, queue = 1 }
    local a = pool:submit(bg, "a", function(ctx, g) g:recv() end, gate)
    -- Wait until 'a' runs, so the next one sits in the queue.
    running(pool, 1)
    local b = pool:submit(bg, "b", function() end)
    assert.is_truthy(a and b)
    local t0 = tether.now()
    local c, err = pool:submit(bg, "c", function() end)
    assert.is_nil(c)
    assert.equal("queue_full", err.code)
    assert.equal("queue full: pool 'tight'", err.message)
    assert.is_true(tether.now() - t0 < 1)
    -- A refusal comes before anything is packed: even a task that could
    -- not cross threads is just refused, cheaply.
    local co = coroutine.create(print)
    local d, derr = pool:submit(bg, "d", function() return co end)
    assert.is_nil(d)
    assert.equal("queue_full", derr.code)
    gate:send(true)
    assert.is_true(pool:drain())
    local _, cerr = pool:submit(bg, "late", function() end)
    assert.equal("closed", cerr.code)
    assert.equal(3, pool:stats().rejected)
  end)

  it("an opt-in bounded wait for queue space", function()
    local pool = tether.pool { name = "patient", workers = 1, queue = 1 }
    local hs = {}
    for i = 1, 5 do
      local h, err = pool:submit(bg, { name = "w", wait = 5 },
        function(ctx, n) tether.sleep(0.005) return n end, i)
      assert.is_truthy(h, err and tostring(err))
      hs[i] = h
    end
    for i = 1, 5 do assert.equal(i, hs[i]:wait()) end
  end)

  it("the op's context is detached from the parent, keeps its values "
     .. "and has the pool's timeout", function()
    local pool = tether.pool { name = "ctx", workers = 1, timeout = 5 }
    local parent, cancel = tether.with_cancel(
      tether.with_value(bg, "trace", "t-9"))
    local gate = tether.chan()
    local h = pool:submit(parent, "op", function(ctx, g)
      g:recv()
      return ctx:err(), ctx:value("trace"), ctx:deadline() ~= nil
    end, gate)
    cancel()
    gate:send(true)
    local err, trace, has_deadline = h:wait()
    assert.is_nil(err)
    assert.equal("t-9", trace)
    assert.is_true(has_deadline)
  end)

  it("an op past its timeout sees deadline_exceeded", function()
    local pool = tether.pool { name = "slow", workers = 1, timeout = 0.02 }
    local h = pool:submit(bg, "slow", function(ctx)
      local ok, err = tether.sleep(5, ctx)
      return ok, err
    end)
    local ok, err = h:wait()
    assert.is_nil(ok)
    assert.equal(tether.deadline_exceeded, err)
  end)

  it("scenario 8: the shutdown context cancels running ops, which stop "
     .. "gracefully", function()
    local shutdown, stop_all = tether.with_cancel_cause(bg)
    local pool = tether.pool { name = "svc", workers = 3, shutdown = shutdown }
    local started = tether.chan(3)
    local hs = {}
    for i = 1, 3 do
      hs[i] = pool:submit(bg, "loop", function(ctx, n, st)
        st:send(n)
        -- Work in small steps, looking at ctx between them (for 5 s at
        -- most: a shutdown that never comes fails the spec).
        for _ = 1, 5000 do
          if ctx:err() then break end
          tether.sleep(0.001, ctx)
        end
        return ctx:err() and "stopped cleanly" or "never stopped",
               ctx:cause()
      end, i, started)
    end
    local limit = tether.with_timeout(bg, 10)
    for _ = 1, 3 do assert.is_truthy(started:recv(limit)) end
    stop_all("maintenance")
    for i = 1, 3 do
      local msg, cause = hs[i]:wait(limit)
      assert.equal("stopped cleanly", msg)
      assert.equal("maintenance", cause)
    end
    assert.is_true(pool:drain())
  end)

  it("scenario 11: drain with a budget returns deadline_exceeded on time "
     .. "and the running ops stay accounted for", function()
    local gate = tether.chan()
    local pool = tether.pool { name = "budget", workers = 2, queue = 10 }
    for i = 1, 4 do
      pool:submit(bg, "slow" .. i, function(ctx, g) g:recv() end, gate)
    end
    running(pool, 2)
    local budget = tether.with_timeout(bg, 0.05)
    local ok, err = pool:drain(budget)
    assert.is_nil(ok)
    assert.equal(tether.deadline_exceeded, err)
    local s = pool:stats()
    assert.equal(2, s.inflight)
    assert.equal(2, s.queued)
    check_invariant(s)
    for _ = 1, 4 do gate:send(true) end
    assert.is_true(pool:drain(tether.with_timeout(bg, 10)))
    s = pool:stats()
    assert.equal(4, s.completed)
    check_invariant(s)
  end)

  it("scenario 19: stopping five of ten queued ops leaves five completed; "
     .. "stop after the run is a no-op", function()
    local gate = tether.chan()
    local pool = tether.pool { name = "stops", workers = 1, queue = 20 }
    local blocker = pool:submit(bg, "blocker", function(ctx, g) g:recv() end,
                                gate)
    running(pool, 1)
    local hs = {}
    for i = 1, 10 do
      hs[i] = pool:submit(bg, "op" .. i, function(ctx, n) return n end, i)
    end
    for i = 1, 10, 2 do assert.is_true(hs[i]:stop()) end
    gate:send(true)
    assert.is_true(pool:drain())
    local done = 0
    for i = 1, 10 do
      if i % 2 == 1 then
        assert.equal("stopped", hs[i]:state())
        local v, err = hs[i]:wait()
        assert.is_nil(v)
        assert.equal("stopped", err.code)
      else
        assert.equal(i, hs[i]:wait())
        done = done + 1
      end
      assert.is_false(hs[i]:stop())
    end
    assert.equal(5, done)
    assert.is_false(blocker:stop())
    local s = pool:stats()
    assert.equal(6, s.completed)
    assert.equal(5, s.stopped)
    check_invariant(s)
  end)

  it("scenario 20: inflight lists a slow op with its name and start time",
     function()
    local gate = tether.chan()
    local pool = tether.pool { name = "list", workers = 2,
                               tenant_key = "tenant" }
    local t0 = tether.now()
    local ctx = tether.with_value(bg, "tenant", "acme")
    pool:submit(ctx, "resize-image", function(_, g) g:recv() end, gate)
    running(pool, 1)
    local list = pool:inflight()
    assert.equal(1, #list)
    assert.equal("resize-image", list[1].name)
    assert.equal("acme", list[1].tenant)
    assert.is_true(list[1].started >= t0 and list[1].started <= tether.now())
    gate:send(true)
    pool:drain()
    assert.same({}, pool:inflight())
  end)

  it("scenario 21: an idle pool reports once, the next submission "
     .. "reports resuming", function()
    local events = tether.chan(10)
    local pool = tether.pool { name = "idler", workers = 1,
      idle_after = 0.03, quiet = true,
      on_idle = function() events:send("idle") end,
      on_resume = function() events:send("resume") end }
    pool:submit(bg, "one", function() end):wait()
    assert.equal("idle", events:recv())
    tether.sleep(0.1)
    assert.equal(0, events:len())   -- one report, not one per tick
    pool:submit(bg, "two", function() end):wait()
    assert.equal("resume", events:recv())
    assert.equal("idle", events:recv())
    pool:drain()
  end)

  it("idle and resume are logged as one line each", function()
    local f = os.tmpname()
    local h = assert(io.open(f, "w"))
    h:write([[
      package.path = "./lua/?.lua;./lua/?/init.lua;" .. package.path
      package.cpath = "./build/?.so;" .. package.cpath
      local tether = require "tether"
      local p = tether.pool { name = "logged", workers = 1, idle_after = 0.02 }
      p:submit(tether.background(), "a", function() end):wait()
      tether.sleep(0.1)
      p:submit(tether.background(), "b", function() end):wait()
      p:drain()
    ]])
    h:close()
    local out = io.popen("lua5.4 " .. f .. " 2>&1"):read("a")
    os.remove(f)
    local _, idle = out:gsub('"msg":"pool idle","pool":"logged"', "")
    local _, resume = out:gsub('"msg":"pool resuming","pool":"logged"', "")
    assert.is_true(idle >= 1, out)
    assert.equal(1, resume, out)
  end)

  it("interrupt = true stops a busy loop, even one that swallows errors",
     function()
    local pool = tether.pool { name = "busy", workers = 1, timeout = 0.05,
                               interrupt = true }
    local limit = tether.with_timeout(bg, 10)
    local spin = pool:submit(bg, "spin", function() while true do end end)
    local _, err = spin:wait(limit)
    assert.equal(tether.deadline_exceeded, err)
    local stubborn = pool:submit(bg, "stubborn", function()
      for _ = 1, 1e12 do pcall(function() while true do end end) end
    end)
    _, err = stubborn:wait(limit)
    assert.equal(tether.deadline_exceeded, err)
    -- The worker is still good for more work.
    assert.equal(3, pool:submit(bg, "after", function() return 3 end):wait())
  end)

  it("init runs once per worker state before its first task", function()
    local pool = tether.pool { name = "init", workers = 2,
      init = function() _G.INIT_COUNT = (_G.INIT_COUNT or 0) + 1 end }
    local hs = {}
    for i = 1, 20 do
      hs[i] = submit_retrying(pool, bg, "op",
                              function() return _G.INIT_COUNT end)
    end
    for i = 1, 20 do assert.equal(1, hs[i]:wait()) end
  end)

  it("named functions 'module:function' are required on the worker",
     function()
    local dir = os.tmpname()
    os.remove(dir)
    os.execute("mkdir -p " .. dir)
    local f = assert(io.open(dir .. "/poolmod_x.lua", "w"))
    f:write("return { double = function(ctx, n) return n * 2 end }\n")
    f:close()
    local saved = package.path
    package.path = dir .. "/?.lua;" .. package.path
    local pool = tether.pool { name = "named", workers = 1 }
    package.path = saved
    local h = pool:submit(bg, "double", "poolmod_x:double", 21)
    assert.equal(42, h:wait())
    os.execute("rm -rf " .. dir)
  end)

  it("drain called from one of the pool's own ops raises instead of "
     .. "waiting for itself", function()
    local pool = tether.pool { name = "selfish", workers = 1 }
    local h = pool:submit(bg, "drainer", function(_, p)
      local ok, err = pcall(p.drain, p)
      -- The pool stayed open: the op may still submit to it.
      local again = p:submit(tether.background(), "after",
                             function() return "after" end)
      return ok, err, again ~= nil
    end, pool)
    local ok, err, reopened = h:wait((tether.with_timeout(bg, 10)))
    assert.is_false(ok)
    assert.matches("drain called from an op of pool 'selfish'", err, 1,
                   true)
    assert.is_true(reopened)
    assert.is_true(pool:drain(tether.with_timeout(bg, 10)))
    assert.equal(2, pool:stats().completed)
    check_invariant(pool:stats())
  end)

  it("bad input", function()
    assert.has_error(function() tether.pool() end,
      "bad argument #1 to 'pool' (table expected, got no value)")
    assert.has_error(function() tether.pool { workers = -1 } end,
      "bad argument #1 to 'pool' (field 'workers' must be between 0 and "
      .. "4096)")
    assert.has_error(function() tether.pool { timeout = "x" } end,
      "bad argument #1 to 'pool' (field 'timeout' must be a number, got "
      .. "string)")
    assert.has_error(function() tether.pool { shutdown = 1 } end,
      "bad argument #1 to 'pool' (field 'shutdown' must be a "
      .. "tether.Context)")
    local pool = tether.pool { name = "bad", workers = 1 }
    assert.has_error(function() pool:submit(nil, "x", print) end,
      "bad argument #1 to 'submit' (tether.Context expected, got nil)")
    assert.has_error(function() pool:submit(bg, 1, print) end,
      "bad argument #2 to 'submit' (string or table expected, got number)")
    assert.has_error(function() pool:submit(bg, "x", 1) end,
      "bad argument #3 to 'submit' (function expected, got number)")
    local co = coroutine.create(print)
    local f = function() return co end
    assert.has_error(function() pool:submit(bg, "audit", f) end,
      "cannot transfer upvalue 'co' of task 'audit' (thread)")
    assert.has_error(function() pool:drain("x") end,
      "bad argument #1 to 'drain' (tether.Context expected, got string)")
    check_invariant(pool:stats())
    assert.equal(0, pool:stats().submitted)
  end)
end)
