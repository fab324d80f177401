-- Scenario 12: tenant quotas.  The tenant comes from a context value; a
-- tenant over its quota of queued plus running ops is refused with
-- quota_exceeded, another tenant within quota is not.
local tether = require "tether"

local bg = tether.background()
local pool = tether.pool { name = "api", workers = 4, queue = 100,
  tenant_key = "tenant", quotas = { default = 10, acme = 2 } }
local gate = tether.chan()
local function slow(ctx, g) g:recv() end

for _, tenant in ipairs { "acme", "acme", "acme", "globex", "globex" } do
  local ctx = tether.with_value(bg, "tenant", tenant)
  local h, err = pool:submit(ctx, "render", slow, gate)
  if h then
    print(("%-7s accepted"):format(tenant))
  else
    print(("%-7s refused: %s (code %s, tenant %s)"):format(tenant,
      err.message, err.code, err.tenant))
  end
end
gate:close()
assert(pool:drain())
