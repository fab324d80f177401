-- Scenario 14: saga.  Three steps, each with an action and a
-- compensation; step three fails, and the compensations of steps two and
-- one run, in that order, detached -- even when the saga's context was
-- canceled meanwhile.
local tether = require "tether"

local saga = tether.saga {
  name = "book-trip", compensation_timeout = 1,
  { name = "reserve-flight",
    action = function(ctx, s) s.log[#s.log + 1] = "flight reserved" end,
    compensate = function(ctx, s)
      s.log[#s.log + 1] = "flight released (ctx err: "
                          .. tostring(ctx:err()) .. ")"
    end },
  { name = "reserve-hotel",
    action = function(ctx, s) s.log[#s.log + 1] = "hotel reserved" end,
    compensate = function(ctx, s) s.log[#s.log + 1] = "hotel released" end },
  { name = "charge-card",
    action = function(ctx, s)
      s.cancel()                     -- the client hangs up meanwhile ...
      error("card declined")         -- ... and the step fails
    end,
    compensate = function(ctx, s) s.log[#s.log + 1] = "refund" end },
}

local ctx, cancel = tether.with_cancel(tether.background())
local state = { log = {}, cancel = cancel }
local ok, err, report = saga:run(ctx, state)
print("saga ok: " .. tostring(ok) .. ", error: " .. tostring(err))
print("stopped at: " .. tostring(report.failed_step))
for i, line in ipairs(state.log) do print(i, line) end
for _, st in ipairs(report.steps) do
  print(("  %-15s %s"):format(st.name, st.status))
end
