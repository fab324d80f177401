-- interrupt = true: a busy op is stopped wherever its Lua code runs
-- (coroutines, message handlers, init, finalizers), a swallowed interrupt
-- is raised again, debug.sethook cannot remove the hook, and __close
-- handlers run to completion within a grace period (DESIGN section 2).
local tether = require "tether"
local accounting = require "spec.support.accounting"

local bg = tether.background()

-- busy submits 'fn' (with the extra arguments) to a fresh pool of one
-- worker with interrupts, waits until the op says it is running (it
-- sends on its 'ready' channel, its first argument after ctx; or init
-- does), then cancels the pool's shutdown context and waits at most 5 s
-- for the handle.  It returns the handle's results, its state and the
-- pool (which the caller drains).
local function busy(opts, fn, ...)
  local shutdown, cancel = tether.with_cancel(bg)
  local ready = opts.ready or tether.chan(1)
  local pool = tether.pool { name = opts.name or "busy", workers = 1,
    interrupt = true, quiet = true, shutdown = shutdown, init = opts.init }
  local h = assert(pool:submit(bg, "busy", fn, ready, ...))
  local limit = tether.with_timeout(bg, 5)
  local _, ok = ready:recv(limit)
  assert.is_true(ok, "the op never said it was running")
  cancel()
  local v, err = h:wait(limit)
  return v, err, h:state(), pool
end

-- stopped asserts that the op ended with the shutdown's cancellation and
-- that the pool drains and can be used no more (its worker is free).
local function stopped(v, err, state, pool)
  assert.equal("failed", state, "the op is still " .. state)
  assert.is_nil(v)
  assert.equal(tether.canceled, err)
  assert.is_true(pool:drain(tether.with_timeout(bg, 5)))
end

