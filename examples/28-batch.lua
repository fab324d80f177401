-- Batches: many ops of one function.  pool:submit_many copies the
-- function once and queues the items together (handles, and the refusal
-- of the first item the pool did not take); tether.map runs a function
-- over a list on a pool and gives results and errors per item, never
-- more outstanding than the queue holds, attached to a context.
local tether = require "tether"

local bg = tether.background()
local pool = tether.pool { name = "thumbs", workers = 2, queue = 16,
                           quiet = true }

local sizes = {}
for i = 1, 10 do sizes[i] = i * 100 end

-- One function, ten ops; the upvalue travels once.
local factor = 2
local hs, err = pool:submit_many(bg, "resize", function(_, px)
  return px * factor
end, sizes)
assert(err == nil and #hs == 10)
local total = 0
for _, h in ipairs(hs) do total = total + h:wait() end
print("submit_many: 10 ops, total " .. total)

-- map: results by item; an item that fails has its error at its index.
local results, errors = tether.map(pool, bg, function(_, px)
  if px == 300 then error("cannot resize 300", 0) end
  return px // 100
end, sizes)
print("map: results[2] = " .. results[2] .. ", errors[3] = "
      .. errors[3].message)

-- A map bounded by a context: what did not run gets its error.
local ctx, cancel = tether.with_timeout(bg, 0)
local _, late = tether.map(pool, ctx, function() return true end, { 1, 2 })
print("map after its deadline: " .. late[1].code)
cancel()

assert(pool:drain())
local s = pool:stats()
assert(s.submitted == s.completed + s.failed)
print(("accounted: %d submitted, %d completed, %d failed"):format(
  s.submitted, s.completed, s.failed))
