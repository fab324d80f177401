-- ctx.lua: tether's contexts through the Lua API, in the shapes of
-- bench_core.c and the Go peers (bench/go/ctx.go).
local B = dofile("bench/common.lua")
local tether = require "tether"

local now = tether.now
local bg = tether.background()

-- per_op runs 'f' n times after a warm-up of n/10 runs and returns the
-- mean time of one run in nanoseconds.  A collection runs first, so each
-- benchmark pays for its own garbage only.
local function per_op(n, f)
  for _ = 1, n // 10 do f() end
  collectgarbage()
  local t0 = now()
  for _ = 1, n do f() end
  return (now() - t0) / n * 1e9
end

local function with_cancel()
  B.report("lua", "with_cancel_ns", per_op(300000, function()
    local _, cancel = tether.with_cancel(bg)
    cancel()
  end))
end

local function with_timeout()
  B.report("lua", "with_timeout_ns", per_op(200000, function()
    local _, cancel = tether.with_timeout(bg, 3600)
    cancel()
  end))
end

-- The detached shape: with_timeout(without_cancel(parent)) under a live
-- cancelable parent, then its cancel.
local function detach_bound()
  local parent, stop = tether.with_cancel(bg)
  B.report("lua", "detach_bound_ns", per_op(200000, function()
    local _, cancel = tether.with_timeout(tether.without_cancel(parent), 3600)
    cancel()
  end))
  stop()
end

-- A lookup of the key held by the outermost of ten value layers.
local function value10()
  local ctx = bg
  for i = 0, 9 do ctx = tether.with_value(ctx, "k" .. i, i) end
  local v
  B.report("lua", "value10_ns", per_op(1000000, function()
    v = ctx:value("k0")
  end))
  assert(v == 0, "value10: wrong value")
end

local ROUNDS = 15

-- time_cancel cancels a tree through 'cancel' and returns the time the
-- call took in microseconds, checking that every context in 'all' is done.
local function time_cancel(cancel, all)
  collectgarbage()
  collectgarbage("stop")
  local t0 = now()
  cancel()
  local us = (now() - t0) * 1e6
  collectgarbage("restart")
  for i = 1, #all do
    assert(all[i]:err() == tether.canceled,
           "propagation: a descendant is still live after cancel")
  end
  return us
end

-- A parent with 10,000 direct children is canceled.
local function prop_flat()
  local us = {}
  for r = 1, ROUNDS do
    local root, cancel = tether.with_cancel(bg)
    local kids, stops = {}, {}
    for i = 1, 10000 do kids[i], stops[i] = tether.with_cancel(root) end
    us[r] = time_cancel(cancel, kids)
    for i = 1, #stops do stops[i]() end  -- No-ops now, as in Go's peer.
  end
  B.report("lua", "prop_flat_us", B.median(us))
end

-- A root with 100 chains of 100 nested contexts is canceled.
local function prop_chain()
  local us = {}
  for r = 1, ROUNDS do
    local root, cancel = tether.with_cancel(bg)
    local all, stops = {}, {}
    for _ = 1, 100 do
      local ctx = root
      for _ = 1, 100 do
        local stop
        ctx, stop = tether.with_cancel(ctx)
        all[#all + 1], stops[#stops + 1] = ctx, stop
      end
    end
    us[r] = time_cancel(cancel, all)
    for i = 1, #stops do stops[i]() end
  end
  B.report("lua", "prop_chain_us", B.median(us))
end

B.run {
  {"with_cancel", {"with_cancel_ns"}, with_cancel},
  {"with_timeout", {"with_timeout_ns"}, with_timeout},
  {"detach_bound", {"detach_bound_ns"}, detach_bound},
  {"value10", {"value10_ns"}, value10},
  {"prop_flat", {"prop_flat_us"}, prop_flat},
  {"prop_chain", {"prop_chain_us"}, prop_chain},
}
