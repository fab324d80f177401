-- Options tables: every one is strict (an unknown key raises, naming it
-- and the nearest known one), read by one layer (csrc/lua/lopts.c) with
-- one set of limits; and the messages of construction and lookups.
local tether = require "tether"

local bg = tether.background()

describe("strict options", function()
  it("tether.pool names a misspelled option and the nearest one",
     function()
    assert.has_error(function() tether.pool { worker = 4 } end,
      "bad argument #1 to 'pool' (unknown option 'worker'; did you mean "
      .. "'workers'?)")
    assert.has_error(function()
      tether.pool { priorites = { high = { workers = 1 } } } end,
      "bad argument #1 to 'pool' (unknown option 'priorites'; did you mean "
      .. "'priorities'?)")
  end)

  it("each priority class is strict, in both forms", function()
    assert.has_error(function()
      tether.pool { priorities = { high = { wrkers = 2 },
                                   low = { workers = 1 } } } end,
      "bad argument #1 to 'pool' (unknown option 'priorities.high.wrkers'; "
      .. "did you mean 'priorities.high.workers'?)")
    assert.has_error(function()
      tether.pool { priorities = { { name = "high", workers = 1 },
                                   { name = "low", lent = true } } } end,
      "bad argument #1 to 'pool' (unknown option 'priorities[2].lent'; "
      .. "did you mean 'priorities[2].lend'?)")
    assert.has_error(function()
      tether.pool { priorities = { high = { workers = 1, lend = "yes" },
                                   low = { workers = 1 } } } end,
      "bad argument #1 to 'pool' (field 'lend' must be a boolean, got "
      .. "string)")
  end)

  it("pool:submit's options table is strict", function()
    local pool = tether.pool { name = "strict", workers = 1 }
    assert.has_error(function()
      pool:submit(bg, { name = "x", retries = 3 }, print) end,
      "bad argument #2 to 'submit' (unknown option 'retries'; did you mean "
      .. "'retry'?)")
    assert.has_error(function()
      pool:submit(bg, { name = "x", priorty = "high" }, print) end,
      "bad argument #2 to 'submit' (unknown option 'priorty'; did you mean "
      .. "'priority'?)")
    assert.has_error(function()
      pool:submit(bg, { name = "x", retry = { attempt = 3 } }, print) end,
      "bad argument #2 to 'submit' (unknown option 'retry.attempt'; did you "
      .. "mean 'retry.attempts'?)")
    assert.has_error(function()
      pool:submit(bg, { name = 7 }, print) end,
      "bad argument #2 to 'submit' (field 'name' must be a string, got "
      .. "number)")
    -- Nothing was submitted or counted by any of these.
    local s = pool:stats()
    assert.equal(0, s.submitted)
    assert.equal(0, s.rejected)
    assert.is_true(pool:drain())
  end)

  it("a saga and each of its steps are strict: 'compensation' for "
     .. "'compensate' raises instead of skipping the compensation",
     function()
    assert.has_error(function()
      tether.saga { name = "trip",
        { name = "hotel", action = print, compensation = print } } end,
      "bad argument #1 to 'saga' (unknown option '[1].compensation'; did "
      .. "you mean '[1].compensate'?)")
    assert.has_error(function()
      tether.saga { name = "trip", compensation_timout = 1,
                    { action = print } } end,
      "bad argument #1 to 'saga' (unknown option 'compensation_timout'; "
      .. "did you mean 'compensation_timeout'?)")
    assert.has_error(function()
      tether.saga { retry = { atempts = 2 }, { action = print } } end,
      "bad argument #1 to 'saga' (unknown option 'retry.atempts'; did you "
      .. "mean 'retry.attempts'?)")
  end)

  it("singleflight's call options are strict", function()
    local sf = tether.singleflight()
    assert.has_error(function()
      sf:call(bg, "k", function() end, { timout = 1 }) end,
      "bad argument #4 to 'call' (unknown option 'timout'; did you mean "
      .. "'timeout'?)")
    assert.has_error(function()
      sf:call(bg, "k", function() end, { cancel_when_abandoned = 1 }) end,
      "bad argument #4 to 'call' (field 'cancel_when_abandoned' must be a "
      .. "boolean, got number)")
  end)

  it("a nested table's field errors name the field by its whole path",
     function()
    assert.has_error(function()
      tether.pool { metrics = { max_tenants = 0 } } end,
      "bad argument #1 to 'pool' (field 'metrics.max_tenants' must be "
      .. "between 1 and 100000)")
    assert.has_error(function()
      tether.pool { metrics = { tenant = 1 } } end,
      "bad argument #1 to 'pool' (field 'metrics.tenant' must be a boolean, "
      .. "got number)")
    assert.has_error(function()
      tether.http.server { handler = function() end,
                           tls = { cert = 1, key = "k.pem" } } end,
      "bad argument #1 to 'server' (field 'tls.cert' must be a string, "
      .. "got number)")
  end)

  it("one retry reader: pools, submissions and sagas take the same "
     .. "fields with the same limits and say so in the same words",
     function()
    local pool = tether.pool { name = "r", workers = 1 }
    local cases = {
      { { attempts = 0 },
        "field 'retry.attempts' must be between 1 and 1000000" },
      { { jitter = 2 }, "field 'retry.jitter' must be between 0 and 1" },
      { { factor = 0.5 }, "field 'retry.factor' must be at least 1" },
      { { backoff = -1 }, "field 'retry.backoff' must be at least 0" },
      { { max_backoff = "1" },
        "field 'retry.max_backoff' must be a number, got string" },
    }
    for _, c in ipairs(cases) do
      assert.has_error(function() tether.pool { retry = c[1] } end,
        "bad argument #1 to 'pool' (" .. c[2] .. ")")
      assert.has_error(function()
        pool:submit(bg, { retry = c[1] }, print) end,
        "bad argument #2 to 'submit' (" .. c[2] .. ")")
      assert.has_error(function()
        tether.saga { retry = c[1], { action = print } } end,
        "bad argument #1 to 'saga' (" .. c[2] .. ")")
    end
    -- The saga's former own limit (1,000 attempts) is gone: one set.
    local tries = 0
    local s = tether.saga { retry = { attempts = 1500, backoff = 0 },
      { action = function() end,
        compensate = function()
          tries = tries + 1
          if tries < 1500 then error("again") end
        end },
      { action = function() error("stop") end } }
    local ok, _, report = s:run(bg)
    assert.is_nil(ok)
    assert.equal(1500, tries)
    assert.equal("compensated", report.steps[1].status)
    assert.is_true(pool:drain())
  end)
end)

