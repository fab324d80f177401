-- Scenario 17: overflow to disk.  A burst three times what a pool can
-- hold (workers plus queue) arrives at once: what does not fit goes to a
-- durable store (SQLite here; "redis://HOST:PORT" works the same) instead
-- of being refused.  A separate process, lua5.4 running tether.worker,
-- drains the store later, and the script checks that no order was lost.
-- Only named ops ("module:function") with plain-data arguments can
-- travel: the drainer runs only the modules it is told to allow.
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

-- The drainer: another process, allowed to run the module 'orders' only.
local script = dir .. "/drainer.lua"
f = assert(io.open(script, "w"))
f:write([[
local worker = require "tether.worker"
local rep = assert(worker.run { store = arg[1], allow = { "orders" },
                                workers = 4, until_empty = true })
print(("drainer process: ran %d ops"):format(rep.completed))
]])
f:close()
local cmd = ("cd %s && LUA_PATH_5_4='%s' lua5.4 drainer.lua '%s'"):format(
  dir, dir .. "/?.lua;" .. (os.getenv("LUA_PATH_5_4") or ";;"), url)
local p = assert(io.popen(cmd))
io.write(p:read("a"))
assert(p:close(), "the drainer failed")

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
