-- Sagas: steps in order; on failure, detached compensations in reverse.
local tether = require "tether"

local bg = tether.background()

local function steps(log, fail_at, opts)
  opts = opts or {}
  local t = { name = "trip", compensation_timeout = opts.timeout or 1,
              retry = opts.retry, on_compensation_failure = opts.hook }
  for i, name in ipairs { "flight", "hotel", "card" } do
    t[i] = {
      name = name,
      action = function(ctx, st)
        if opts.cancel_at == i then st.cancel() end
        if fail_at == i then error(name .. " failed") end
        log[#log + 1] = name
      end,
      compensate = function(ctx)
        log[#log + 1] = "undo " .. name .. " (" .. tostring(ctx:err()) .. ")"
        if opts.compensate then opts.compensate(ctx, name) end
      end,
    }
  end
  return tether.saga(t)
end

describe("tether.saga", function()
  it("runs every step in order when all succeed", function()
    local log = {}
    local ok, err, report = steps(log):run(bg, {})
    assert.is_true(ok)
    assert.is_nil(err)
    assert.same({ "flight", "hotel", "card" }, log)
    assert.is_true(report.ok)
    assert.equal("done", report.steps[3].status)
  end)

  it("scenario 14: step three fails; steps two and one are compensated, "
     .. "in that order, detached even when the context was canceled",
     function()
    local log = {}
    local ctx, cancel = tether.with_cancel(bg)
    local ok, err, report = steps(log, 3, { cancel_at = 3 })
      :run(ctx, { cancel = cancel })
    assert.is_nil(ok)
    assert.matches("card failed", tostring(err))
    assert.equal(tether.canceled, ctx:err())
    assert.same({ "flight", "hotel", "undo hotel (nil)", "undo flight (nil)" },
                log)
    assert.equal("card", report.failed_step)
    assert.equal("compensated", report.steps[1].status)
    assert.equal("compensated", report.steps[2].status)
    assert.equal("failed", report.steps[3].status)
  end)

  it("a context canceled between steps stops the saga and compensates "
     .. "what ran", function()
    local log = {}
    local ctx, cancel = tether.with_cancel(bg)
    local s = tether.saga {
      { name = "a", action = function() log[#log + 1] = "a" end,
        compensate = function() log[#log + 1] = "undo a" end },
      { name = "b", action = function() cancel() log[#log + 1] = "b" end,
        compensate = function() log[#log + 1] = "undo b" end },
      { name = "c", action = function() log[#log + 1] = "c" end },
    }
    local ok, err, report = s:run(ctx)
    assert.is_nil(ok)
    assert.equal(tether.canceled, err)
    assert.same({ "a", "b", "undo b", "undo a" }, log)
    assert.equal("c", report.failed_step)
    assert.equal("not_run", report.steps[3].status)
  end)

  it("compensations are bounded by their own timeout and retried",
     function()
    local log, tries = {}, 0
    local failures = {}
    local ok, _, report = steps(log, 3, {
      timeout = 0.02,
      retry = { attempts = 3, backoff = 0.001 },
      hook = function(info) failures[#failures + 1] = info end,
      compensate = function(ctx, name)
        if name == "hotel" then
          tries = tries + 1
          local _, e = tether.sleep(5, ctx)
          error(e)
        end
      end,
    }):run(bg, {})
    assert.is_nil(ok)
    assert.equal(3, tries)
    assert.equal("compensation_failed", report.steps[2].status)
    assert.equal(3, report.steps[2].attempts)
    assert.equal(tether.deadline_exceeded, report.steps[2].error)
    assert.equal("compensated", report.steps[1].status)
    assert.equal(1, report.compensation_failures)
    assert.equal(1, #failures)
    assert.equal("hotel", failures[1].step)
    assert.equal(3, failures[1].attempts)
  end)

  it("a compensation that still fails becomes a dead letter", function()
    local dlq = tether.chan(10)
    local s = tether.saga { name = "refund-flow", dlq = dlq,
      { name = "debit", action = function() end,
        compensate = function() error("ledger offline") end },
      { name = "notify", action = function() error("smtp down") end },
    }
    local ok, _, report = s:run(bg)
    assert.is_nil(ok)
    assert.equal(1, report.compensation_failures)
    local d = dlq:recv()
    assert.equal("refund-flow/debit (compensation)", d.name)
    assert.equal("debit", d.step)
    assert.equal(1, d.attempts)
    assert.matches("ledger offline", tostring(d.error))
  end)

  it("a step may fail by returning nil and an error", function()
    local s = tether.saga {
      { name = "check", action = function() return nil, "out of stock" end },
    }
    local ok, err = s:run(bg)
    assert.is_nil(ok)
    assert.equal("out of stock", tostring(err))
  end)

  it("is shared by reference like every tether object: another thread "
     .. "runs it, its steps as copies", function()
    local s = tether.saga { name = "trip",
      { name = "flight", action = function(ctx, st) st.log[#st.log + 1] =
          "flight" end,
        compensate = function(ctx, st) st.log[#st.log + 1] = "undo flight"
        end },
      { name = "hotel", action = function() error("no rooms") end } }
    local pool = tether.pool { name = "sagas", workers = 2 }
    local hs = {}
    for i = 1, 2 do
      hs[i] = pool:submit(bg, "book", function(ctx, saga)
        local st = { log = {} }
        local ok, err, report = saga:run(ctx, st)
        return ok, tostring(err), table.concat(st.log, ","),
               report.steps[1].status, report.failed_step
      end, s)
    end
    for i = 1, 2 do
      local ok, err, log, status, failed = hs[i]:wait()
      assert.is_nil(ok)
      assert.matches("no rooms", err)
      assert.equal("flight,undo flight", log)
      assert.equal("compensated", status)
      assert.equal("hotel", failed)
    end
    -- And through a channel, from tether.go.
    local ch = tether.chan(1)
    ch:send(s)
    local h = tether.go(function(c)
      local saga = c:recv()
      local st = { log = {} }
      return saga:run(tether.background(), st), table.concat(st.log, ",")
    end, ch)
    local ok = h:wait()
    assert.is_nil(ok)
    assert.is_true(pool:drain())
  end)

  it("a saga whose steps cannot be copied is refused when it would cross, "
     .. "with the reason", function()
    local co = coroutine.create(print)
    local s = tether.saga { name = "local-only",
      { name = "resume", action = function() coroutine.resume(co) end } }
    -- It still runs where it was made.
    assert.is_true((s:run(bg)))
    local pool = tether.pool { name = "refuse", workers = 1 }
    assert.has_error(function()
      pool:submit(bg, "run", function(ctx, saga) return saga:run(ctx) end, s)
    end, "cannot transfer argument #1 of task 'run' (saga 'local-only' runs "
      .. "only in the state that made it: cannot transfer upvalue 'co' of "
      .. "field 'action' of field [1] of saga 'local-only' (thread))")
    assert.has_error(function() tether.chan(1):send(s) end,
      "cannot transfer channel item (saga 'local-only' runs only in the "
      .. "state that made it: cannot transfer upvalue 'co' of field "
      .. "'action' of field [1] of saga 'local-only' (thread))")
    assert.equal(0, pool:stats().submitted)
    assert.is_true(pool:drain())
  end)

  it("bad input", function()
    assert.has_error(function() tether.saga {} end,
      "bad argument #1 to 'saga' (a saga needs at least one step)")
    assert.has_error(function() tether.saga { { name = "x" } } end,
      "bad argument #1 to 'saga' (step 1 needs a function 'action')")
    assert.has_error(function()
      tether.saga { compensation_timeout = -1, { action = print } } end,
      "bad argument #1 to 'saga' (field 'compensation_timeout' must be at "
      .. "least 0)")
    local s = tether.saga { { action = print } }
    assert.has_error(function() s:run("ctx") end,
      "bad argument #1 to 'run' (tether.Context expected, got string)")
  end)
end)
