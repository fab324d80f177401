-- Scenario 19: stop handles.  submit returns a handle; stopping five of
-- ten queued ops before they run leaves exactly five completed; stopping
-- after the run is a no-op that returns false.
local tether = require "tether"

local bg = tether.background()
local pool = tether.pool { name = "thumbnails", workers = 1, queue = 20 }
local gate = tether.chan()
pool:submit(bg, "blocker", function(ctx, g) g:recv() end, gate)

local hs = {}
for i = 1, 10 do
  hs[i] = pool:submit(bg, "thumb-" .. i, function(ctx, n) return n end, i)
end
for i = 1, 10, 2 do
  print(("stop(thumb-%d) while queued -> %s"):format(i,
    tostring(hs[i]:stop())))
end
gate:send(true)
assert(pool:drain())
local completed = 0
for i = 1, 10 do
  if hs[i]:state() == "done" then completed = completed + 1 end
end
print(("%d completed, %d stopped"):format(completed,
  pool:stats().stopped))
print("stop(thumb-2) after it ran -> " .. tostring(hs[2]:stop()))
