-- Channels: buffered and unbuffered, across threads; chains of channels
-- and the sends refused because they would make a reference cycle.
local tether = require "tether"
local scale = require "spec.support.scale"

local CYCLE = "cannot send: the value holds this channel (a reference cycle)"

local function rss_kib()
  local f = assert(io.open("/proc/self/status"))
  local kib = f:read("a"):match("VmRSS:%s+(%d+) kB")
  f:close()
  return tonumber(kib)
end

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

  it("a million channels, each holding the next, are built and dropped",
     function()
    local n = scale.n(1000000)
    local head = tether.chan(1)
    local tail, sent = head, 0
    for _ = 1, n do
      local c = tether.chan(1)
      if tail:send(c) then sent = sent + 1 end
      tail = c
    end
    assert.equal(n, sent)
    assert.equal(1, head:len())
    -- The last reference frees a million channels, each holding the next,
    -- in constant stack.
    head, tail = nil, nil  -- luacheck: ignore 311
    collectgarbage()
    collectgarbage()
    local c = tether.chan(1)
    assert.is_true(c:send(tether.chan(1)))
  end)

  it("refuses a send that would make a channel hold itself", function()
    local c = tether.chan(4)
    assert.has_error(function() c:send(c) end, CYCLE)
    assert.has_error(function() c:try_send(c) end, CYCLE)
    assert.has_error(function() c:send({ inner = { c } }) end, CYCLE)
    assert.has_error(function()
      c:send(tether.with_value(tether.background(), "ch", c))
    end, CYCLE)
    assert.has_error(function()
      c:send(tether.error("failed", "wraps", { c }))
    end, CYCLE)
    assert.equal(0, c:len())
    -- Plain values and other channels still go.
    assert.is_true(c:send({ 1, 2, 3 }))
    assert.is_true(c:try_send(tether.chan(1)))
    assert.equal(2, c:len())
  end)

  it("refuses a send that would close a cycle through other objects",
     function()
    local a, b, c = tether.chan(1), tether.chan(1), tether.chan(1)
    a:send(b)
    b:send({ next = c })
    assert.has_error(function() c:send(a) end, CYCLE)
    assert.has_error(function() c:try_send({ a }) end, CYCLE)
    assert.has_error(function() c:send(b) end, CYCLE)
    local ctx = tether.with_value(tether.background(), "a", a)
    assert.has_error(function() c:send(ctx) end, CYCLE)
    -- A select send case is refused the same way, naming the case.
    assert.has_error(function()
      tether.select(tether.default, c:send_case({ a }))
    end, "bad argument #2 to 'select' (cannot send: the value holds its "
      .. "channel (a reference cycle))")
    assert.equal(0, c:len())
    -- Once b no longer holds c, a may go into c.
    b:recv()
    assert.is_true(c:send(a))
  end)

  it("200k attempted cycles leave memory flat", function()
    -- Under ThreadSanitizer each error raised from the module costs more
    -- than the one before (its longjmp is never matched to Lua's setjmp),
    -- so sanitized runs make fewer attempts.
    local n = scale.sanitized and math.min(scale.n(200000), 2000)
              or scale.n(200000)
    local function round()
      for _ = 1, n do
        local a, b = tether.chan(1), tether.chan(1)
        a:send(b)
        local ok, err = pcall(b.send, b, a)
        assert(not ok and err:find(CYCLE, 1, true), err)
      end
      collectgarbage()
      collectgarbage()
    end
    -- A first round warms the allocator up; a second one must then fit
    -- in the same memory (each pair is freed once dropped).
    round()
    local before = rss_kib()
    round()
    local grew = rss_kib() - before
    -- Under a sanitizer freed memory sits in quarantine: RSS says
    -- nothing there, the functional checks above still hold.
    if not scale.sanitized then
      assert.is_true(grew < 8192, ("RSS grew by %d KiB"):format(grew))
    end
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
