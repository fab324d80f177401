-- runtime.lua: the Lua runtime of tether -- worker states, transfer of
-- closures, interrupts -- measured through the Lua API.  bench/luv_peer.lua
-- measures the same shapes on luv's thread pool.
local B = dofile("bench/common.lua")
local tether = require "tether"

local now = tether.now
local bg = tether.background()

-- throughput submits 'n' tasks of 'fn' (with the task's number as its
-- argument) to a fresh pool of 2 workers whose queue holds them all, as
-- luv's queue does, and returns tasks per second up to the end of the
-- drain (median of 5 rounds).
local function throughput(n, fn)
  local rates = {}
  for r = 1, 5 do
    local p = tether.pool { name = "two", workers = 2, queue = n }
    B.warm(tether, p, 2)
    collectgarbage()
    local t0 = now()
    for i = 1, n do assert(p:submit(bg, "task", fn, i)) end
    assert(p:drain())
    rates[r] = n / (now() - t0)
    assert(p:stats().completed == n + 2, "tasks were lost")
  end
  return B.median(rates)
end

-- Closure tasks per second on 2 workers.
local function closure2()
  B.report("lua", "closure2_per_s", throughput(20000, function(_, i)
    return i + 1
  end))
end

-- Tasks per second on 2 workers for a closure with a 100-element table
-- upvalue (copied into the worker at each submission).
local function upvalue100()
  local t = {}
  for i = 1, 100 do t[i] = i end
  B.report("lua", "upvalue100_per_s", throughput(20000, function(_, i)
    return t[100] + i
  end))
end

-- The round trip of one no-op task: submit it to an idle pool of 2 workers
-- and wait for its result.
local function roundtrip()
  local p = tether.pool { name = "rt", workers = 2, queue = 4 }
  B.warm(tether, p, 2)
  local fn = function(_, i) return i end
  local n, rounds = 3000, {}
  for r = 1, 5 do
    collectgarbage()
    local t0 = now()
    for i = 1, n do
      local h = p:submit(bg, "rt", fn, i)
      assert(h:wait() == i)
    end
    rounds[r] = (now() - t0) / n * 1e6
  end
  assert(p:drain())
  B.report("lua", "roundtrip_us", B.median(rounds))
end

-- The cost of a new worker state: a new pool of one worker plus its first
-- task (thread, lua_State, libraries, package paths, loading the task),
-- minus the same round trip on a worker that already has its state.
local function newstate()
  local rounds = 40
  local fn = function() return 1 end
  local fresh, reuse = {}, {}
  for r = 1, rounds do
    collectgarbage()
    local t0 = now()
    local p = tether.pool { name = "fresh", workers = 1, queue = 1 }
    assert(p:submit(bg, "first", fn):wait() == 1)
    local t1 = now()
    assert(p:submit(bg, "again", fn):wait() == 1)
    local t2 = now()
    fresh[r], reuse[r] = t1 - t0, t2 - t1
    assert(p:drain())
  end
  B.report("lua", "newstate_us",
           (B.median(fresh) - B.median(reuse)) * 1e6)
end

-- Resident memory per idle worker: VmRSS before and after a pool of 50
-- workers that each ran one task, divided by 50.
local function rss()
  local n = 50
  collectgarbage()
  collectgarbage()
  local before = B.rss_kib()
  local p = tether.pool { name = "rss", workers = n, queue = n }
  B.warm(tether, p, n)
  collectgarbage()
  collectgarbage()
  local after = B.rss_kib()
  B.report("lua", "rss_worker_kib", (after - before) / n)
  assert(p:drain())
end

