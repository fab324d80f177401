-- Executors: tether.go, tether.safe_go, handles and after_func on real
-- threads.
local tether = require "tether"

-- run_lua runs a Lua snippet in a fresh lua5.4 process with the module on
-- its path and returns what it printed on stdout and stderr, and whether
-- it exited cleanly.
local function run_lua(src)
  local f = os.tmpname()
  local h = assert(io.open(f, "w"))
  h:write('package.path = "./lua/?.lua;./lua/?/init.lua;" .. package.path\n',
          'package.cpath = "./build/?.so;" .. package.cpath\n', src)
  h:close()
  local p = io.popen("lua5.4 " .. f .. " 2>&1")
  local out = p:read("a")
  local ok = p:close()
  os.remove(f)
  return out, ok
end

describe("tether.go", function()
  it("runs a function on another thread and returns its results",
     function()
    local h = tether.go(function(a, b) return a + b, a * b, "x" end, 6, 7)
    assert.equal("handle", tether.type(h))
    local s, p, x = h:wait()
    assert.equal(13, s)
    assert.equal(42, p)
    assert.equal("x", x)
    assert.equal("done", h:state())
  end)

  it("gives a task's error with its traceback", function()
    local h = tether.go(function() local t = nil; return t.field end)
    local v, err = h:wait()
    assert.is_nil(v)
    assert.equal("failed", err.code)
    assert.matches("attempt to index a nil value", err.message)
    assert.matches("stack traceback", err.traceback)
    assert.equal("failed", h:state())
  end)

  it("keeps an error object raised as such", function()
    local h = tether.go(function() error(tether.canceled) end)
    local _, err = h:wait()
    assert.equal(tether.canceled, err)
  end)

  it("wait is bounded by a context", function()
    local gate = tether.chan()
    local h = tether.go(function(c) c:recv() return "late" end, gate)
    local ctx = tether.with_timeout(tether.background(), 0.02)
    local v, err = h:wait(ctx)
    assert.is_nil(v)
    assert.equal(tether.deadline_exceeded, err)
    gate:send(true)
    assert.equal("late", h:wait())
  end)

  it("handles are waitables for select", function()
    local h = tether.go(function() return "ready" end)
    local i, v = tether.select(h, tether.after(10))
    assert.equal(1, i)
    assert.equal("ready", v)
  end)

  it("tasks live on threads of their own at the same time", function()
    -- Two tasks meet each other through unbuffered channels: this only
    -- completes if both are running at once, each on its own thread.
    local x, y = tether.chan(), tether.chan()
    local a = tether.go(function(out, back)
      for i = 1, 100 do
        out:send(i)
        assert(back:recv() == i + 1)
      end
      return "a done"
    end, x, y)
    local b = tether.go(function(inp, back)
      for _ = 1, 100 do back:send(inp:recv() + 1) end
      return "b done"
    end, x, y)
    assert.equal("a done", a:wait())
    assert.equal("b done", b:wait())
  end)

  it("refuses what cannot cross, naming the path", function()
    local co = coroutine.create(print)
    local f = function() return co end
    local info = debug.getinfo(f, "S")
    assert.has_error(function() tether.go(f) end,
      "cannot transfer upvalue 'co' of task '" .. info.short_src .. ":" ..
      info.linedefined .. "' (thread)")
  end)

  it("bad input", function()
    assert.has_error(function() tether.go() end,
      "bad argument #1 to 'go' (function expected, got no value)")
    assert.has_error(function() tether.go("f") end,
      "bad argument #1 to 'go' (function expected, got string)")
    local h = tether.go(function() end)
    assert.has_error(function() h:wait("x") end,
      "bad argument #1 to 'wait' (tether.Context expected, got string)")
  end)
end)

describe("tether.safe_go", function()
  it("scenario 6: logs a failure as one line and the process goes on",
     function()
    local out, ok = run_lua([[
      local tether = require "tether"
      local h = tether.safe_go("audit", function()
        error("disk full")
      end)
      local v, err = h:wait()
      print("after failure:", v, err.code)
    ]])
    assert.is_true(ok)
    local line = out:match("(%b{})\n")
    assert.is_string(line)
    local rec = require("dkjson").decode(line)
    assert.equal("task failed", rec.msg)
    assert.equal("audit", rec.name)
    assert.matches("disk full", rec.error)
    assert.matches("stack traceback", rec.traceback)
    assert.matches("after failure:\tnil\tfailed", out)
  end)

  it("returns a handle like go", function()
    local h = tether.safe_go("ok", function(x) return x end, 5)
    assert.equal(5, h:wait())
    assert.equal("ok", h:name())
  end)
end)

describe("after_func with Lua functions", function()
  it("runs once the context is done, on another thread", function()
    local ctx, cancel = tether.with_cancel(tether.background())
    local ch = tether.chan(1)
    local stop = tether.after_func(ctx, function() ch:send("ran") end)
    assert.is_nil(ch:try_recv())
    cancel()
    assert.equal("ran", ch:recv())
    assert.is_false(stop())
  end)

  it("stop prevents the run and reports it", function()
    local ctx = tether.with_cancel(tether.background())
    local stop = tether.after_func(ctx, function() end)
    assert.is_true(stop())
    assert.is_false(stop())
    -- That nothing runs after the cancel is seen in a process of its own,
    -- where tether.shutdown() can wait for all of the executor's work (a
    -- function the cancel started, had stop failed).
    local out, ok = run_lua([[
      local tether = require "tether"
      local ch = tether.chan(2)
      local ctx, cancel = tether.with_cancel(tether.background())
      local ctx2, cancel2 = tether.with_cancel(tether.background())
      local stop = tether.after_func(ctx, function() ch:send("stopped ran") end)
      tether.after_func(ctx2, function() ch:send("ran") end)
      assert(stop())
      cancel()
      cancel2()
      tether.shutdown()
      print(ch:len(), (ch:try_recv()))
    ]])
    assert.is_true(ok, out)
    assert.equal("1\tran\n", out)
  end)

  it("runs at once for a context already done", function()
    local ctx = tether.with_timeout(tether.background(), 0)
    local ch = tether.chan(1)
    tether.after_func(ctx, function() ch:send(ctx:err()) end)
    assert.equal(tether.deadline_exceeded, ch:recv())
  end)
end)
