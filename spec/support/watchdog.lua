-- A watchdog for long specs: a pool worker (tether.shutdown() waits for
-- executor threads, not for pool workers) that ends the process with a
-- message when no beat comes for 'limit' seconds, so that a hang fails
-- instead of stalling the run.  Used by the sweep and the stress specs.
local tether = require "tether"

return function(what, limit)
  local beats = tether.chan(1 << 16)
  local pool = tether.pool { name = what .. "-watchdog", workers = 1,
                             queue = 1, quiet = true }
  local h = pool:submit(tether.background(), "watchdog",
    function(_, ch, secs, name)
      local t = require "tether"
      local last = "start"
      while true do
        local ctx, cancel = t.with_timeout(t.background(), secs)
        local label, ok, err = ch:recv(ctx)
        cancel()
        if err ~= nil then
          io.stderr:write(("%s: no progress for %d s after '%s'; "
            .. "ending the process\n"):format(name, secs, last))
          io.stderr:flush()
          os.exit(3)
        end
        if not ok then return end
        last = label
      end
    end, beats, limit, what)
  return {
    beat = function(label) beats:try_send(label) end,
    stop = function()
      beats:close()
      h:wait()
      assert(pool:drain(), "the watchdog's pool did not drain")
    end,
  }
end
