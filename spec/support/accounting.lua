-- The accounting identity of a pool's stats (DESIGN section 5), in one
-- place for every spec:
--   submitted = completed + failed + stopped + dead + spilled + abandoned
--               + queued + inflight
local assert = require "luassert"

local M = {}

-- M.sum returns the right-hand side of the identity.
function M.sum(s)
  return s.completed + s.failed + s.stopped + s.dead + s.spilled
         + s.abandoned + s.queued + s.inflight
end

-- M.check asserts the identity, with 'what' in the message.
function M.check(s, what)
  assert.equal(s.submitted, M.sum(s), what)
end

-- M.describe formats the stats for a failure message.
function M.describe(s)
  return ("submitted %d, completed %d + failed %d + stopped %d + dead %d"
    .. " + spilled %d + abandoned %d + queued %d + inflight %d"):format(
    s.submitted, s.completed, s.failed, s.stopped, s.dead, s.spilled,
    s.abandoned, s.queued, s.inflight)
end

return M
