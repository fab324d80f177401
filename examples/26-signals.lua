-- 26-signals.lua: Ctrl-C a batch.
--
-- The batch listens for SIGINT through a signal context, which is also
-- the shutdown context of its pool: when the signal comes, the items
-- running see their contexts canceled and stop, the items still queued
-- stop at once, and the audit of every item that finished (detached work,
-- on a pool of its own) still completes.  Nothing is lost silently: each
-- item ends as done or as stopped by the signal, and the stats say so.
--
--   lua5.4 examples/26-signals.lua          sends itself the SIGINT after
--                                           the third item, as a Ctrl-C
--                                           would (what `make examples`
--                                           runs)
--   lua5.4 examples/26-signals.lua manual   waits for your Ctrl-C
local tether = require "tether"

local manual = arg and arg[1] == "manual"
local N = 12

local ctx, stop = tether.signal_context(tether.background(), "INT")
local audit = tether.pool { name = "audit", workers = 1 }
local batch = tether.pool { name = "batch", workers = 2, shutdown = ctx,
                            quiet = true, dead_letters = 0, failures = 0 }
local audited = tether.chan(N)

print(("processing %d items on 2 workers; %s"):format(N, manual
  and "press Ctrl-C to stop the batch"
  or "a SIGINT comes after the third item"))

for i = 1, N do
  batch:submit(ctx, "item " .. i, function(opctx, item, auditor, log, self)
    local t = require "tether"
    -- The work: it checks its context, as work that may be stopped does.
    local ok = t.sleep(manual and 1 or 0.1, opctx)
    if not ok then error(opctx:cause()) end
    print("  item " .. item .. " done")
    -- The audit is detached: its context drops the batch's cancellation.
    assert(auditor:submit(opctx, "audit " .. item, function(_, n, out)
      require("tether").sleep(0.05)   -- writing the audit record
      out:send(n)
    end, item, log))
    -- Unattended, the third item plays the user: SIGINT to this process.
    if self and item == 3 then os.execute("kill -INT $PPID") end
  end, i, audit, audited, not manual)
end

-- The batch ends either way: all done, or stopped by the signal.
assert(batch:drain())
if ctx:err() then
  print(("SIGINT: the batch stops (%s)"):format(ctx:cause()))
end
assert(audit:drain())   -- every audit of a finished item completes
stop()

local b = batch:stats()
local written = audited:len()
print(("batch: %d done, %d stopped by the signal; audit: %d of %d "
       .. "written"):format(b.completed, b.failed, written, b.completed))
assert(written == b.completed, "an audit was lost")
assert(b.completed + b.failed == N, "an item was lost")
if not manual then
  assert(ctx:cause().signal == "INT")
  assert(b.completed >= 3 and b.completed < N)
end
