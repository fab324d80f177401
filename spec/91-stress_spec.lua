-- Stress: several threads submit to several pools at once for a bounded
-- time, with random stops, failing ops, timeouts, interrupts, canceled
-- parents, shutdown cancels and drains while they submit.  At the end
-- every handle is resolved, every pool's stats add up exactly and agree
-- with what the submitters saw, and no thread started here is left
-- running.  `make check` runs it under ASan+UBSan and TSan too.
--
-- TETHER_STRESS_SECONDS (default 6) sets how long the submitters run;
-- TETHER_STRESS_SEED fixes the random choices (printed).
local tether = require "tether"
local accounting = require "spec.support.accounting"

local bg = tether.background()
local SECONDS = tonumber(os.getenv("TETHER_STRESS_SECONDS")) or 6
local SEED = tonumber(os.getenv("TETHER_STRESS_SEED")) or os.time()
local SUBMITTERS = 6
local GENERATIONS = 3
local LIMIT = 60          -- the whole spec, seconds
local WATCHDOG = 120      -- no progress for this long ends the process

-- {====================================================================
-- Threads of this process (Linux), by id
-- =====================================================================

local function tids()
  local f = assert(io.open("/proc/self/stat"))
  local pid = f:read("n")
  f:close()
  local set, p = {}, assert(io.popen("ls /proc/" .. pid .. "/task"))
  for tid in p:lines() do set[tonumber(tid)] = true end
  p:close()
  return set
end

-- minus returns the ids in 'a' and not in 'b', as a list.
local function minus(a, b)
  local out = {}
  for tid in pairs(a) do
    if not b[tid] then out[#out + 1] = tid end
  end
  table.sort(out)
  return out
end

-- }====================================================================


-- {====================================================================
-- The work
-- =====================================================================

-- op is every pool op: "ok" returns n * 2, "err" raises, "sleep" sleeps n
-- seconds under its context, "hang" waits for its context to end (the
-- pool's timeout or shutdown), "spin" loops until the pool's interrupt
-- stops it.
local function op(ctx, kind, n)
  if kind == "ok" then return n * 2 end
  if kind == "err" then error("stress op " .. n .. " failed") end
  if kind == "sleep" then
    local ok, err = tether.sleep(n, ctx)
    if not ok then error(err) end
    return "slept"
  end
  if kind == "hang" then
    ctx:wait()
    error(ctx:err())
  end
  if kind == "spin" then
    local x = 0
    while true do x = x + 1 end
  end
  error("unknown kind " .. tostring(kind))
end

-- The kinds of pool ("slots"); each gets GENERATIONS pools.  Submitters
-- move to a slot's next generation when theirs refuses with "closed".
local function make_slots()
  local slots = {
    { name = "plain", kinds = {"ok", "ok", "err", "sleep", "hang"},
      opts = { workers = 3, queue = 16, timeout = 0.05 } },
    { name = "retry", kinds = {"ok", "err", "err", "sleep"},
      opts = { workers = 2, queue = 16, timeout = 0.05,
               retry = { attempts = 3, backoff = 0.001, jitter = 0.5 } } },
    { name = "tiers", kinds = {"ok", "err", "sleep", "hang"},
      classes = {"high", "low"},
      opts = { queue = 16, timeout = 0.05,
               priorities = { { name = "high", workers = 2, lend = true },
                              { name = "low", workers = 2 } } } },
    { name = "quota", kinds = {"ok", "err", "sleep"},
      tenants = {"a", "b", "c", "big"},
      opts = { workers = 2, queue = 32, timeout = 0.05,
               tenant_key = "tenant", quotas = { default = 2, big = 8 } } },
    { name = "shut", kinds = {"ok", "sleep", "hang", "spin"},
      opts = { workers = 3, queue = 16, timeout = 0.2, interrupt = true } },
  }
  local workers = 0
  for _, s in ipairs(slots) do
    s.gens, s.cancels = {}, {}
    for g = 1, GENERATIONS do
      local o = { name = s.name .. "/" .. g, quiet = true }
      for k, v in pairs(s.opts) do o[k] = v end
      if s.name == "shut" then
        o.shutdown, s.cancels[g] = tether.with_cancel_cause(bg)
      end
      s.gens[g] = tether.pool(o)
    end
    local per = s.opts.workers or 0
    if s.opts.priorities then
      for _, c in ipairs(s.opts.priorities) do per = per + c.workers end
    end
    workers = workers + per * GENERATIONS
  end
  return slots, workers
end

-- submitter runs on its own thread until 'deadline', then waits for its
-- handles and returns what it saw, by pool name: accepted submissions,
-- refusals by code, final handle states, and wrong results.
local function submitter(seed, slots, deadline, fn)
  local t = tether
  math.randomseed(seed)
  local cur, seen, handles = {}, {}, {}
  local function tally(name)
    seen[name] = seen[name] or { accepted = 0, refused = {}, done = 0,
                                 failed = 0, stopped = 0, wrong = 0,
                                 unresolved = 0 }
    return seen[name]
  end
  while t.now() < deadline do
    local si = math.random(#slots)
    local s = slots[si]
    local g = cur[si] or 1
    local pool = s.gens[g]
    local kind = s.kinds[math.random(#s.kinds)]
    local n = kind == "sleep" and math.random() * 0.02 or math.random(1000)
    local parent = bg
    if s.tenants then
      parent = t.with_value(bg, "tenant", s.tenants[math.random(#s.tenants)])
    end
    if math.random() < 0.1 then
      -- Ops are detached from their parent: a canceled one still runs.
      local c, cancel = t.with_cancel(parent)
      cancel()
      parent = c
    end
    local how = kind
    if s.classes then
      how = { name = kind, priority = s.classes[math.random(#s.classes)] }
    end
    local h, err = pool:submit(parent, how, fn, kind, n)
    local rec = tally(pool:name())
    if h then
      rec.accepted = rec.accepted + 1
      handles[#handles + 1] = { h = h, name = pool:name(), kind = kind,
                                n = n }
      if math.random() < 0.15 then h:stop() end
      if math.random() < 0.05 then
        local other = handles[math.random(#handles)].h
        other:wait(t.with_timeout(bg, 0.005))
      end
    else
      rec.refused[err.code] = (rec.refused[err.code] or 0) + 1
      if err.code == "closed" and g < #s.gens then
        cur[si] = g + 1
      elseif err.code ~= "closed" then
        t.sleep(0.0002)
      end
    end
  end
  local limit = t.with_timeout(bg, 60)
  for _, e in ipairs(handles) do
    local v = e.h:wait(limit)
    local st = e.h:state()
    local rec = tally(e.name)
    if st == "done" or st == "failed" or st == "stopped" then
      rec[st] = rec[st] + 1
      if st == "done" and ((e.kind == "ok" and v ~= e.n * 2)
                           or (e.kind == "sleep" and v ~= "slept")) then
        rec.wrong = rec.wrong + 1
      end
    else
      rec.unresolved = rec.unresolved + 1
    end
  end
  return seen
end

-- }====================================================================


local start_watchdog = dofile("spec/support/watchdog.lua")


describe("stress", function()
  it("many threads submit to several pools with stops, errors, timeouts, "
     .. "cancels and drains; everything resolves and adds up", function()
    local t0 = tether.now()
    local dog = start_watchdog("stress", WATCHDOG)
    -- Idle executor threads left by earlier specs end here, so that the
    -- executor threads counted below are this spec's own.
    dog.beat("shutdown at the start")
    tether.shutdown()
    tether.sleep(0.001)  -- the timer thread runs from here on
    collectgarbage()
    collectgarbage()
    local before = tids()
    local slots, nworkers = make_slots()
    local npools = #slots * GENERATIONS
    -- Each pool starts all its workers when it is made.
    local workers = minus(tids(), before)
    assert.equal(nworkers, #workers)

    local deadline = tether.now() + SECONDS
    local subs = {}
    for i = 1, SUBMITTERS do
      subs[i] = tether.go(submitter, SEED + i, slots, deadline, op)
    end

    -- While they submit: drain every generation but the last, one at a
    -- time, canceling the shutdown context first where there is one.
    local order = {}
    for si in ipairs(slots) do
      for g = 1, GENERATIONS - 1 do order[#order + 1] = {si, g} end
    end
    math.randomseed(SEED)
    for i = #order, 2, -1 do
      local j = math.random(i)
      order[i], order[j] = order[j], order[i]
    end
    local drains, cancels, peak = 0, 0, tether.threads()
    local pause = SECONDS / (#order + 1)
    for _, sg in ipairs(order) do
      tether.sleep(pause)
      dog.beat("drain " .. sg[1] .. "/" .. sg[2])
      peak = math.max(peak, tether.threads())
      local s = slots[sg[1]]
      if s.cancels[sg[2]] then
        s.cancels[sg[2]]("stress: shutdown of " .. s.gens[sg[2]]:name())
        cancels = cancels + 1
      end
      assert.is_true(s.gens[sg[2]]:drain(tether.with_timeout(bg, 30)))
      drains = drains + 1
    end

    -- Every submitter ends, and every handle it got is resolved.
    local seen = {}
    for i, h in ipairs(subs) do
      dog.beat("submitter " .. i)
      local got, err = h:wait(tether.with_timeout(bg, LIMIT))
      assert.is_table(got, tostring(err))
      for name, rec in pairs(got) do
        local all = seen[name] or { accepted = 0, refused = {}, done = 0,
                                    failed = 0, stopped = 0, wrong = 0,
                                    unresolved = 0 }
        for _, k in ipairs({"accepted", "done", "failed", "stopped",
                            "wrong", "unresolved"}) do
          all[k] = all[k] + rec[k]
        end
        for code, n in pairs(rec.refused) do
          all.refused[code] = (all.refused[code] or 0) + n
        end
        seen[name] = all
      end
    end

    -- Every pool drains; its stats add up and agree with the handles.
    local total = { accepted = 0, done = 0, failed = 0, stopped = 0,
                    dead = 0, retried = 0, refused = {}, nrefused = 0 }
    for _, s in ipairs(slots) do
      for g, pool in ipairs(s.gens) do
        dog.beat("check " .. pool:name())
        if s.cancels[g] then s.cancels[g]() end
        assert.is_true(pool:drain(tether.with_timeout(bg, 30)))
        local st = pool:stats()
        local rec = seen[pool:name()] or { accepted = 0, refused = {},
          done = 0, failed = 0, stopped = 0, wrong = 0, unresolved = 0 }
        local refused = 0
        for code, n in pairs(rec.refused) do
          refused = refused + n
          total.refused[code] = (total.refused[code] or 0) + n
        end
        local name = pool:name()
        assert.equal(0, rec.unresolved, name .. ": unresolved handles")
        assert.equal(0, rec.wrong, name .. ": wrong results")
        assert.equal(0, st.queued, name)
        assert.equal(0, st.inflight, name)
        accounting.check(st, name)
        assert.equal(rec.accepted, st.submitted, name)
        assert.equal(refused, st.rejected, name)
        assert.equal(rec.done, st.completed, name)
        assert.equal(rec.stopped, st.stopped, name)
        assert.equal(rec.failed, st.failed + st.dead, name)
        total.accepted = total.accepted + st.submitted
        total.done = total.done + st.completed
        total.failed = total.failed + st.failed + st.dead
        total.dead = total.dead + st.dead
        total.stopped = total.stopped + st.stopped
        total.retried = total.retried + st.retried
        total.nrefused = total.nrefused + refused
      end
    end
    assert.is_true(total.accepted > 0)

    -- No thread started here is left: the pools' workers end once their
    -- pools are drained and collected; the executor keeps idle threads
    -- for a while (and the timer thread runs) until tether.shutdown().
    slots, subs = nil, nil  -- luacheck: ignore 311
    collectgarbage()
    collectgarbage()
    local now = tids()
    local left = 0
    for _, tid in ipairs(workers) do
      if now[tid] then left = left + 1 end
    end
    assert.equal(0, left, "pool workers still running")
    local idle = #minus(now, before)
    dog.beat("shutdown")
    dog.stop()
    tether.shutdown()
    assert.are.same({}, minus(tids(), before))

    local elapsed = tether.now() - t0
    assert.is_true(elapsed < LIMIT, ("took %.1f s"):format(elapsed))
    local codes = {}
    for code, n in pairs(total.refused) do
      codes[#codes + 1] = code .. " " .. n
    end
    table.sort(codes)
    print(("\n  stress (seed %d): %d submitters, %d pools, %.1f s of "
      .. "submitting, %.1f s in all: %d ops accepted (%d done, %d failed "
      .. "of which %d dead letters, %d stopped; %d retries), %d refused "
      .. "(%s); %d drains during the run, %d shutdown cancels; every "
      .. "handle resolved, stats exact for every pool")
      :format(SEED, SUBMITTERS, npools,
              SECONDS, elapsed, total.accepted, total.done, total.failed,
              total.dead, total.stopped, total.retried, total.nrefused,
              table.concat(codes, ", "), drains, cancels))
    print(("  threads: %d before, peak %d; %d pool workers started and "
      .. "all ended; %d executor/timer threads idle after the drains, "
      .. "stopped by tether.shutdown(); 0 left")
      :format(#minus(before, {}), peak,
              #workers, idle))
  end)
end)
