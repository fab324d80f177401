-- Channels: buffered and unbuffered, across threads.
local tether = require "tether"

describe("channels", function()
  it("buffered: send, recv, len, try_*", function()
    local ch = tether.chan(2)
    assert.equal(2, ch:cap())
    assert.is_true(ch:try_send(1))
    assert.is_true(ch:try_send(nil))
    assert.is_false(ch:try_send(3))
    assert.equal(2, ch:len())
    assert.equal(2, #ch)
    local v, ok = ch:recv()
    assert.equal(1, v)
    assert.is_true(ok)
    v, ok = ch:try_recv()
    assert.is_nil(v)
    assert.is_true(ok)
    v, ok = ch:try_recv()
    assert.is_nil(v)
    assert.is_false(ok)
  end)

  it("close: drains, then nil, false; misuse raises", function()
    local ch = tether.chan(3)
    ch:send("a")
    ch:close()
    assert.is_true(ch:closed())
    assert.equal("a", (ch:recv()))
    local v, ok = ch:recv()
    assert.is_nil(v)
    assert.is_false(ok)
    assert.has_error(function() ch:send(1) end, "send on closed channel")
    assert.has_error(function() ch:try_send(1) end, "send on closed channel")
    assert.has_error(function() ch:close() end, "close of closed channel")
  end)

  it("unbuffered: try_send fails with no receiver", function()
    local ch = tether.chan()
    assert.equal(0, ch:cap())
    assert.is_false(ch:try_send(1))
  end)

  it("recv and send are bounded by a context", function()
    local ch = tether.chan()
    local ctx = tether.with_timeout(tether.background(), 0.02)
    local v, ok, err = ch:recv(ctx)
    assert.is_nil(v)
    assert.is_false(ok)
    assert.equal(tether.deadline_exceeded, err)
    local sent, serr = ch:send(1, ctx)
    assert.is_nil(sent)
    assert.equal(tether.deadline_exceeded, serr)
  end)

  it("carries tables as copies and tether objects by reference", function()
    local ch = tether.chan(2)
    local t = { 1, { 2 } }
    ch:send(t)
    local got = ch:recv()
    assert.same(t, got)
    assert.is_false(rawequal(t, got))
    local ctx = tether.with_cancel(tether.background())
    ch:send(ctx)
    assert.equal(ctx, ch:recv())
  end)

  it("moves values between threads, unbuffered", function()
    local ch = tether.chan()
    local h = tether.go(function(c, n)
      for i = 1, n do c:send(i) end
      c:close()
      return "sent"
    end, ch, 1000)
    local sum = 0
    for v in function() local x, ok = ch:recv(); if ok then return x end end
    do sum = sum + v end
    assert.equal(1000 * 1001 / 2, sum)
    assert.equal("sent", h:wait())
  end)

  it("ping-pong between two threads and back", function()
    local ping, pong = tether.chan(), tether.chan()
    local h = tether.go(function(a, b)
      local n = 0
      while true do
        local v, ok = a:recv()
        if not ok then return n end
        n = n + 1
        b:send(v * 2)
      end
    end, ping, pong)
    for i = 1, 200 do
      ping:send(i)
      assert.equal(i * 2, pong:recv())
    end
    ping:close()
    assert.equal(200, h:wait())
  end)

  it("bad input", function()
    assert.has_error(function() tether.chan(-1) end,
      "bad argument #1 to 'chan' (capacity out of range (0 to 16777216))")
    assert.has_error(function() tether.chan("x") end,
      "bad argument #1 to 'chan' (number expected, got string)")
    local ch = tether.chan(1)
    assert.has_error(function() ch:send() end,
      "bad argument #1 to 'send' (value expected)")
    assert.has_error(function() ch.recv({}) end,
      "bad argument #1 to 'recv' (tether.Chan expected, got table)")
    assert.has_error(function() ch:recv("x") end,
      "bad argument #1 to 'recv' (tether.Context expected, got string)")
    assert.has_error(function() ch:send(coroutine.create(print)) end,
      "cannot transfer channel item (thread)")
  end)
end)
