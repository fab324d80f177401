-- Scenario 6: recovered work.  tether.safe_go runs a function on another
-- thread; a Lua error inside it is caught and logged as one structured
-- line (name, error, traceback) on stderr, and the program goes on.
local tether = require "tether"

local h = tether.safe_go("send-welcome-mail", function(user)
  error("smtp server unreachable for " .. user)
end, "ann@example.com")

local _, err = h:wait()
print("the task failed with: " .. err.message)
print("and the program is still here; a healthy task next:")
print(tether.safe_go("add", function(a, b) return a + b end, 2, 3):wait())