-- spin is the task the interrupt benchmarks stop: it says it started
-- (sending its context's deadline, or true), then never checks anything.
local function spin(ctx, ready)
  ready:send(ctx:deadline() or true)
  while true do end
end

-- wait_bounded waits for 'h' at most 5 s, so that an interrupt that never
-- comes fails the benchmark instead of hanging it.
local function wait_bounded(h)
  local limit, stop = tether.with_timeout(bg, 5)
  local ok, err = h:wait(limit)
  stop()
  local state = h:state()
  if state == "queued" or state == "running" then
    io.stderr:write("interrupt: the busy task was not stopped in 5 s\n")
    os.exit(1, false)
  end
  return ok, err
end

-- Time from the cancel of a pool's shutdown context to the resolution of
-- the handle of an op stuck in `while true do end` (interrupt = true).
local function interrupt_cancel()
  local us = {}
  for r = 1, 21 do
    local shutdown, cancel = tether.with_cancel(bg)
    local p = tether.pool { name = "spin", workers = 1, queue = 1,
                            interrupt = true, shutdown = shutdown }
    local ready = tether.chan(1)
    local h = assert(p:submit(bg, "spin", spin, ready))
    ready:recv()
    tether.sleep(0.002)  -- Let the task run deep into its loop.
    local t0 = now()
    cancel()
    local ok = wait_bounded(h)
    us[r] = (now() - t0) * 1e6
    assert(ok == nil, "the busy task returned")
    p:drain()
  end
  B.report("lua", "interrupt_cancel_us", B.median(us))
end

-- Time from an op's deadline (pool timeout = 20 ms) to the resolution of
-- its handle, for the same busy task.
local function interrupt_timeout()
  local us = {}
  local p = tether.pool { name = "spin", workers = 1, queue = 1,
                          interrupt = true, timeout = 0.02 }
  for r = 1, 21 do
    local ready = tether.chan(1)
    local h = assert(p:submit(bg, "spin", spin, ready))
    local deadline = ready:recv()
    assert(type(deadline) == "number", "the op has no deadline")
    local ok = wait_bounded(h)
    us[r] = (now() - deadline) * 1e6
    assert(ok == nil, "the busy task returned")
  end
  p:drain()
  B.report("lua", "interrupt_timeout_us", B.median(us))
end

-- Batches: 10,000 no-op closure tasks on a fresh pool of 2 workers whose
-- queue holds them all, submitted by pool:submit in a loop, by one
-- pool:submit_many, and run by one tether.map; tasks per second up to
-- the end of the drain (or of the map).  The three take turns in each
-- of 7 rounds, so that the machine's noise falls on all of them alike;
-- the median of each is reported.
local function batch()
  local n = 10000
  local fn = function(_, i) return i end
  local items = {}
  for i = 1, n do items[i] = i end
  local ways = {
    loop = function(p)
      for i = 1, n do assert(p:submit(bg, "task", fn, i)) end
      assert(p:drain())
    end,
    many = function(p)
      local hs, err = p:submit_many(bg, "task", fn, items)
      assert(err == nil and #hs == n, tostring(err))
      assert(p:drain())
    end,
    map = function(p)
      local _, errs = tether.map(p, bg, fn, items)
      assert(errs == nil, "map failed")
      assert(p:drain())
    end,
  }
  local rates = {loop = {}, many = {}, map = {}}
  for _ = 1, 7 do
    for _, way in ipairs {"loop", "many", "map"} do
      local p = tether.pool { name = "two", workers = 2, queue = n }
      B.warm(tether, p, 2)
      collectgarbage()
      local t0 = now()
      ways[way](p)
      local rate = n / (now() - t0)
      assert(p:stats().completed == n + 2, "tasks were lost")
      table.insert(rates[way], rate)
    end
  end
  B.report("lua", "batch_loop_per_s", B.median(rates.loop))
  B.report("lua", "batch_many_per_s", B.median(rates.many))
  B.report("lua", "batch_map_per_s", B.median(rates.map))
end

-- Every benchmark here needs tether.pool.
local function entry(name, metric, fn)
  return B.needs(tether, {"pool"}, {name, {metric}, fn})
end

B.run {
  entry("closure2", "closure2_per_s", closure2),
  entry("upvalue100", "upvalue100_per_s", upvalue100),
  entry("roundtrip", "roundtrip_us", roundtrip),
  entry("newstate", "newstate_us", newstate),
  entry("rss", "rss_worker_kib", rss),
  entry("interrupt_cancel", "interrupt_cancel_us", interrupt_cancel),
  entry("interrupt_timeout", "interrupt_timeout_us", interrupt_timeout),
  B.needs(tether, {"pool", "map"}, {"batch", {"batch_loop_per_s",
    "batch_many_per_s", "batch_map_per_s"}, batch}),
}
