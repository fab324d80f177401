-- A bounded wait for a condition that no latch or channel reports (a
-- pool's counters, a singleflight's waiters): it looks again every
-- millisecond and fails with 'what' after 'limit' seconds (default 5), so
-- that a condition that never comes fails the spec instead of hanging it.
local assert = require "luassert"
local tether = require "tether"

return function(cond, what, limit)
  local deadline = tether.now() + (limit or 5)
  while not cond() do
    assert(tether.now() < deadline,
           "waited " .. (limit or 5) .. " s in vain for " .. what)
    tether.sleep(0.001)
  end
end
