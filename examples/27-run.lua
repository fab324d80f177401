-- 27-run.lua: a script written for `tether run`.
--
--   bin/tether run examples/27-run.lua 200     (Ctrl-C it while it runs)
--   lua5.4 examples/27-run.lua                 (what `make examples` runs)
--
-- Its root context comes from tether.run_context(): a Ctrl-C (SIGINT) or
-- a supervisor's SIGTERM cancels it.  The script stops producing work and
-- returns; the runner drains every pool for up to --drain seconds (25 by
-- default), reports what it had to abandon, and exits with 130 or 143.
-- Outside the runner, run_context() is the same signal context, and the
-- pools drain when the script ends, as at any exit.
local tether = require "tether"

local ctx = tether.run_context()
local n = tonumber((...)) or 20

local jobs = tether.pool { name = "jobs", workers = 2, shutdown = ctx,
                           queue = 16 }
local submitted = 0
for i = 1, n do
  if ctx:err() then break end                -- signaled: produce no more
  local h = jobs:submit(ctx, { name = "job " .. i, wait = 5 },
    function(opctx, job)
      assert(require("tether").sleep(0.02, opctx))
      return job
    end, i)
  if h then submitted = submitted + 1 end
end
-- Between batches, wait for the pool to go idle without closing it.
local idle = jobs:wait_idle(ctx)
local s = jobs:stats()
print(("%d jobs submitted, %d done%s"):format(submitted, s.completed,
  idle and "" or ("; stopped by " .. tostring(ctx:cause()))))
if idle then assert(s.completed == n) end