describe("pool:id()", function()
  it("is a unique integer per pool, whatever the names", function()
    local a = tether.pool { name = "same", workers = 1 }
    local b = tether.pool { name = "same", workers = 1 }
    assert.equal("integer", math.type(a:id()))
    assert.is_true(a:id() > 0)
    assert.not_equal(a:id(), b:id())
    assert.equal(a:id(), a:id())
    -- Another thread sees the same id for the same pool.
    local h = tether.go(function(p) return p:id() end, a)
    assert.equal(a:id(), h:wait())
    assert.is_true(a:drain())
    assert.is_true(b:drain())
  end)
end)

describe("messages", function()
  it("select says its limit", function()
    local cases = {}
    for i = 1, 65 do cases[i] = tether.default end
    assert.has_error(function() tether.select(table.unpack(cases)) end,
      "bad argument #65 to 'select' (too many cases (at most 64))")
    -- Sixty-four cases are fine: 63 nil cases and the default.
    local t = {}
    t[64] = tether.default
    assert.equal(64, tether.select(table.unpack(t, 1, 64)))
  end)

  it("retry_dead of an unknown id names the id and the pool", function()
    local pool = tether.pool { name = "x", workers = 1, quiet = true }
    local h, err = pool:retry_dead(8399)
    assert.is_nil(h)
    assert.equal("invalid", err.code)
    assert.equal("no dead letter with id 8399 in pool 'x'", err.message)
    -- A dead letter retried once is gone: the second retry says so.
    pool:submit(bg, "doomed", function() error("no") end):wait()
    local id = pool:dead_letters()[1].id
    assert.is_truthy(pool:retry_dead(id))
    h, err = pool:retry_dead(id)
    assert.is_nil(h)
    assert.equal(("no dead letter with id %d in pool 'x'"):format(id),
                 err.message)
    assert.is_true(pool:drain())
  end)

  it("each invalid pool construction has its own message", function()
    assert.has_error(function()
      tether.pool { workers = 3, priorities = { high = { workers = 1 },
                                                low = { workers = 1 } } }
    end,
      "bad argument #1 to 'pool' (field 'workers' (3) must equal the sum "
      .. "of the priority classes' workers (2), or be left out)")
    assert.has_error(function()
      tether.pool { priorities = { { name = "a", workers = 1 },
                                   { name = "a", workers = 1 } } } end,
      "bad argument #1 to 'pool' (priority class 'a' is listed twice)")
    assert.has_error(function()
      tether.pool { priorities = { { name = "a", workers = 4000 },
                                   { name = "b", workers = 1000 } } } end,
      "bad argument #1 to 'pool' (the priority classes have 5000 workers "
      .. "in all; at most 4096)")
    assert.has_error(function()
      tether.pool { quotas = { acme = 1 } } end,
      "bad argument #1 to 'pool' (field 'quotas' needs a 'tenant_key')")
    assert.has_error(function() tether.pool { name = 5 } end,
      "bad argument #1 to 'pool' (field 'name' must be a string, got "
      .. "number)")
    assert.has_error(function() tether.pool { interrupt = 1 } end,
      "bad argument #1 to 'pool' (field 'interrupt' must be a boolean, got "
      .. "number)")
    -- A valid combination still works: workers equal to the sum.
    local p = tether.pool { workers = 2, quiet = true,
      priorities = { high = { workers = 1 }, low = { workers = 1 } } }
    assert.is_true(p:drain())
  end)
end)
