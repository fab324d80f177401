-- Scenario 20: in-flight listing.  During a slow op, pool:inflight() lists
-- it with its name, tenant and start time.
local tether = require "tether"

local pool = tether.pool { name = "exports", workers = 2,
                           tenant_key = "tenant" }
local ctx = tether.with_value(tether.background(), "tenant", "acme")
local gate = tether.chan()
pool:submit(ctx, "export-invoices", function(_, g) g:recv() end, gate)
tether.sleep(0.02)

for _, op in ipairs(pool:inflight()) do
  print(("op #%d %-16s tenant=%s running for %.0f ms"):format(op.id,
    op.name, op.tenant, (tether.now() - op.started) * 1000))
end
gate:send(true)
assert(pool:drain())
print(("after the drain: %d ops in flight"):format(#pool:inflight()))
