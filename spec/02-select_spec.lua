-- Waiting: select over contexts, timers, channels and handles.
local tether = require "tether"

describe("select", function()
  it("takes default at once when nothing is ready", function()
    local ctx = tether.with_cancel(tether.background())
    local i = tether.select(ctx, tether.chan(), tether.default)
    assert.equal(3, i)
  end)

  it("scenario 5: a detached context has no done channel", function()
    local p, cancel = tether.with_cancel(tether.background())
    local d = tether.without_cancel(p)
    cancel()
    assert.is_nil(d:done())
    assert.is_nil(tether.background():done())
    local t0 = tether.now()
    local i = tether.select(d:done(), tether.default)
    assert.equal(2, i)
    assert.is_true(tether.now() - t0 < 1)
  end)

  it("a nil case never fires", function()
    local i = tether.select(nil, tether.after(0.01))
    assert.equal(2, i)
  end)

  it("a done context fires with its error", function()
    local ctx, cancel = tether.with_cancel(tether.background())
    cancel()
    local i, err = tether.select(tether.after(10), ctx:done())
    assert.equal(2, i)
    assert.equal(tether.canceled, err)
  end)

  it("a timer fires after its time", function()
    local t0 = tether.now()
    local i, ok = tether.select(tether.chan(), tether.after(0.02))
    assert.equal(2, i)
    assert.is_true(ok)
    assert.is_true(tether.now() - t0 >= 0.019)
  end)

  it("a deadline wakes a blocked select", function()
    local ctx = tether.with_timeout(tether.background(), 0.02)
    local i, err = tether.select(tether.chan(), ctx)
    assert.equal(2, i)
    assert.equal(tether.deadline_exceeded, err)
  end)

  it("receives from a ready channel with value and ok", function()
    local ch = tether.chan(1)
    ch:send({ a = 1 })
    local i, v, ok = tether.select(tether.after(10), ch)
    assert.equal(2, i)
    assert.same({ a = 1 }, v)
    assert.is_true(ok)
    ch:close()
    i, v, ok = tether.select(ch)
    assert.equal(1, i)
    assert.is_nil(v)
    assert.is_false(ok)
  end)

  it("sends with a send case", function()
    local ch = tether.chan(1)
    local i, ok = tether.select(ch:send_case("x"), tether.default)
    assert.equal(1, i)
    assert.is_true(ok)
    assert.equal("x", ch:recv())
    local sc = ch:send_case("y")
    ch:send("fill")
    i = tether.select(sc, tether.default)
    assert.equal(2, i)
  end)

  it("chooses at random among ready cases", function()
    local a, b = tether.chan(100), tether.chan(100)
    for _ = 1, 100 do a:send(1); b:send(2) end
    local seen = { 0, 0 }
    for _ = 1, 100 do
      local i = tether.select(a, b)
      seen[i] = seen[i] + 1
    end
    assert.is_true(seen[1] > 10 and seen[2] > 10,
                   ("picks: %d / %d"):format(seen[1], seen[2]))
  end)

  it("sleep returns true, or nil and the context's error", function()
    assert.is_true(tether.sleep(0.001))
    local ctx = tether.with_timeout(tether.background(), 0.01)
    local ok, err = tether.sleep(10, ctx)
    assert.is_nil(ok)
    assert.equal(tether.deadline_exceeded, err)
  end)

  it("now is monotonic seconds", function()
    local a = tether.now()
    local b = tether.now()
    assert.is_number(a)
    assert.is_true(b >= a)
  end)

  it("rejects what cannot be waited on", function()
    assert.has_error(function() tether.select({}) end,
      "bad argument #1 to 'select' (waitable expected, got table)")
    assert.has_error(function()
      tether.select(tether.default, tether.default) end,
      "bad argument #2 to 'select' (more than one default case)")
    assert.has_error(function() tether.after(-1) end,
      "bad argument #1 to 'after' (non-negative number of seconds expected)")
    assert.has_error(function() tether.sleep(0 / 0) end,
      "bad argument #1 to 'sleep' (non-negative number of seconds expected)")
    assert.has_error(function() tether.sleep(0, "ctx") end,
      "bad argument #2 to 'sleep' (tether.Context expected, got string)")
  end)
end)
