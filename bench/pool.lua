-- pool.lua: tether's seed pool, groups and singleflight through the Lua
-- API, in the shapes of bench_core.c and the Go peers (bench/go).
local B = dofile("bench/common.lua")
local tether = require "tether"

local now = tether.now
local bg = tether.background()

-- The seed pool: no-op closures go through 5 workers and a queue of 20; a
-- refused submission ("queue_full") is retried at once.  Tasks per second
-- are counted from the first submission to the end of the drain.
local function pool()
  local n, rates = 20000, {}
  local noop = function() end
  for r = 1, 5 do
    local p = tether.pool { name = "bench", workers = 5, queue = 20 }
    B.warm(tether, p, 5)
    collectgarbage()
    local t0 = now()
    for _ = 1, n do
      local h, err = p:submit(bg, "noop", noop)
      while not h do
        assert(err.code == "queue_full", tostring(err))
        h, err = p:submit(bg, "noop", noop)
      end
    end
    assert(p:drain())
    rates[r] = n / (now() - t0)
    local st = p:stats()
    assert(st.completed == n + 5, "pool: tasks were lost")
  end
  B.report("lua", "pool_tasks_per_s", B.median(rates))
end

-- A group, two no-op tasks and wait.
local function group2()
  local n = 5000
  local noop = function() end
  local function once()
    local g = tether.group(bg)
    g:go(noop)
    g:go(noop)
    local err = g:wait()
    assert(err == nil, tostring(err))
  end
  for _ = 1, n // 10 do once() end
  collectgarbage()
  local t0 = now()
  for _ = 1, n do once() end
  B.report("lua", "group2_ns", (now() - t0) / n * 1e9)
end

-- Singleflight with 1,000 callers on one key.  Each caller is a task on
-- its own worker of a 1,000-worker pool (a Lua caller blocks its thread,
-- as a goroutine does); the callers report ready, wait on a gate and call
-- at once.  The function returns once every caller has joined its run
-- (sf:waiting), looking every 20 µs.  Reported: how many times the
-- function ran, and the wall time from opening the gate until the last
-- caller returned (medians over the rounds).
local function singleflight()
  local callers, rounds = 1000, 7
  local p = tether.pool { name = "callers", workers = callers,
                          queue = callers }
  B.warm(tether, p, callers)
  local walls, calls = {}, {}
  for r = 1, rounds do
    local sf = tether.singleflight()
    local ready = tether.chan(callers)
    local ran = tether.chan(callers)
    local gate, open = tether.with_cancel(bg)
    local hs = {}
    for i = 1, callers do
      hs[i] = assert(p:submit(bg, "caller", function(ctx, sfl, rd, g, rn, n)
        rd:send(true)
        g:wait()
        local v, err = sfl:call(ctx, "key", function(wctx)
          rn:send(true)
          while sfl:waiting("key") < n do tether.sleep(20e-6, wctx) end
          return 42
        end, {timeout = 5})
        assert(v == 42, tostring(err))
        return tether.now()
      end, sf, ready, gate, ran, callers))
    end
    for _ = 1, callers do ready:recv() end
    collectgarbage()
    local t0 = now()
    open()
    local last = t0
    for i = 1, callers do
      local t = assert(hs[i]:wait())
      if t > last then last = t end
    end
    walls[r] = (last - t0) * 1e3
    calls[r] = ran:len()
  end
  assert(p:drain())
  B.report("lua", "sf_wall_ms", B.median(walls))
  B.report("lua", "sf_calls", B.median(calls))
end

B.run {
  B.needs(tether, {"pool"}, {"pool", {"pool_tasks_per_s"}, pool}),
  B.needs(tether, {"group"}, {"group2", {"group2_ns"}, group2}),
  B.needs(tether, {"pool", "singleflight"},
          {"singleflight", {"sf_wall_ms", "sf_calls"}, singleflight}),
}