describe("interrupts", function()
  it("stop a plain busy loop", function()
    stopped(busy({}, function(ctx, ready)
      ready:send(true)
      while true do end
    end))
  end)

  it("raise a swallowed interrupt again: pcall, xpcall, load's reader",
     function()
    stopped(busy({}, function(ctx, ready)
      ready:send(true)
      while true do pcall(function() while true do end end) end
    end))
    stopped(busy({}, function(ctx, ready)
      ready:send(true)
      while true do
        xpcall(function() while true do end end, function(e) return e end)
      end
    end))
    stopped(busy({}, function(ctx, ready)
      ready:send(true)
      while true do load(function() while true do end end) end
    end))
  end)

  it("reach a coroutine made by the pool's init", function()
    local v, err, state, pool = busy({
      init = function() _G.SPIN = coroutine.wrap(function()
        while true do end
      end) end,
    }, function(ctx, ready)
      ready:send(true)
      _G.SPIN()
    end)
    stopped(v, err, state, pool)
    -- And one resumed again and again under pcall.
    stopped(busy({
      init = function() _G.CO = coroutine.create(function()
        while true do end
      end) end,
    }, function(ctx, ready)
      ready:send(true)
      while true do pcall(coroutine.resume, _G.CO) end
    end))
  end)

  it("reach a message handler that loops", function()
    -- The handler of the interrupt itself...
    stopped(busy({}, function(ctx, ready)
      ready:send(true)
      xpcall(function() while true do end end,
             function() while true do end end)
    end))
    -- ...and one that was already looping for an error of the op's own.
    stopped(busy({}, function(ctx, ready)
      xpcall(function() error("own error") end,
             function() ready:send(true) while true do end end)
    end))
  end)

  it("reach an init that never returns", function()
    local ready = tether.chan(1)
    local v, err, state, pool = busy({ ready = ready,
      init = function() ready:send(true) while true do end end,
    }, function() return "never" end)
    assert.equal("failed", state)
    assert.is_nil(v)
    assert.equal("init of pool 'busy' failed: context canceled",
                 err.message)
    assert.is_true(pool:drain(tether.with_timeout(bg, 5)))
  end)

  it("cannot be removed by debug.sethook", function()
    local pool = tether.pool { name = "hook", workers = 1,
                               interrupt = true, quiet = true }
    local _, err = pool:submit(bg, "sethook", function()
      debug.sethook()
    end):wait()
    assert.matches("debug.sethook is disabled in a pool with interrupt = "
                   .. "true", err.message)
    assert.is_true(pool:drain())
    -- Even if the error is swallowed, the hook stays.
    stopped(busy({}, function(ctx, ready)
      pcall(debug.sethook)
      pcall(debug.sethook, coroutine.running())
      ready:send(true)
      while true do end
    end))
  end)

  it("reach a finalizer that loops", function()
    stopped(busy({}, function(ctx, ready)
      ready:send(true)
      while true do
        setmetatable({}, { __gc = function() while true do end end })
        collectgarbage()
      end
    end))
  end)

  it("let __close handlers finish: a semaphore token comes back",
     function()
    local sem = tether.chan(1)
    sem:send("token")
    local v, err, state, pool = busy({}, function(ctx, ready, s)
      local _ <close> = setmetatable({ s:recv() }, {
        __close = function(t)
          -- Cleanup that takes some instructions, then returns the token.
          local sum = 0
          for i = 1, 100000 do sum = sum + i end
          s:send(t[1])
        end })
      ready:send(true)
      while true do end
    end, sem)
    stopped(v, err, state, pool)
    assert.equal("token", sem:try_recv())
  end)

  it("let __close handlers of a coroutine finish too", function()
    local sem = tether.chan(1)
    sem:send("token")
    stopped(busy({}, function(ctx, ready, s)
      local co = coroutine.wrap(function()
        local _ <close> = setmetatable({ s:recv() }, {
          __close = function(t) s:send(t[1]) end })
        ready:send(true)
        while true do end
      end)
      co()
    end, sem))
    assert.equal("token", sem:try_recv())
  end)

  it("bound the grace period: a __close handler that loops is stopped "
     .. "too", function()
    local closing = tether.chan(1)
    stopped(busy({}, function(ctx, ready, c)
      local _ <close> = setmetatable({}, { __close = function()
        c:send("closing")
        while true do end
      end })
      ready:send(true)
      while true do end
    end, closing))
    assert.equal("closing", closing:try_recv())
  end)

  it("stop a busy loop at its deadline: the op and its context end with "
     .. "deadline_exceeded, however late the timer thread wakes", function()
    -- The hook reads the clock itself and the pool ends the attempt's
    -- context as its timer would, so what holds the context (here the
    -- main state) never sees it merely canceled.  Several rounds: the
    -- worker and the timer thread race to end it, and either way the
    -- error must be the same.
    local pool = tether.pool { name = "deadline", workers = 1,
                               interrupt = true, quiet = true,
                               timeout = 0.01, retry = { attempts = 2 } }
    for _ = 1, 5 do
      local got = tether.chan(2)
      local h = assert(pool:submit(bg, "spin", function(ctx, out)
        out:send(ctx)
        while true do end
      end, got))
      local _, err = h:wait(tether.with_timeout(bg, 5))
      assert.equal(tether.deadline_exceeded, err)
      assert.equal("failed", h:state())
      for _ = 1, 2 do    -- each attempt's context
        local ctx = got:recv(tether.with_timeout(bg, 5))
        assert.is_true(ctx:wait(5))
        assert.equal(tether.deadline_exceeded, ctx:err())
      end
    end
    assert.is_true(pool:drain())
    local st = pool:stats()
    assert.equal(5, st.submitted)
    assert.equal(5, st.retried)
    assert.equal(5, st.dead + st.failed)
    accounting.check(st, "after the deadline stops")
  end)

  it("let a C function run to its end", function()
    local pool = tether.pool { name = "c", workers = 1, interrupt = true,
                               quiet = true, timeout = 0.01 }
    local after = tether.chan(1)
    local t0 = tether.now()
    local _, err = pool:submit(bg, "sleep", function(ctx, a)
      tether.sleep(0.2)          -- C: not interrupted
      a:send(true)               -- Lua goes on after it...
      while true do end          -- ...until the hook looks
    end, after):wait(tether.with_timeout(bg, 5))
    assert.equal(tether.deadline_exceeded, err)
    assert.is_true(tether.now() - t0 >= 0.2)
    assert.is_true(after:try_recv())
    assert.is_true(pool:drain())
  end)
end)
