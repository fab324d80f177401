-- Errgroups: the first error cancels the group's context and is what
-- wait returns; a limit bounds concurrency.
local tether = require "tether"

local bg = tether.background()

describe("tether.group", function()
  it("returns nil when every task succeeds, and cancels gctx", function()
    local g, gctx = tether.group(bg)
    local out = tether.chan(2)
    g:go(function(ctx, o) o:send(1) end, out)
    g:go(function(ctx, o) o:send(2) end, out)
    assert.is_nil(g:wait())
    assert.equal(2, out:len())
    assert.equal(tether.canceled, gctx:err())
    assert.equal(tether.canceled, gctx:cause())
  end)

  it("scenario 9: the first error cancels gctx with that cause and is "
     .. "what wait returns; detached work still completes", function()
    local g, gctx = tether.group(bg)
    local second_saw = tether.chan(1)
    g:go(function(ctx)
      error("fetch A failed")
    end)
    g:go(function(ctx, saw)
      local _, err = tether.sleep(10, ctx)
      saw:send(err)
    end, second_saw)
    -- The audit runs on after the group's context ends: it waits for that
    -- (5 s at most), then looks at its own, detached context.
    local audit = tether.go(function(group_ctx, ctx)
      group_ctx:wait(5)
      return "logged", ctx:err(), group_ctx:err()
    end, gctx, tether.with_timeout(tether.without_cancel(gctx), 5))
    local err = g:wait()
    assert.matches("fetch A failed", tostring(err))
    assert.equal(tether.canceled, gctx:err())
    assert.equal(err, gctx:cause())
    assert.equal(tether.canceled, second_saw:recv())
    local msg, aerr, gerr = audit:wait()
    assert.equal("logged", msg)
    assert.is_nil(aerr)
    assert.equal(tether.canceled, gerr)
  end)

  it("only the first error counts", function()
    local g = tether.group(bg)
    local order = tether.chan()
    g:go(function(ctx, o) o:recv(); error("first") end, order)
    -- The second fails only once the first error has canceled the group's
    -- context (or after 5 s): a group that kept the last error would
    -- report it.
    g:go(function(ctx) ctx:wait(5); error("second") end)
    order:send(true)
    assert.matches("first", tostring(g:wait()))
  end)

  it("a limit bounds concurrency; try_go refuses at the limit", function()
    local g = tether.group(bg, { limit = 2 })
    local gate, peak = tether.chan(), tether.chan(100)
    local running = tether.chan(100)
    for _ = 1, 2 do
      g:go(function(ctx, gt, r) r:send(true); gt:recv() end, gate, running)
    end
    running:recv(); running:recv()
    assert.equal(2, g:active())
    assert.is_false(g:try_go(function() end))
    gate:send(true)
    gate:send(true)
    assert.is_nil(g:wait())
    assert.is_true(g:try_go(function() end))
    assert.is_nil(g:wait())
    -- go waits for a slot: six tasks through a limit of two, never more
    -- than two at once.
    local g2 = tether.group(bg, { limit = 2 })
    local live = tether.chan(10)
    for _ = 1, 6 do
      g2:go(function(ctx, l, p)
        l:send(true)
        p:send(l:len())
        tether.sleep(0.005)
        l:recv()
      end, live, peak)
    end
    assert.is_nil(g2:wait())
    local max = 0
    while peak:len() > 0 do max = math.max(max, (peak:recv())) end
    assert.is_true(max <= 2, "peak " .. max)
  end)

  it("limit = 0 admits no task, as Go's SetLimit(0); go raises instead "
     .. "of waiting forever", function()
    local g = tether.group(bg, { limit = 0 })
    assert.is_false(g:try_go(function() end))
    assert.has_error(function() g:go(function() end) end,
      "group admits no task (limit 0): go would wait forever; use try_go "
      .. "or a limit above 0")
    assert.equal(0, g:active())
    assert.is_nil(g:wait())
  end)

  it("a negative limit is no limit, as Go's SetLimit(-1)", function()
    local g = tether.group(bg, { limit = -1 })
    local release, go_on = tether.with_cancel(bg)
    local started = tether.chan(8)
    for _ = 1, 8 do
      assert.is_true(g:try_go(function(_, s, r) s:send(true); r:wait(10) end,
                              started, release))
    end
    for _ = 1, 8 do started:recv() end
    assert.equal(8, g:active())
    go_on()
    assert.is_nil(g:wait())
  end)

  it("a task that cannot start is the group's error: wait returns it and "
     .. "gctx is canceled with it", function()
    local g, gctx = tether.group(bg)
    local out = tether.chan(1)
    -- No executor thread is left, and the next one cannot be made.
    tether.shutdown()
    tether.core._test_fail_threads(1)
    local ok, err = g:go(function(_, o) o:send("ran") end, out)
    assert.is_nil(ok)
    assert.equal("no_thread", err.code)
    -- A caller that never looked at what go returned still learns it.
    local werr = g:wait()
    assert.is_not_nil(werr)
    assert.equal("no_thread", werr.code)
    assert.equal(tether.canceled, gctx:err())
    assert.equal(werr, gctx:cause())
    assert.equal(0, out:len())
    -- try_go's start failure is the group's error too; the first stays.
    local g2 = tether.group(bg)
    tether.shutdown()
    tether.core._test_fail_threads(1)
    assert.is_false(g2:try_go(function() end))
    assert.equal("no_thread", g2:wait().code)
    g2:go(function() error("later") end)
    assert.equal("no_thread", g2:wait().code)
  end)

  it("can be waited on again after more go calls", function()
    local g = tether.group(bg)
    g:go(function() end)
    assert.is_nil(g:wait())
    g:go(function() error("later") end)
    assert.matches("later", tostring(g:wait()))
  end)

  it("bad input", function()
    assert.has_error(function() tether.group() end,
      "bad argument #1 to 'group' (tether.Context expected, got no value)")
    assert.has_error(function() tether.group(bg, { limit = 1.5 }) end,
      "bad argument #2 to 'group' (field 'limit' must be an integer, got "
      .. "number)")
    assert.has_error(function() tether.group(bg, { limit = 1 << 21 }) end,
      "bad argument #2 to 'group' (field 'limit' must be at most 1048576 "
      .. "(negative: no limit))")
    assert.has_error(function() tether.group(bg, { limt = 2 }) end,
      "bad argument #2 to 'group' (unknown option 'limt'; did you mean "
      .. "'limit'?)")
    local g = tether.group(bg)
    assert.has_error(function() g:go(1) end,
      "bad argument #1 to 'go' (function expected, got number)")
  end)
end)
