-- Scenario 3: detach, then bound.  The work detaches from its parent and
-- gets its own 50 ms timeout around a 100 ms sleep: it ends at ~50 ms with
-- deadline_exceeded whether or not the parent was canceled first.
local tether = require "tether"

local function work(parent)
  local ctx, cancel = tether.with_timeout(tether.without_cancel(parent), 0.05)
  local t0 = tether.now()
  local ok, err = tether.sleep(0.1, ctx)
  cancel()
  return ok, err, (tether.now() - t0) * 1000
end

local live = tether.background()
local dead, cancel = tether.with_cancel(tether.background())
cancel()

local cases = { { "live parent", live }, { "canceled parent", dead } }
for _, case in ipairs(cases) do
  local ok, err, ms = work(case[2])
  print(("%-16s slept fully: %-5s ended by: %-26s after %.0f ms")
    :format(case[1], tostring(ok == true), tostring(err), ms))
end
