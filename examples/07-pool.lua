-- Scenario 7: a pool.  Five workers, a queue of twenty; submit refuses
-- with queue_full instead of blocking, the caller retries; a hundred
-- submissions all run, each once; drain waits for them.
local tether = require "tether"

local pool = tether.pool { name = "seed", workers = 5, queue = 20 }
local bg = tether.background()
local runs = tether.chan(100)
local refused = 0

for i = 1, 100 do
  while true do
    local h, err = pool:submit(bg, "job-" .. i, function(ctx, n, out)
      tether.sleep(0.001)
      out:send(n)
    end, i, runs)
    if h then break end
    assert(err.code == "queue_full")
    refused = refused + 1
    tether.sleep(0.001)   -- back off, then try again
  end
end
assert(pool:drain(tether.with_timeout(bg, 30)))

local seen, count = {}, 0
while runs:len() > 0 do
  local n = runs:recv()
  assert(not seen[n], "ran twice")
  seen[n], count = true, count + 1
end
local s = pool:stats()
print(("%d jobs ran, each once; %d submissions were refused with "
       .. "queue_full and retried"):format(count, refused))
print(("stats: submitted=%d completed=%d rejected=%d"):format(
  s.submitted, s.completed, s.rejected))
