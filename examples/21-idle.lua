-- Scenario 21: idle and resume.  A pool whose queue stays empty for its
-- idle period reports "pool idle" once (a log line on stderr and the
-- on_idle callback); the next submission reports "pool resuming".
local tether = require "tether"

local events = tether.chan(10)
local pool = tether.pool { name = "nightly", workers = 1, idle_after = 0.05,
  on_idle = function() events:send("idle") end,
  on_resume = function() events:send("resuming") end }

local bg = tether.background()
pool:submit(bg, "first", function() end):wait()
print("callback: pool " .. events:recv())
tether.sleep(0.2)
print(("after 200 ms more of quiet, %d more reports"):format(events:len()))
pool:submit(bg, "second", function() end):wait()
print("callback: pool " .. events:recv())
print("callback: pool " .. events:recv())
assert(pool:drain())
