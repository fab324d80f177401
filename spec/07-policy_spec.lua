-- Pool policies: retries with backoff, dead letters, tenant quotas,
-- priority tiers and failure causes.
local tether = require "tether"

local bg = tether.background()

local check_invariant = require("spec.support.accounting").check
local eventually = require "spec.support.eventually"

-- A task that fails its first 'fails' attempts, counting attempts on a
-- channel (upvalues are snapshots; shared state goes through tether
-- objects).
local function flaky(ctx, counter, fails, stamps)
  counter:send(true)
  if stamps then stamps:send(tether.now()) end
  if counter:len() <= fails then error("transient failure") end
  return "ok after " .. counter:len()
end

describe("retries", function()
  it("a pool default policy retries with exponential backoff", function()
    local pool = tether.pool { name = "r", workers = 2, quiet = true,
      retry = { attempts = 4, backoff = 0.01, factor = 2 } }
    local counter, stamps = tether.chan(10), tether.chan(10)
    local h = pool:submit(bg, "flaky", flaky, counter, 2, stamps)
    assert.equal("ok after 3", h:wait())
    local t = {}
    while stamps:len() > 0 do t[#t + 1] = stamps:recv() end
    assert.equal(3, #t)
    -- Delays 0.01 then 0.02 (no jitter): lower bounds only.
    assert.is_true(t[2] - t[1] >= 0.0095, tostring(t[2] - t[1]))
    assert.is_true(t[3] - t[2] >= 0.019, tostring(t[3] - t[2]))
    local s = pool:stats()
    assert.equal(2, s.retried)
    assert.equal(1, s.completed)
    check_invariant(s)
  end)

  it("scenario 22: two ops with their own policies retry differently",
     function()
    local pool = tether.pool { name = "per-op", workers = 2, quiet = true }
    local c1, c2 = tether.chan(20), tether.chan(20)
    local h1 = pool:submit(bg, { name = "patient",
      retry = { attempts = 5, backoff = 0.001 } }, flaky, c1, 10)
    local h2 = pool:submit(bg, { name = "hasty",
      retry = { attempts = 2, backoff = 0.001 } }, flaky, c2, 10)
    local _, e1 = h1:wait()
    local _, e2 = h2:wait()
    assert.matches("transient failure", e1.message)
    assert.matches("transient failure", e2.message)
    assert.equal(5, c1:len())
    assert.equal(2, c2:len())
    local dead = {}
    for _, d in ipairs(pool:dead_letters()) do dead[d.name] = d.attempts end
    assert.same({ patient = 5, hasty = 2 }, dead)
  end)

  it("a waiting retry sits on the timer, counts as queued and can be "
     .. "stopped", function()
    local pool = tether.pool { name = "wait", workers = 1, quiet = true,
      retry = { attempts = 3, backoff = 10 } }
    local counter = tether.chan(5)
    local h = pool:submit(bg, "slow-retry", flaky, counter, 5)
    eventually(function() return pool:stats().retried >= 1 end,
               "the first retry")
    local s = pool:stats()
    assert.equal(1, s.queued)
    assert.equal(0, s.inflight)
    check_invariant(s)
    -- The worker is free while the retry waits: other work runs at once.
    assert.equal(7, pool:submit(bg, "other", function() return 7 end):wait())
    assert.is_true(h:stop())
    local _, err = h:wait()
    assert.equal("stopped", err.code)
    assert.equal(1, counter:len())
    assert.is_true(pool:drain())
    check_invariant(pool:stats())
  end)

  it("a canceled parent does not cancel retries; shutdown does", function()
    local shutdown, stop = tether.with_cancel(bg)
    local pool = tether.pool { name = "detached", workers = 1, quiet = true,
      shutdown = shutdown, retry = { attempts = 3, backoff = 0.005 } }
    local parent, cancel = tether.with_cancel(bg)
    local counter = tether.chan(5)
    local h = pool:submit(parent, "survivor", flaky, counter, 2)
    cancel()
    assert.equal("ok after 3", h:wait())
    local c2 = tether.chan(5)
    local h2 = pool:submit(bg, { name = "doomed",
      retry = { attempts = 10, backoff = 0.05 } }, flaky, c2, 100)
    eventually(function() return pool:stats().retried >= 3 end,
               "three retries")
    stop()
    local _, err = h2:wait()
    assert.is_truthy(err)
    assert.is_true(c2:len() < 10)
    pool:drain()
  end)

  it("bad policies are refused in Lua's words", function()
    assert.has_error(function()
      tether.pool { retry = { attempts = -1 } } end,
      "bad argument #1 to 'pool' (field 'retry.attempts' must be between 1 "
      .. "and 1000000)")
    assert.has_error(function()
      tether.pool { retry = { jitter = 2 } } end,
      "bad argument #1 to 'pool' (field 'retry.jitter' must be between 0 "
      .. "and 1)")
    assert.has_error(function()
      tether.pool { retry = { backoff = "x" } } end,
      "bad argument #1 to 'pool' (field 'retry.backoff' must be a number, "
      .. "got string)")
    local pool = tether.pool { name = "x", workers = 1 }
    assert.has_error(function()
      pool:submit(bg, { name = "y", retry = { factor = 0.5 } }, print) end,
      "bad argument #2 to 'submit' (field 'retry.factor' must be at least 1)")
  end)
end)

describe("dead letters", function()
  it("scenario 13: an op that fails every retry becomes a dead letter "
     .. "with name, error, attempts and tenant", function()
    local pool = tether.pool { name = "dlq", workers = 1, quiet = true,
      tenant_key = "tenant", retry = { attempts = 3, backoff = 0.001 } }
    local ctx = tether.with_value(bg, "tenant", "acme")
    local h = pool:submit(ctx, "charge-card", function()
      error("card declined")
    end)
    local _, err = h:wait()
    assert.matches("card declined", err.message)
    local dl = pool:dead_letters()
    assert.equal(1, #dl)
    local d = dl[1]
    assert.equal("charge-card", d.name)
    assert.matches("card declined", d.error)
    assert.matches("stack traceback", d.traceback)
    assert.equal(3, d.attempts)
    assert.equal("acme", d.tenant)
    assert.is_number(d.at)
    assert.matches("card declined", tostring(d.cause))
    local s = pool:stats()
    assert.equal(1, s.dead)
    assert.equal(0, s.failed)
    assert.equal(2, s.retried)
    check_invariant(s)
  end)

  it("can be retried or dropped, as a dead set", function()
    local pool = tether.pool { name = "set", workers = 1, quiet = true }
    local gate = tether.chan(1)
    pool:submit(bg, "needs-gate", function(ctx, g)
      local v, ok = g:try_recv()
      if not ok then error("gate closed") end
      return v
    end, gate):wait()
    pool:submit(bg, "hopeless", function() error("no") end):wait()
    local dl = pool:dead_letters()
    assert.equal(2, #dl)
    local byname = {}
    for _, d in ipairs(dl) do byname[d.name] = d end
    gate:send("opened")
    local h = pool:retry_dead(byname["needs-gate"])
    assert.equal("opened", h:wait())
    assert.is_true(pool:drop_dead(byname.hopeless.id))
    assert.is_false(pool:drop_dead(byname.hopeless.id))
    assert.same({}, pool:dead_letters())
    local _, err = pool:retry_dead(12345)
    assert.is_truthy(err)
    check_invariant(pool:stats())
  end)

  it("go to the dlq channel too, each as a record", function()
    local dlq = tether.chan(10)
    local pool = tether.pool { name = "with-dlq", workers = 1, quiet = true,
      dlq = dlq, tenant_key = "tenant",
      retry = { attempts = 2, backoff = 0.001 } }
    local ctx = tether.with_value(bg, "tenant", "initech")
    pool:submit(ctx, "export", function() error("disk full") end):wait()
    local d = dlq:recv()
    assert.equal("export", d.name)
    assert.equal("with-dlq", d.pool)
    assert.equal("initech", d.tenant)
    assert.equal(2, d.attempts)
    assert.matches("disk full", d.error)
    assert.matches("stack traceback", d.traceback)
    assert.equal(pool:dead_letters()[1].id, d.id)
    assert.has_error(function() tether.pool { dlq = {} } end,
      "bad argument #1 to 'pool' (field 'dlq' must be a tether.Chan)")
  end)

  it("are bounded, and overflow is counted", function()
    local pool = tether.pool { name = "cap", workers = 1, quiet = true,
      dead_letters = 3 }
    for i = 1, 5 do
      pool:submit(bg, "f" .. i, function() error("x") end):wait()
    end
    local dl = pool:dead_letters()
    assert.equal(3, #dl)
    local s = pool:stats()
    assert.equal(5, s.dead)
    assert.equal(3, s.dead_held)
    assert.equal(2, s.dead_dropped)
    check_invariant(s)
  end)
end)

describe("tenant quotas", function()
  it("scenario 12: a tenant over its quota is refused, another is not",
     function()
    local gate = tether.chan()
    local pool = tether.pool { name = "q", workers = 4, queue = 100,
      quiet = true, tenant_key = "tenant",
      quotas = { default = 10, acme = 2 } }
    local acme = tether.with_value(bg, "tenant", "acme")
    local globex = tether.with_value(bg, "tenant", "globex")
    local hs = {}
    for i = 1, 2 do
      hs[#hs + 1] = pool:submit(acme, "a" .. i, function(_, g) g:recv() end,
                                gate)
    end
    local h, err = pool:submit(acme, "a3", function() end)
    assert.is_nil(h)
    assert.equal("quota_exceeded", err.code)
    assert.equal("acme", err.tenant)
    assert.equal("quota exceeded: tenant 'acme' of pool 'q'", err.message)
    for i = 1, 3 do
      hs[#hs + 1] = assert(pool:submit(globex, "g" .. i,
        function(_, g) g:recv() end, gate))
    end
    -- Ops without a tenant fall under 'default'.
    hs[#hs + 1] = assert(pool:submit(bg, "anon", function() end))
    for _ = 1, 5 do gate:send(true) end
    for _, x in ipairs(hs) do x:wait() end
    -- Back within quota once acme's ops ended.
    assert.is_truthy(pool:submit(acme, "a4", function() end))
    pool:drain()
    assert.equal(1, pool:stats().rejected)
  end)

  it("bad quotas are refused", function()
    assert.has_error(function()
      tether.pool { tenant_key = "t", quotas = { acme = "x" } } end,
      "bad argument #1 to 'pool' (quota of 'acme' must be a positive "
      .. "integer, got string)")
    assert.has_error(function()
      tether.pool { quotas = { acme = 1 } } end,
      "bad argument #1 to 'pool' (field 'quotas' needs a 'tenant_key')")
  end)
end)

describe("priority tiers", function()
  it("scenario 24: a flood of routine work never delays critical work",
     function()
    local pool = tether.pool { name = "tiers", queue = 5000, quiet = true,
      priorities = { high = { workers = 10 }, low = { workers = 50 } } }
    local gate, started = tether.chan(), tether.chan(2000)
    for _ = 1, 2000 do
      assert(pool:submit(bg, { name = "routine", priority = "low" },
        function(ctx, g, st) st:send(true) g:recv() end, gate, started))
    end
    -- Every low worker is stuck (each has said so) and 1,950 routine ops
    -- wait: critical ops still run at once, on their own workers.
    local limit = tether.with_timeout(bg, 10)
    for _ = 1, 50 do assert.is_truthy(started:recv(limit)) end
    for i = 1, 50 do
      local h = pool:submit(bg, { name = "critical", priority = "high" },
        function(ctx, n) return n end, i)
      assert.equal(i, h:wait())
    end
    local s = pool:stats()
    assert.equal(1950, s.queued)
    assert.equal(50, s.inflight)
    assert.equal(50, s.completed)
    gate:close()
    assert.is_true(pool:drain())
    assert.equal(2050, pool:stats().completed)
  end)

  it("scenario 24: routine work progresses while critical work is "
     .. "saturated", function()
    local pool = tether.pool { name = "tiers2", queue = 5000, quiet = true,
      priorities = { high = { workers = 10 }, low = { workers = 50 } } }
    local gate, started = tether.chan(), tether.chan(200)
    for _ = 1, 200 do
      assert(pool:submit(bg, { name = "critical", priority = "high" },
        function(ctx, g, st) st:send(true) g:recv() end, gate, started))
    end
    -- Every high worker is stuck, and has said so.
    local limit = tether.with_timeout(bg, 10)
    for _ = 1, 10 do assert.is_truthy(started:recv(limit)) end
    local hs = {}
    for i = 1, 100 do
      hs[i] = assert(pool:submit(bg, { name = "routine", priority = "low" },
        function(ctx, n) return n end, i))
    end
    for i = 1, 100 do assert.equal(i, hs[i]:wait(limit)) end
    assert.equal(190, pool:stats().queued)
    gate:close()
    pool:drain()
  end)

  it("scenario 24: fairness in a saturated pool, counted", function()
    local shutdown, stop = tether.with_cancel(bg)
    local pool = tether.pool { name = "tiers3", queue = 100000,
      quiet = true, shutdown = shutdown,
      priorities = { high = { workers = 10 }, low = { workers = 50 } } }
    local done = { high = tether.chan(100000), low = tether.chan(100000) }
    -- Ops of 50 ms: long enough that a submitter slowed down by a
    -- sanitizer (hundreds of microseconds a submission under TSan) still
    -- queues work faster than the 50 low workers can take it.
    local d = 0.05
    local function op(ctx, out)
      if tether.sleep(d, ctx) then out:send(true) end
    end
    -- Each tier gets more work than it can do in the window: two seconds
    -- of ops at its full capacity (400 for high's 10 workers, 2,000 for
    -- low's 50).  The window starts once everything is queued, so that a
    -- slow submitter does not count against the tiers.
    local counts = { high = 10 * 2 / d, low = 50 * 2 / d }
    for _ = 1, counts.low do
      pool:submit(bg, { name = "r", priority = "low" }, op, done.low)
    end
    for _ = 1, counts.high do
      pool:submit(bg, { name = "c", priority = "high" }, op, done.high)
    end
    local t0 = tether.now()
    local high0, low0 = done.high:len(), done.low:len()
    tether.sleep(0.5)
    local high, low = done.high:len() - high0, done.low:len() - low0
    local window = tether.now() - t0
    -- Both tiers were saturated through the window: work was left.
    local left = { high = counts.high - done.high:len(),
                   low = counts.low - done.low:len() }
    stop()
    -- Each tier's throughput as a share of its capacity (its workers
    -- times the window, over 'd' an op).  No tier can pass its own
    -- capacity (its workers are its own), and each gets a fair part of
    -- it: a tier starved by the other fails the lower bound.
    local share = {
      high = high / (10 * window / d),
      low = low / (50 * window / d),
    }
    print(("\n  fairness (%.2f s, both tiers saturated): high %d ops on 10 "
           .. "workers (%.0f%% of capacity), low %d ops on 50 workers "
           .. "(%.0f%%)"):format(window, high, share.high * 100, low,
                                  share.low * 100))
    for tier, r in pairs(share) do
      assert.is_true(left[tier] > 0, tier .. " ran out of work")
      assert.is_true(r <= 1.05, tier .. " passed its capacity: " .. r)
      assert.is_true(r >= 0.25, tier .. " starved: " .. r)
    end
    assert.is_true(pool:drain(tether.with_timeout(bg, 10)))
  end)

  it("lend lets idle high workers take lower work", function()
    local pool = tether.pool { name = "lend", queue = 100, quiet = true,
      priorities = { { name = "high", workers = 2, lend = true },
                     { name = "low", workers = 1 } } }
    local gate = tether.chan()
    local running = tether.chan(10)
    for _ = 1, 3 do
      pool:submit(bg, { name = "low", priority = "low" },
        function(ctx, g, r) r:send(true); g:recv() end, gate, running)
    end
    -- One low worker plus two lent high workers: all three run at once.
    for _ = 1, 3 do running:recv() end
    assert.equal(3, pool:stats().inflight)
    for _ = 1, 3 do gate:send(true) end
    pool:drain()
  end)

  it("an unknown class is an error at submit", function()
    local pool = tether.pool { name = "p", quiet = true,
      priorities = { high = { workers = 1 }, low = { workers = 1 } } }
    assert.has_error(function()
      pool:submit(bg, { name = "x", priority = "urgent" }, print) end,
      "bad argument #2 to 'submit' (unknown priority class 'urgent')")
    assert.has_error(function()
      tether.pool { priorities = { fast = { workers = 1 },
                                   low = { workers = 1 } } } end,
      "bad argument #1 to 'pool' (class 'fast' needs a 'rank' (or use the "
      .. "list form { {name = ..., workers = ...}, ... }))")
  end)
end)

describe("causes", function()
  it("scenario 23: after a drain, each failure's cause is inspectable",
     function()
    local shutdown, stop = tether.with_cancel_cause(bg)
    local pool = tether.pool { name = "causes", workers = 3, quiet = true,
      shutdown = shutdown, timeout = 0.02 }
    local started = tether.chan(3)
    local slow = pool:submit(bg, "times-out", function(ctx)
      local _, err = tether.sleep(5, ctx)
      error(err)
    end)
    local canceled = pool:submit(bg, { name = "canceled", timeout = 10 },
      function(ctx, st)
        st:send(true)
        local _, err = tether.sleep(5, ctx)
        error(err)
      end, started)
    -- Its own long timeout: a loaded machine may start it late.
    local broken = pool:submit(bg, { name = "broken", timeout = 10 },
      function() error("bug") end)
    slow:wait()
    broken:wait()
    started:recv()
    stop("maintenance window")
    canceled:wait()
    assert.is_true(pool:drain())
    local causes = {}
    for _, f in ipairs(pool:dead_letters()) do causes[f.name] = f.cause end
    assert.equal(tether.deadline_exceeded, causes["times-out"])
    assert.equal("maintenance window", causes.canceled)
    assert.matches("bug", tostring(causes.broken))
    local recent = pool:failures()
    assert.equal(3, #recent)
  end)
end)
