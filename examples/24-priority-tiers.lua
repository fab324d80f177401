-- Scenario 24: priority tiers.  Critical work gets its own tier (10
-- workers), routine work another (50 workers): a flood of routine work
-- does not delay critical work, and routine work still progresses.
local tether = require "tether"

local bg = tether.background()
local pool = tether.pool { name = "orders", queue = 10000,
  priorities = { high = { workers = 10 }, low = { workers = 50 } } }
local routine_done = tether.chan(10000)
for _ = 1, 3000 do
  pool:submit(bg, { name = "reindex", priority = "low" }, function(ctx, d)
    tether.sleep(0.005)
    d:send(true)
  end, routine_done)
end
local lat = {}
for i = 1, 50 do
  local t0 = tether.now()
  pool:submit(bg, { name = "charge", priority = "high" },
              function() end):wait()
  lat[i] = (tether.now() - t0) * 1000
  tether.sleep(0.002)
end
table.sort(lat)
print(("critical round trip with 3000 routine ops queued: median %.2f ms, "
       .. "max %.2f ms"):format(lat[25], lat[50]))
print(("routine ops completed meanwhile: %d"):format(routine_done:len()))
assert(pool:drain())
print(("all done: %d completed"):format(pool:stats().completed))
