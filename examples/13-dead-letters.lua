-- Scenario 13: dead letters.  An op that fails every retry lands in the
-- dead-letter queue with its name, error, attempts and tenant; the queue
-- is also a channel a supervisor can read, and a dead letter can be
-- retried or dropped later, as in a dead set.
local tether = require "tether"

local bg = tether.background()
local dlq = tether.chan(100)
local pool = tether.pool { name = "billing", workers = 2, dlq = dlq,
  tenant_key = "tenant", retry = { attempts = 3, backoff = 0.01 } }

local gateway_up = tether.chan(1)   -- empty: the gateway is down
local function charge(ctx, amount, up)
  local _, ok = up:try_recv()
  if not ok then error("payment gateway unreachable") end
  up:send(true)                     -- leave it up for the next charge
  return "charged " .. amount
end

local ctx = tether.with_value(bg, "tenant", "acme")
local h = pool:submit(ctx, "charge-invoice-981", charge, 120, gateway_up)
print("op result:", h:wait())

local d = dlq:recv()
print(("dead letter #%d: %s (tenant %s) failed %d times: %s"):format(d.id,
  d.name, d.tenant, d.attempts, d.error))

gateway_up:send(true)               -- the gateway is back
local again = pool:retry_dead(d.id)
print("retried from the dead set:", again:wait())
print(("dead letters left: %d"):format(#pool:dead_letters()))
assert(pool:drain())
