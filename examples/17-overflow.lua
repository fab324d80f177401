-- Scenario 17: overflow to disk.  A burst three times what a pool can
-- hold (workers plus queue) arrives at once: what does not fit goes to a
-- durable store (SQLite here; "redis://HOST:PORT" works the same) instead
-- of being refused.  A separate process, `tether worker`, drains the
-- store later, and the script checks that no order was lost.  Only named
-- ops ("module:function") with plain-data arguments can travel: the
-- worker runs only the modules it is told to allow (--require).
--
-- In production the two sides are two commands: `tether run --store URL
-- app.lua` gives every pool of app.lua that store as its overflow, and
-- `tether worker --store URL --require orders` drains it until SIGTERM.
local tether = require "tether"

local bg = tether.background()

-- A scratch directory with the module whose function the ops name.
local dir = os.tmpname()
os.remove(dir)
assert(os.execute("mkdir -m 700 " .. dir))
local done = dir .. "/audited.log"
local f = assert(io.open(dir .. "/orders.lua", "w"))
f:write(([[
local M = {}
function M.audit(ctx, order, amount)
  require("tether").sleep(0.05)   -- a slow downstream
  local log = assert(io.open(%q, "a"))
  log:write(order, " ", amount, " ", tostring(ctx:value("tenant")), "\n")
  log:close()
end
return M
]]):format(done))
f:close()
package.path = dir .. "/?.lua;" .. package.path

local url = "sqlite:" .. dir .. "/overflow.db"
local store = assert(tether.store.open(url))
local pool = tether.pool { name = "orders", workers = 2, queue = 2,
                           overflow = store, tenant_key = "tenant" }

local capacity = 2 + 2
local burst = 3 * capacity
local ctx = tether.with_value(bg, "tenant", "acme")
local handles = {}
for i = 1, burst do
  handles[i] = assert(pool:submit(ctx, "audit", "orders:audit",
                                  "order-" .. i, 10 * i))
end
local in_memory, spilled = 0, 0
for _, h in ipairs(handles) do
  local _, err = h:wait()
  if err and err.code == "spilled" then
    spilled = spilled + 1
  else
    assert(err == nil, err)
    in_memory = in_memory + 1
  end
end
assert(pool:drain())
local s = pool:stats()
print(("burst of %d into a pool that holds %d: %d ran here, %d spilled to "
       .. "%s"):format(burst, capacity, in_memory, spilled, url))
print(("pool stats: submitted %d = completed %d + spilled %d"):format(
  s.submitted, s.completed, s.spilled))
print(("store depth before the drainer: %d"):format(store:stats().depth))

-- The drainer: another process, `tether worker`, allowed to run the
-- module 'orders' only; --until-empty ends it once the store is empty
-- (without it, it drains until SIGINT or SIGTERM).  From a checkout it is
-- bin/tether next to this directory; installed, `tether` on the PATH.
local here = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."
local bin = here .. "/../bin/tether"
local found = io.open(bin)
local cmd = found and ("lua5.4 '%s'"):format(bin) or "tether"
if found then found:close() end
cmd = ("LUA_PATH_5_4='%s' %s worker --store '%s' --require orders "
       .. "--workers 4 --until-empty 2>&1"):format(
  dir .. "/?.lua;" .. (os.getenv("LUA_PATH_5_4") or ";;"), cmd, url)
local p = assert(io.popen(cmd))
for line in p:lines() do print("  | " .. line) end
assert(p:close(), "the worker failed")

-- Nothing lost: every order of the burst was audited, here or there.
local seen, lines = {}, 0
for line in io.lines(done) do
  local order, _, tenant = line:match("^(%S+) (%S+) (%S+)$")
  assert(tenant == "acme", "the tenant travelled with the op")
  seen[order] = true
  lines = lines + 1
end
for i = 1, burst do
  assert(seen["order-" .. i], "order-" .. i .. " was lost")
end
print(("nothing lost: %d of %d orders audited (tenant acme), store depth "
       .. "now %d"):format(lines, burst, store:stats().depth))
store:close()
os.execute("rm -rf " .. dir)
