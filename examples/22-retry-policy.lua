-- Scenario 22: a retry policy per op.  Each submission carries its own
-- attempts and backoff; the two ops retry differently.  Waiting retries
-- sit on the timer thread, not on a sleeping worker.
local tether = require "tether"

local bg = tether.background()
local pool = tether.pool { name = "webhooks", workers = 2 }
local function flaky(ctx, log, name)
  log:send(("%s attempt at +%.0f ms"):format(name,
    (tether.now() - ctx:value("t0")) * 1000))
  error("endpoint timed out")
end
local ctx = tether.with_value(bg, "t0", tether.now())
local log = tether.chan(100)
local a = pool:submit(ctx, { name = "partner-a",
  retry = { attempts = 4, backoff = 0.02, factor = 2 } }, flaky, log,
  "partner-a")
local b = pool:submit(ctx, { name = "partner-b",
  retry = { attempts = 2, backoff = 0.1 } }, flaky, log, "partner-b")
a:wait(); b:wait()
while log:len() > 0 do print((log:recv())) end
for _, d in ipairs(pool:dead_letters()) do
  print(("dead letter: %s after %d attempts"):format(d.name, d.attempts))
end
