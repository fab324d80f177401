-- Scenario 23: causes.  After a drain, each failed op's cause can be
-- inspected: deadline_exceeded for ops that timed out, canceled or the
-- given cause for ops canceled explicitly, the Lua error otherwise.
local tether = require "tether"

local bg = tether.background()
local shutdown, stop = tether.with_cancel_cause(bg)
local pool = tether.pool { name = "batch", workers = 3, timeout = 0.05,
                           shutdown = shutdown }
local function wait_then_raise(ctx)
  local _, err = tether.sleep(10, ctx)
  error(err)
end
pool:submit(bg, "too-slow", wait_then_raise)
local running = tether.chan(1)
pool:submit(bg, { name = "interrupted", timeout = 10 }, function(ctx, r)
  r:send(true)
  wait_then_raise(ctx)
end, running)
pool:submit(bg, "buggy", function() error("nil index in parser") end)
running:recv()
tether.sleep(0.1)
stop("operator pressed stop")
assert(pool:drain())
for _, f in ipairs(pool:dead_letters()) do
  print(("%-12s cause: %s"):format(f.name, tostring(f.cause)))
end
