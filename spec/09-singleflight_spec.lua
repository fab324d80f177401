-- Singleflight: one load per key in flight, shared with every caller,
-- detached from each caller's context.
local tether = require "tether"

local bg = tether.background()

describe("tether.singleflight", function()
  it("runs fn once for concurrent callers and shares the value", function()
    local sf = tether.singleflight()
    local calls = tether.chan(100)
    local hs = {}
    for i = 1, 8 do
      hs[i] = tether.go(function(s, c)
        return s:call(tether.background(), "user:7", function(ctx)
          c:send(true)
          tether.sleep(0.05)
          return { id = 7, name = "ann" }
        end)
      end, sf, calls)
    end
    for i = 1, 8 do
      local v, err, shared = hs[i]:wait()
      assert.same({ id = 7, name = "ann" }, v)
      assert.is_nil(err)
      assert.is_true(shared)
    end
    assert.equal(1, calls:len())
  end)

  it("scenario 10: a caller whose context is canceled returns at once; "
     .. "the other gets the value; the loader ran once", function()
    local sf = tether.singleflight()
    local calls = tether.chan(10)
    local function loader(ctx, c)
      c:send(true)
      tether.sleep(0.05, ctx)
      return "value", ctx:value("who")
    end
    local caller1, cancel = tether.with_cancel(
      tether.with_value(bg, "who", "first"))
    local first = tether.go(function(ctx, s, l, c)
      return s:call(ctx, "k", function(w) return l(w, c) end)
    end, caller1, sf, loader, calls)
    local second = tether.go(function(s, l, c)
      tether.sleep(0.01)
      return s:call(tether.background(), "k", function(w) return l(w, c) end)
    end, sf, loader, calls)
    tether.sleep(0.02)
    cancel()
    local v1, e1 = first:wait()
    assert.is_nil(v1)
    assert.equal(tether.canceled, e1)
    local v2, e2 = second:wait()
    assert.equal("value", v2)
    assert.is_nil(e2)
    assert.equal(1, calls:len())
  end)

  it("shares a failed load as an error and does not cache it", function()
    local sf = tether.singleflight()
    local n = tether.chan(10)
    local v, err = sf:call(bg, "k", function() error("db down") end)
    assert.is_nil(v)
    assert.matches("db down", tostring(err))
    v, err = sf:call(bg, "k", function(ctx) n:send(1) return "up" end)
    assert.equal("up", v)
    assert.is_nil(err)
    assert.equal(1, n:len())
  end)

  it("the loader runs detached, under its own timeout, with the "
     .. "caller's values", function()
    local sf = tether.singleflight()
    local caller = tether.with_cancel(tether.with_value(bg, "trace", "t-1"))
    local err, has_deadline, trace = sf:call(caller, "x", function(ctx)
      return { ctx:err(), ctx:deadline() ~= nil, ctx:value("trace") }
    end, { timeout = 5 })
    assert.is_nil(has_deadline)  -- one value: the table
    assert.same({ nil, true, "t-1" }, err)
    -- A caller whose context is already done does not start a load.
    local done = tether.with_timeout(bg, 0)
    local v, e = sf:call(done, "y", function() return "never" end)
    assert.is_nil(v)
    assert.equal(tether.deadline_exceeded, e)
    assert.equal(0, sf:inflight())
  end)

  it("cancel_when_abandoned cancels the work when the last caller leaves",
     function()
    local sf = tether.singleflight()
    local saw = tether.chan(1)
    local ctx, cancel = tether.with_cancel(bg)
    local h = tether.go(function(c, s, out)
      return s:call(c, "slow", function(w)
        local _, err = tether.sleep(5, w)
        out:send(tostring(err))
      end, { cancel_when_abandoned = true })
    end, ctx, sf, saw)
    tether.sleep(0.02)
    cancel()
    local _, err = h:wait()
    assert.equal(tether.canceled, err)
    assert.equal("context canceled", saw:recv())
  end)

  it("forget starts a new run for the key", function()
    local sf = tether.singleflight()
    local gate = tether.chan()
    local first = tether.go(function(s, g)
      return s:call(tether.background(), "k", function() g:recv() return 1 end)
    end, sf, gate)
    while sf:inflight() < 1 do tether.sleep(0.001) end
    sf:forget("k")
    local v = sf:call(bg, "k", function() return 2 end)
    assert.equal(2, v)
    gate:send(true)
    assert.equal(1, first:wait())
  end)

  it("bad input", function()
    local sf = tether.singleflight()
    assert.has_error(function() sf:call(nil, "k", print) end,
      "bad argument #1 to 'call' (tether.Context expected, got nil)")
    assert.has_error(function() sf:call(bg, {}, print) end,
      "bad argument #2 to 'call' (string expected, got table)")
    assert.has_error(function() sf:call(bg, "k") end,
      "bad argument #3 to 'call' (function expected, got no value)")
    assert.has_error(function()
      sf:call(bg, "k", print, { timeout = -1 }) end,
      "bad argument #4 to 'call' (field 'timeout' must be at least 0)")
  end)
end)
