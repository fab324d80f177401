-- Scenario 10: singleflight with detach.  Two callers load the same key;
-- the first caller's context is canceled at once and it returns canceled,
-- while the second receives the value; the loader ran exactly once.
local tether = require "tether"

local sf = tether.singleflight()
local calls = tether.chan(10)
local function load_price(ctx, counter)
  counter:send(true)
  tether.sleep(0.05, ctx)
  return 1999
end

local impatient, cancel = tether.with_cancel(tether.background())
local first = tether.go(function(ctx, s, loader, counter)
  return s:call(ctx, "price:sku-7", function(c) return loader(c, counter) end)
end, impatient, sf, load_price, calls)
local second = tether.go(function(s, loader, counter)
  tether.sleep(0.01)
  return s:call(tether.background(), "price:sku-7",
                function(c) return loader(c, counter) end)
end, sf, load_price, calls)

tether.sleep(0.02)
cancel()
local v1, e1 = first:wait()
local v2, e2, shared = second:wait()
print(("first caller:  %s, %s"):format(tostring(v1), tostring(e1)))
print(("second caller: %s, %s (shared: %s)"):format(tostring(v2),
  tostring(e2), tostring(shared)))
print(("the loader ran %d time(s)"):format(calls:len()))
