-- Singleflight: one load per key in flight, shared with every caller,
-- detached from each caller's context.
local tether = require "tether"

local bg = tether.background()

local eventually = require "spec.support.eventually"

describe("tether.singleflight", function()
  it("runs fn once for concurrent callers and shares the value", function()
    local sf = tether.singleflight()
    local calls, gate = tether.chan(100), tether.chan()
    local hs = {}
    for i = 1, 8 do
      hs[i] = tether.go(function(s, c, g)
        return s:call(tether.background(), "user:7", function(ctx)
          c:send(true)
          g:recv()
          return { id = 7, name = "ann" }
        end)
      end, sf, calls, gate)
    end
    -- The load goes on only once all eight callers wait for it.
    eventually(function() return sf:waiting("user:7") == 8 end,
               "eight callers of one load")
    gate:send(true)
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
    local calls, gate = tether.chan(10), tether.chan()
    local function loader(ctx, c, g)
      c:send(true)
      g:recv()
      return "value", ctx:value("who")
    end
    local limit = tether.with_timeout(bg, 10)
    -- One caller starts the load, which waits for the gate...
    local other = tether.go(function(s, l, c, g)
      return s:call(tether.with_value(tether.background(), "who", "other"),
                    "k", function(w) return l(w, c, g) end)
    end, sf, loader, calls, gate)
    assert.is_truthy(calls:recv(limit))
    -- ...another joins it, and its context is canceled.
    local ctx, cancel = tether.with_cancel(bg)
    local leaving = tether.go(function(c, s, l, ch, g)
      return s:call(c, "k", function(w) return l(w, ch, g) end)
    end, ctx, sf, loader, calls, gate)
    eventually(function() return sf:waiting("k") == 2 end,
               "the second caller to join")
    cancel()
    local v1, e1 = leaving:wait(limit)
    assert.is_nil(v1)
    assert.equal(tether.canceled, e1)
    -- The load went on for the other, which gets the value.
    assert.equal(1, sf:waiting("k"))
    gate:send(true)
    local v2, e2 = other:wait(limit)
    assert.equal("value", v2)
    assert.is_nil(e2)
    assert.equal(0, calls:len())  -- the loader ran once
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
    local err, has_deadline = sf:call(caller, "x", function(ctx)
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
    eventually(function() return sf:waiting("slow") == 1 end,
               "the caller to start the load")
    cancel()
    local limit = tether.with_timeout(bg, 10)
    local _, err = h:wait(limit)
    assert.equal(tether.canceled, err)
    -- The load saw its context canceled, well before its 5 s sleep.
    assert.equal("context canceled", saw:recv(limit))
  end)

  it("forget starts a new run for the key", function()
    local sf = tether.singleflight()
    local gate = tether.chan()
    local first = tether.go(function(s, g)
      return s:call(tether.background(), "k", function() g:recv() return 1 end)
    end, sf, gate)
    eventually(function() return sf:inflight() == 1 end, "the first load")
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
