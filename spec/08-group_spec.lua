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
      local ok, err = tether.sleep(10, ctx)
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
    assert.has_error(function() tether.group(bg, { limit = 0 }) end,
      "bad argument #2 to 'group' (field 'limit' must be a positive "
      .. "integer)")
    local g = tether.group(bg)
    assert.has_error(function() g:go(1) end,
      "bad argument #1 to 'go' (function expected, got number)")
  end)
end)
