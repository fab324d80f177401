-- Scenario 8: shutdown.  Every op also listens to the pool's shutdown
-- context; when it ends, in-flight ops see their context canceled and stop
-- gracefully, with the shutdown's cause.
local tether = require "tether"

local shutdown, stop = tether.with_cancel_cause(tether.background())
local pool = tether.pool { name = "ingest", workers = 3, shutdown = shutdown }
local started = tether.chan(3)

local handles = {}
for i = 1, 3 do
  handles[i] = pool:submit(tether.background(), "stream-" .. i,
    function(ctx, n, st)
      st:send(n)
      local batches = 0
      while not ctx:err() do          -- work in small steps, check often
        batches = batches + 1
        tether.sleep(0.005, ctx)
      end
      return batches, ctx:cause()
    end, i, started)
end
for _ = 1, 3 do started:recv() end
tether.sleep(0.05)
print("shutting down ...")
stop("deploy of v2")
for i, h in ipairs(handles) do
  local batches, cause = h:wait()
  print(("stream-%d stopped cleanly after %d batches (cause: %s)")
    :format(i, batches, tostring(cause)))
end
assert(pool:drain())
