-- Scenario 5: no done channel.  ctx:done() of a detached (or background)
-- context is nil, and a select on it with tether.default takes the
-- default branch at once.
local tether = require "tether"

local parent, cancel = tether.with_cancel(tether.background())
local detached = tether.without_cancel(parent)
cancel()

print("background():done() = " .. tostring(tether.background():done()))
print("detached:done()      = " .. tostring(detached:done()))
local t0 = tether.now()
local i = tether.select(detached:done(), tether.default)
print(("select took case %d (%s) in %.3f ms"):format(i,
  i == 2 and "default" or "done", (tether.now() - t0) * 1000))
