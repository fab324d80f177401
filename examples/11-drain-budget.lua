-- Scenario 11: drain with a budget.  Slow ops and a tight drain deadline:
-- drain returns nil, deadline_exceeded on time, and the ops still running
-- stay accounted for; a second drain later waits for them.
local tether = require "tether"

local bg = tether.background()
local pool = tether.pool { name = "reports", workers = 2, queue = 10 }
for i = 1, 4 do
  pool:submit(bg, "report-" .. i, function() tether.sleep(0.2) end)
end
tether.sleep(0.01)

local t0 = tether.now()
local ok, err = pool:drain(tether.with_timeout(bg, 0.05))
local s = pool:stats()
print(("drain(50 ms) -> %s, %s after %.0f ms"):format(tostring(ok),
  tostring(err), (tether.now() - t0) * 1000))
print(("still accounted for: %d running, %d queued (submitted %d = "
       .. "completed %d + queued + running)"):format(s.inflight, s.queued,
       s.submitted, s.completed))
assert(pool:drain())
s = pool:stats()
print(("second drain -> true; completed %d of %d"):format(s.completed,
  s.submitted))
