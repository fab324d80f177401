-- Contexts: Go's context semantics (1.21+), in Lua.
local tether = require "tether"
local scale = require "spec.support.scale"

describe("contexts", function()
  it("runs on Lua 5.4", function()
    assert.equal("Lua 5.4", _VERSION)
  end)

  describe("roots", function()
    it("background and todo are never done", function()
      for _, c in ipairs { tether.background(), tether.todo() } do
        assert.is_nil(c:err())
        assert.is_nil(c:cause())
        assert.is_nil(c:done())
        assert.is_nil(c:deadline())
        assert.equal("context", tether.type(c))
      end
      assert.equal(tether.background(), tether.background())
      assert.not_equal(tether.background(), tether.todo())
    end)
  end)

  describe("errors", function()
    it("speak Go's words and compare with ==", function()
      assert.equal("context canceled", tostring(tether.canceled))
      assert.equal("context deadline exceeded",
                   tostring(tether.deadline_exceeded))
      assert.equal("canceled", tether.canceled.code)
      assert.equal("deadline_exceeded", tether.deadline_exceeded.code)
      local ctx, cancel = tether.with_cancel(tether.background())
      cancel()
      assert.equal(tether.canceled, ctx:err())
      assert.is_true(rawequal(tether.canceled, ctx:err()))
    end)

    it("a million errors, each the cause of the next, are built and "
       .. "dropped", function()
      local n = scale.n(1000000)
      local e = tether.error("failed", "root")
      for i = 1, n do e = tether.error("failed", "wrap " .. i, e) end
      assert.equal("wrap " .. n, tostring(e))
      assert.equal("wrap " .. (n - 1), tostring(e.cause))
      -- The last reference frees the whole chain, in constant stack.
      e = nil  -- luacheck: ignore 311
      collectgarbage()
      collectgarbage()
      assert.equal("x", tostring(tether.error("failed", "x", "y")))
    end)
  end)

  describe("with_cancel", function()
    it("cancel is idempotent and the first cancel wins", function()
      local ctx, cancel = tether.with_cancel_cause(tether.background())
      assert.is_nil(ctx:err())
      cancel("first")
      cancel("second")
      assert.equal(tether.canceled, ctx:err())
      assert.equal("first", ctx:cause())
    end)

    it("cause is the error when none was given", function()
      local ctx, cancel = tether.with_cancel(tether.background())
      cancel("ignored: with_cancel takes no cause")
      assert.equal(tether.canceled, ctx:cause())
    end)

    it("propagates to every descendant, through values", function()
      local root, cancel = tether.with_cancel(tether.background())
      local v = tether.with_value(root, "k", 1)
      local mid = tether.with_cancel(v)
      local leaf = tether.with_timeout(mid, 100)
      cancel()
      assert.equal(tether.canceled, v:err())
      assert.equal(tether.canceled, mid:err())
      assert.equal(tether.canceled, leaf:err())
      assert.is_true(leaf:wait(0))
    end)

    it("a child's cancel does not reach its parent", function()
      local p = tether.with_cancel(tether.background())
      local c, cancel = tether.with_cancel(p)
      cancel()
      assert.is_nil(p:err())
      assert.equal(tether.canceled, c:err())
    end)

    it("a child of a done parent is done at creation", function()
      local p, cancel = tether.with_cancel_cause(tether.background())
      cancel("gone")
      local c = tether.with_cancel(p)
      assert.equal(tether.canceled, c:err())
      assert.equal("gone", c:cause())
      local t = tether.with_timeout(p, 10)
      assert.equal(tether.canceled, t:err())
    end)

    it("cancel functions cross into tasks by reference and cancel there",
       function()
      local ctx, cancel = tether.with_cancel_cause(tether.background())
      assert.are.equal("cancelfunc", tether.type(cancel))
      assert.matches("^tether.CancelFunc: ", tostring(cancel))
      local back = tether.go(function(c, same)
        assert(rawequal(c, same))
        c("from a task")
        return c
      end, cancel, cancel):wait()
      assert.are.equal(tether.canceled, ctx:err())
      assert.are.equal("from a task", ctx:cause())
      assert.are.equal("cancelfunc", tether.type(back))
      back()  -- idempotent, from the copy that came back
      cancel("late")
      assert.are.equal("from a task", ctx:cause())
    end)

    it("cancel functions can be closed with <close>", function()
      local ctx
      do
        local c, _ <close> = tether.with_cancel(tether.background())
        ctx = c
        assert.is_nil(ctx:err())
      end
      assert.equal(tether.canceled, ctx:err())
    end)

    it("a million dropped children leave memory flat", function()
      local function rss_kib()
        local f = assert(io.open("/proc/self/status"))
        local kib = f:read("a"):match("VmRSS:%s+(%d+) kB")
        f:close()
        return tonumber(kib)
      end
      local p = tether.with_cancel(tether.background())
      local function round()
        for _ = 1, 1000000 do tether.with_cancel(p) end
        collectgarbage()
        collectgarbage()
      end
      -- A first round warms the allocator and the object cache up; a
      -- second million must then fit in the same memory.
      round()
      local heap, rss = collectgarbage("count"), rss_kib()
      round()
      local dheap = collectgarbage("count") - heap
      local drss = rss_kib() - rss
      assert.is_true(dheap < 256, ("Lua heap grew by %.0f KiB"):format(dheap))
      -- Under a sanitizer, its quarantine and shadow memory count in the
      -- RSS; the Lua heap check above still holds there.
      if os.getenv("TETHER_SANITIZER") == nil then
        assert.is_true(drss < 4096, ("RSS grew by %d KiB"):format(drss))
      end
      -- Every child unlinked itself: canceling the parent is immediate.
      local _, cancel = tether.with_cancel(p)
      cancel()
    end)
  end)

  describe("deadlines", function()
    it("a timeout fires deadline_exceeded with its cause", function()
      local ctx = tether.with_timeout(tether.background(), 0.02, "too slow")
      assert.is_nil(ctx:err())
      assert.is_true(ctx:wait(5))
      assert.equal(tether.deadline_exceeded, ctx:err())
      assert.equal("too slow", ctx:cause())
    end)

    it("the cause appears only when the timer fires", function()
      local ctx, cancel = tether.with_timeout(tether.background(), 10,
                                              "too slow")
      cancel()
      assert.equal(tether.canceled, ctx:err())
      assert.equal(tether.canceled, ctx:cause())
    end)

    it("a timeout of 0 or a past deadline is done at once", function()
      local a = tether.with_timeout(tether.background(), 0)
      local b = tether.with_deadline(tether.background(), tether.now() - 1)
      assert.equal(tether.deadline_exceeded, a:err())
      assert.equal(tether.deadline_exceeded, b:err())
    end)

    it("a child's deadline is the earlier of its own and its parent's",
       function()
      local p = tether.with_timeout(tether.background(), 1)
      local later = tether.with_timeout(p, 100)
      local sooner = tether.with_timeout(p, 0.5)
      assert.equal(p:deadline(), later:deadline())
      assert.is_true(sooner:deadline() < p:deadline())
      local now = tether.now()
      assert.is_true(p:deadline() > now and p:deadline() <= now + 1)
    end)

    it("a parent's deadline reaches the child as deadline_exceeded",
       function()
      local p = tether.with_timeout(tether.background(), 0.02, "parent")
      local c = tether.with_cancel(p)
      assert.is_true(c:wait(5))
      assert.equal(tether.deadline_exceeded, c:err())
      assert.equal("parent", c:cause())
    end)

    it("wait returns false when its own timeout runs out", function()
      local ctx = tether.with_cancel(tether.background())
      assert.is_false(ctx:wait(0.01))
      assert.is_false(tether.background():wait(0.01))
    end)
  end)

  describe("values", function()
    it("shadow outward and cross a nil", function()
      local a = tether.with_value(tether.background(), "user", "ann")
      local b = tether.with_value(a, "user", "bob")
      local c = tether.with_value(b, "user", nil)
      assert.equal("ann", a:value("user"))
      assert.equal("bob", b:value("user"))
      assert.is_nil(c:value("user"))
      assert.is_nil(b:value("other"))
    end)

    it("key objects are distinct and never match strings", function()
      local k1, k2 = tether.key("id"), tether.key("id")
      local ctx = tether.with_value(tether.background(), k1, 42)
      assert.equal(42, ctx:value(k1))
      assert.is_nil(ctx:value(k2))
      assert.is_nil(ctx:value("id"))
      assert.equal("tether.Key(id)", tostring(k1):match("^tether%.Key%(id%)"))
    end)

    it("a million nested with_value contexts are built and dropped",
       function()
      local n = scale.n(1000000)
      local ctx = tether.background()
      for i = 1, n do ctx = tether.with_value(ctx, "depth", i) end
      assert.equal(n, ctx:value("depth"))
      -- The last reference frees a million contexts, each the parent of
      -- the next, in constant stack.
      ctx = nil  -- luacheck: ignore 311
      collectgarbage()
      collectgarbage()
      local fresh = tether.with_value(tether.background(), "depth", 1)
      assert.equal(1, fresh:value("depth"))
    end)

    it("values are copies of tables", function()
      local t = { n = 1, list = { 1, 2, 3 } }
      local ctx = tether.with_value(tether.background(), "cfg", t)
      local got = ctx:value("cfg")
      assert.same(t, got)
      t.n = 2
      assert.equal(1, ctx:value("cfg").n)
    end)
  end)

  describe("without_cancel", function()
    it("keeps values and drops done, err, deadline and cause", function()
      local p, cancel = tether.with_timeout(
        tether.with_value(tether.background(), "trace", "t-1"), 10)
      local d = tether.without_cancel(p)
      cancel()
      assert.equal(tether.canceled, p:err())
      assert.is_nil(d:err())
      assert.is_nil(d:cause())
      assert.is_nil(d:done())
      assert.is_nil(d:deadline())
      assert.equal("t-1", d:value("trace"))
    end)

    it("can be bounded again by with_timeout", function()
      local p, cancel = tether.with_cancel(tether.background())
      local d = tether.with_timeout(tether.without_cancel(p), 0.02)
      cancel()
      assert.is_nil(d:err())
      assert.is_true(d:wait(5))
      assert.equal(tether.deadline_exceeded, d:err())
    end)
  end)

  describe("scenarios", function()
    it("1: a detached context survives its parent's cancel", function()
      local parent, cancel = tether.with_cancel(tether.background())
      local detached = tether.without_cancel(parent)
      cancel()
      assert.equal(tether.canceled, parent:err())
      assert.is_nil(detached:err())
    end)

    it("2: values cross the detach, string and key object", function()
      local k = tether.key("request_id")
      local p = tether.with_value(
        tether.with_value(tether.background(), "tenant", "acme"), k, "r-7")
      local parent, cancel = tether.with_cancel(p)
      local d = tether.without_cancel(parent)
      cancel()
      assert.equal("acme", d:value("tenant"))
      assert.equal("r-7", d:value(k))
    end)

    it("3: detach, then bound: 50 ms around a 100 ms sleep", function()
      local function work(parent)
        local t0 = tether.now()
        local ctx, cancel = tether.with_timeout(
          tether.without_cancel(parent), 0.05)
        local ok, err = tether.sleep(0.1, ctx)
        cancel()
        return ok, err, tether.now() - t0
      end
      -- Parent canceled first: the detached work still runs to its own
      -- bound, and ends by it, not by the parent.
      local parent, cancel = tether.with_cancel(tether.background())
      cancel()
      local ok, err, took = work(parent)
      assert.is_nil(ok)
      assert.equal(tether.deadline_exceeded, err)
      assert.is_true(took >= 0.049)
      -- Parent alive: the same.
      ok, err, took = work(tether.background())
      assert.is_nil(ok)
      assert.equal(tether.deadline_exceeded, err)
      assert.is_true(took >= 0.049)
    end)
  end)

  describe("bad input", function()
    -- The functions are called from a closure, never as a tail call, so
    -- that Lua can name them in the message.
    local function errs(msg, f)
      local ok, e = pcall(f)
      assert.is_false(ok)
      -- Lua prefixes the caller's position, as for its own functions.
      assert.equal(msg, (tostring(e):gsub("^[^:]+:%d+: ", "")))
    end

    it("raises in Lua's own words", function()
      local bg = tether.background()
      errs("bad argument #1 to 'with_cancel' (tether.Context expected, "
           .. "got no value)", function() tether.with_cancel() end)
      errs("bad argument #1 to 'with_timeout' (tether.Context expected, "
           .. "got table)", function() tether.with_timeout({}, 1) end)
      errs("bad argument #2 to 'with_timeout' (number expected, got string)",
           function() tether.with_timeout(bg, "x") end)
      errs("bad argument #2 to 'with_timeout' (non-negative number of "
           .. "seconds expected)", function() tether.with_timeout(bg, -1) end)
      errs("bad argument #2 to 'with_timeout' (non-negative number of "
           .. "seconds expected)",
           function() tether.with_timeout(bg, 0 / 0) end)
      errs("bad argument #2 to 'with_deadline' (number expected, got NaN)",
           function() tether.with_deadline(bg, 0 / 0) end)
      errs("bad argument #2 to 'with_value' (string or tether.Key "
           .. "expected, got number)",
           function() tether.with_value(bg, 1, "v") end)
      errs("bad argument #3 to 'with_value' (value expected)",
           function() tether.with_value(bg, "k") end)
      errs("bad argument #1 to 'without_cancel' (tether.Context expected, "
           .. "got tether.Chan)",
           function() tether.without_cancel(tether.chan()) end)
      errs("bad argument #1 to 'value' (string or tether.Key expected, "
           .. "got no value)", function() bg:value() end)
      errs("bad argument #2 to 'after_func' (function expected, got no "
           .. "value)",
           function() tether.after_func(bg) end)
      errs("calling 'err' on bad self (tether.Context expected, got "
           .. "table)", function()
             local fake = { err = bg.err }
             fake:err()
           end)
    end)

    it("refuses a value that cannot cross threads", function()
      local ok, e = pcall(tether.with_value, tether.background(), "k",
                          coroutine.create(print))
      assert.is_false(ok)
      assert.matches("cannot transfer", e)
    end)
  end)
end)
