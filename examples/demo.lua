-- The flagship demo: an order-processing service.
--
-- Requests arrive with their own contexts, and many clients hang up early
-- (their request context is canceled).  Each request hands its order to a
-- pool, which detaches it from the request (keeping its values: tenant,
-- request id) and bounds it again with its own timeout.  On a worker, the
-- order is a saga:
--   1. price    a singleflight-cached price lookup (one load per SKU in
--               flight, shared by every order that needs it)
--   2. reserve  an errgroup fan-out to the inventory shards of the items;
--               the first failure cancels the rest
--   3. charge   the payment gateway: a declined card fails the saga, and
--               the compensations (release stock) run detached
--   4. ship
-- A flaky gateway raises a transient error: the pool retries the order
-- with backoff; a tenant whose gateway is down for good ends up in the
-- dead letters.  Tenants have quotas; the pool refuses with
-- quota_exceeded and the request retries a little later.
--
-- It prints a live progress line and a final summary, and checks that no
-- thread of ours is left when it ends.
local tether = require "tether"

local ORDERS = tonumber(arg and arg[1]) or 3000
local TENANTS = { "acme", "globex", "initech", "umbrella" }
local bg = tether.background()

-- Shared services, all tether objects: they cross into workers by
-- reference.
local prices = tether.singleflight()
local price_loads = tether.chan(100000)     -- one mark per real load
local results = tether.chan(100000)         -- one record per finished order

local pool = tether.pool {
  name = "orders", queue = 200, timeout = 2, quiet = true,
  dead_letters = 1000,
  tenant_key = "tenant", quotas = { default = 40, umbrella = 10 },
  retry = { attempts = 3, backoff = 0.01, factor = 2, jitter = 0.3 },
  priorities = { { name = "express", workers = 4, lend = true },
                 { name = "standard", workers = 12 } },
}

-- The order workflow, run on a pool worker.  Everything it needs comes in
-- as arguments or upvalues that cross by the transfer rules: plain
-- tables are copied, tether objects are shared.
local function process_order(ctx, order, sf, loads, out)
  -- Each worker keeps a small price cache in its own globals (worker
  -- states live as long as their threads); misses go through the shared
  -- singleflight, so concurrent misses for one SKU load it once.
  -- luacheck: globals PRICE_CACHE
  PRICE_CACHE = PRICE_CACHE or {}
  local function lookup_price(sku)
    if PRICE_CACHE[sku] then return PRICE_CACHE[sku] end
    local v, err = sf:call(ctx, "price:" .. sku, function(lctx)
      loads:send(sku)
      tether.sleep(0.02, lctx)             -- a slow pricing service
      return 100 + #sku * 7
    end, { timeout = 1 })
    if err then error(err) end
    PRICE_CACHE[sku] = v
    return v
  end

  local saga = tether.saga {
    name = "order", compensation_timeout = 0.5,
    retry = { attempts = 2, backoff = 0.005 },
    { name = "price",
      action = function(sctx, st)
        st.total = 0
        for _, item in ipairs(st.order.items) do
          st.total = st.total + lookup_price(item) end
      end },
    { name = "reserve",
      action = function(sctx, st)
        local g = tether.group(sctx)
        for _, item in ipairs(st.order.items) do
          g:go(function(gctx, sku, fail)
            tether.sleep(0.002, gctx)
            if fail then error("shard for " .. sku .. " out of stock") end
          end, item, st.order.out_of_stock)
        end
        local err = g:wait()
        if err then error(err) end
        st.reserved = true
      end,
      compensate = function(sctx, st) st.released = true end },
    { name = "charge",
      action = function(sctx, st)
        if st.order.gateway_down then
          error("payment gateway unreachable")  -- transient: raise
        end
        if st.order.declined then return nil, "card declined" end
        tether.sleep(0.008, sctx)             -- the gateway's latency
        st.charged = true
      end,
      compensate = function(sctx, st) st.refunded = true end },
    { name = "ship",
      action = function(sctx, st)
        tether.sleep(0.002, sctx)
        st.shipped = true
      end },
  }

  local st = { order = order }
  local ok, err, report = saga:run(ctx, st)
  if not ok and tostring(err):find("gateway unreachable") then
    error(err)                              -- let the pool retry it
  end
  out:send({ id = order.id, tenant = ctx:value("tenant"),
             ok = ok == true, compensated = report.steps[2].status
               == "compensated", failed_step = report.failed_step,
             hung_up = order.hung_up })
  return ok
end

