-- luv_peer.lua: the peers of runtime.lua on luv's thread pool
-- (uv.new_work), run under lua5.4 with Debian's lua-luv.  run.sh sets
-- UV_THREADPOOL_SIZE: 2 for the throughput and round-trip shapes, 50 for
-- the memory shape, which runs only when asked for by name (libuv reads
-- the size once per process).
local B = dofile("bench/common.lua")
local uv = require "luv"

local function now() return uv.hrtime() / 1e9 end

-- warm runs one batch of works so that each pool thread has made its Lua
-- state (luv makes one per thread, on the thread's first work).
local function warm(work, n)
  for i = 1, n do work:queue(i) end
  uv.run()
end

-- throughput queues 'n' works with the arguments 'args(i)' and returns
-- works per second until the last result came back to the loop (median of
-- 5 rounds).
local function throughput(n, work_fn, args)
  local done = 0
  local work = uv.new_work(work_fn, function() done = done + 1 end)
  warm(work, 200)
  local rates = {}
  for r = 1, 5 do
    done = 0
    collectgarbage()
    local t0 = now()
    for i = 1, n do work:queue(args(i)) end
    uv.run()
    rates[r] = n / (now() - t0)
    assert(done == n, "works were lost")
  end
  return B.median(rates)
end

-- Works per second on 2 threads; luv copies the function once (new_work)
-- and the arguments at each queue.
local function closure2()
  B.report("luv", "closure2_per_s", throughput(20000, function(i)
    return i + 1
  end, function(i) return i end))
end

-- luv cannot send a table or an upvalue to a work: the closest shape
-- passes the 100 elements as 100 arguments, and the work rebuilds the
-- table.
local function upvalue100()
  local t = {}
  for i = 1, 100 do t[i] = i end
  local unpack = table.unpack
  B.report("luv", "upvalue100_per_s", throughput(20000, function(...)
    local u = {...}
    return u[100]
  end, function() return unpack(t) end))
end

-- The round trip of one work: queue it and run the loop until its result
-- came back.
local function roundtrip()
  local got
  local work = uv.new_work(function(i) return i end,
                           function(i) got = i end)
  warm(work, 10)
  local n, rounds = 3000, {}
  for r = 1, 5 do
    collectgarbage()
    local t0 = now()
    for i = 1, n do
      work:queue(i)
      uv.run()
      assert(got == i)
    end
    rounds[r] = (now() - t0) / n * 1e6
  end
  B.report("luv", "roundtrip_us", B.median(rounds))
end

-- Resident memory per pool thread: VmRSS before and after 50 works ran at
-- once on a pool of 50 threads (UV_THREADPOOL_SIZE=50), each sleeping
-- 50 ms so that every thread takes one, divided by 50.
local function rss()
  local n = tonumber(os.getenv("UV_THREADPOOL_SIZE") or "")
  assert(n == 50, "run with UV_THREADPOOL_SIZE=50")
  local work = uv.new_work(function()
    require("luv").sleep(50)
    return true
  end, function() end)
  collectgarbage()
  collectgarbage()
  local before = B.rss_kib()
  for _ = 1, n do work:queue() end
  uv.run()
  collectgarbage()
  collectgarbage()
  B.report("luv", "rss_worker_kib", (B.rss_kib() - before) / n)
end

B.run {
  {"closure2", {"closure2_per_s"}, closure2},
  {"upvalue100", {"upvalue100_per_s"}, upvalue100},
  {"roundtrip", {"roundtrip_us"}, roundtrip},
  -- This one needs a process of its own, with UV_THREADPOOL_SIZE=50.
  {"rss", {"rss_worker_kib"}, rss, explicit = true},
}
