-- Scenario 9: errgroup plus detached.  Two critical fetches run in a
-- tether.group; when one fails, the group's context is canceled and wait
-- returns that error, while a best-effort audit started detached from the
-- request (without_cancel, with its own bound) still completes.
local tether = require "tether"

local request = tether.with_value(tether.background(), "request_id", "r-42")
local g, gctx = tether.group(request)

g:go(function(ctx)
  tether.sleep(0.01)
  error("inventory service: 503")
end)
g:go(function(ctx)
  local ok, err = tether.sleep(1, ctx)      -- stops when the group fails
  return ok, err
end)

local audit_ctx, audit_done = tether.with_timeout(
  tether.without_cancel(gctx), 2)
local audit = tether.go(function(ctx)
  tether.sleep(0.05)                        -- outlives the group's failure
  return "audit written for " .. ctx:value("request_id"), ctx:err()
end, audit_ctx)

local err = g:wait()
print("group failed with: " .. tostring(err))
print("group context: " .. tostring(gctx:err()) .. " (cause: "
      .. tostring(gctx:cause()) .. ")")
local msg, aerr = audit:wait()
audit_done()
print(("detached audit: %s, its context err = %s"):format(msg,
  tostring(aerr)))