-- The "HTTP layer": one request context per order, canceled when the
-- client hangs up; a refused submission (quota, full queue) is retried by
-- the client after a short pause.
local rng = math.random
math.randomseed(7)
local t0 = tether.now()
local submitted, refusals = 0, { quota_exceeded = 0, queue_full = 0 }
local hung_up = 0

local function progress(final)
  local s = pool:stats()
  local line = ("\r%-8s %4d/%d accepted  %4d finished  %3d retrying/queued"
    .. "  %3d running  %3d dead  %5.0f orders/s"):format(
      final and "done:" or "running:", submitted, ORDERS,
      s.completed + s.dead, s.queued, s.inflight, s.dead,
      (s.completed + s.dead) / math.max(tether.now() - t0, 1e-6))
  io.stdout:write(line)
  io.stdout:flush()
end

local last = 0
for id = 1, ORDERS do
  local tenant = TENANTS[rng(#TENANTS)]
  local order = {
    id = id,
    items = { "sku-" .. rng(8), "sku-" .. rng(8), "sku-" .. rng(8) },
    out_of_stock = rng() < 0.05,
    declined = rng() < 0.08,
    gateway_down = tenant == "umbrella" and rng() < 0.3,
  }
  local req, hang_up = tether.with_timeout(
    tether.with_value(tether.with_value(bg, "tenant", tenant),
                      "request_id", "req-" .. id), 5)
  order.hung_up = rng() < 0.4
  local opts = { name = "order-" .. id,
                 priority = rng() < 0.1 and "express" or "standard" }
  while true do
    local h, err = pool:submit(req, opts, process_order, order, prices,
                               price_loads, results)
    if h then break end
    refusals[err.code] = (refusals[err.code] or 0) + 1
    tether.sleep(0.002)
  end
  submitted = submitted + 1
  -- The client hangs up right after sending the request: its context
  -- ends, the detached order goes on.
  if order.hung_up then hung_up = hung_up + 1 end
  hang_up()
  if tether.now() - last > 0.1 then progress(); last = tether.now() end
end

-- Drain with a budget, showing progress meanwhile: close the pool to new
-- work, then wait for its drained latch (the pool itself is a waitable).
pool:close()
local budget, done = tether.with_timeout(bg, 45)
while true do
  -- A tick of our own, canceled once used, so no timer outlives the loop.
  local tick, untick = tether.with_timeout(bg, 0.1)
  local i = tether.select(pool, tick, budget)
  untick()
  progress(i == 1)
  if i ~= 2 then break end
end
done()
io.stdout:write("\n")

local ok_n, comp_n, failed_n, hung_done = 0, 0, 0, 0
while results:len() > 0 do
  local r = results:recv()
  if r.ok then ok_n = ok_n + 1 else failed_n = failed_n + 1 end
  if r.compensated then comp_n = comp_n + 1 end
  if r.ok and r.hung_up then hung_done = hung_done + 1 end
end
local s = pool:stats()
local elapsed = tether.now() - t0
local dead_by_tenant = {}
for _, d in ipairs(pool:dead_letters()) do
  dead_by_tenant[d.tenant] = (dead_by_tenant[d.tenant] or 0) + 1
end

print(("\norders: %d submitted in %.2f s (%.0f orders/s)"):format(
  s.submitted, elapsed, s.submitted / elapsed))
print(("  completed          %4d (%d of them after the client hung up)")
  :format(ok_n, hung_done))
print(("  saga failed        %4d (%d compensated: stock released, "
  .. "detached from the canceled request)"):format(failed_n, comp_n))
print(("  dead-lettered      %4d (%s)"):format(s.dead, (function()
  local t = {}
  for k, v in pairs(dead_by_tenant) do t[#t + 1] = k .. " " .. v end
  table.sort(t)
  return #t > 0 and table.concat(t, ", ") or "none"
end)()))
print(("  retried attempts   %4d"):format(s.retried))
print(("  refused, resubmitted: %d over quota, %d queue full"):format(
  refusals.quota_exceeded, refusals.queue_full))
print(("price loads: %d for %d lookups (per-worker cache + singleflight)")
  :format(price_loads:len(), (ok_n + failed_n) * 3))
assert(s.submitted == s.completed + s.failed + s.stopped + s.dead
       + s.queued + s.inflight, "stats do not add up")
assert(s.submitted == ORDERS and s.queued == 0 and s.inflight == 0)

-- Leave no thread behind: the drained pool's workers end when it is
-- freed, then the engine's idle threads stop.
pool = nil
collectgarbage()
collectgarbage()
tether.shutdown()
local threads = tether.threads()
print(("threads left: %d (the main thread)"):format(threads))
assert(threads == 1)
