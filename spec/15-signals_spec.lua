-- Signals: Ctrl-C in every blocking call of a script, signal contexts,
-- and the signals of the commands that ops start.  Real signals go to
-- real processes (spec/support/child.lua): each script prints "ready"
-- before it blocks, the spec sends the signal with kill and checks the
-- exit status, the time to exit (within 2 s) and the output.
local tether = require "tether"
local child = require "spec.support.child"

local bg = tether.background()

local ctrl_c = child.ctrl_c

describe("Ctrl-C in a blocking call of the main state", function()
  it("ends tether.sleep", function()
    ctrl_c("", "tether.sleep(60)")
  end)

  it("ends handle:wait", function()
    ctrl_c([[local gate = tether.chan(0)
             local h = tether.go(function(g) g:recv() end, gate)]],
           "h:wait()")
  end)

  it("ends ctx:wait", function()
    ctrl_c("local ctx = tether.with_cancel(bg)", "ctx:wait()")
  end)

  it("ends ch:recv", function()
    ctrl_c("local ch = tether.chan(0)", "ch:recv()")
  end)

  it("ends ch:send", function()
    ctrl_c("local ch = tether.chan(0)", "ch:send('x')")
  end)

  it("ends tether.select", function()
    ctrl_c("local ch = tether.chan(0)",
           "tether.select(ch, tether.after(60))")
  end)

  it("ends pool:drain", function()
    ctrl_c([[local gate = tether.chan(0)
             local p = tether.pool { name = "p", workers = 1,
                                     exit_timeout = 0 }
             p:submit(bg, "stuck", function(_, g) g:recv() end, gate)]],
           "p:drain()")
  end)

  it("ends pool:wait_idle", function()
    ctrl_c([[local gate = tether.chan(0)
             local p = tether.pool { name = "p", workers = 1,
                                     exit_timeout = 0 }
             p:submit(bg, "stuck", function(_, g) g:recv() end, gate)]],
           "p:wait_idle()")
  end)

  it("ends pool:submit's wait for room in a full queue", function()
    ctrl_c([[local gate = tether.chan(0)
             local p = tether.pool { name = "p", workers = 1, queue = 1,
                                     exit_timeout = 0 }
             p:submit(bg, "stuck", function(_, g) g:recv() end, gate)
             assert(p:submit(bg, { name = "queued", wait = 10 },
                             function() end))]],
           "p:submit(bg, { name = 'third', wait = 60 }, function() end)")
  end)

  it("ends g:go's wait for a slot at the group's limit", function()
    ctrl_c([[local gate = tether.chan(0)
             local g = tether.group(bg, { limit = 1 })
             g:go(function(_, x) x:recv() end, gate)]],
           "g:go(function() end)")
  end)

  it("ends sf:call", function()
    ctrl_c([[local gate = tether.chan(0)
             local sf = tether.singleflight()]],
           "sf:call(bg, 'k', function() gate:recv() end)")
  end)

  it("ends g:wait", function()
    ctrl_c([[local gate = tether.chan(0)
             local g = tether.group(bg)
             g:go(function(_, x) x:recv() end, gate)]],
           "g:wait()")
  end)

  -- The drainer runs one op at a time and has three to run: a Ctrl-C
  -- that reached a later claim would bury its record as "interrupted!".
  it("ends pool:drain_store, and buries no record", function()
    local r = ctrl_c([[
      local dir = os.tmpname()
      os.remove(dir)
      assert(os.execute("mkdir " .. dir))
      local f = assert(io.open(dir .. "/slowops.lua", "w"))
      f:write("return { run = function(ctx, s) ",
              "require('tether').sleep(s, ctx) end }")
      f:close()
      package.path = dir .. "/?.lua;" .. package.path
      print(dir)
      local store = assert(tether.store.open("sqlite:" .. dir .. "/q.db"))
      local p = tether.pool { name = "p", workers = 1, queue = 1,
                              overflow = store, quiet = true,
                              exit_timeout = 0 }
      local gate, started = tether.chan(0), tether.chan(1)
      p:submit(bg, "hold", function(_, g, s) s:send(true) g:recv() end,
               gate, started)
      started:recv()
      p:submit(bg, "fill", function() end)
      for _, s in ipairs { 0.3, 30, 30 } do
        local _, err = p:submit(bg, "slow", "slowops:run", s):wait()
        assert(err.code == "spilled")
      end
      gate:send(true)
      assert(p:drain())
      local d = tether.pool { name = "d", workers = 1, queue = 1,
                              quiet = true, exit_timeout = 0 }]],
      "d:drain_store(store, nil, { allow = { 'slowops' } })")
    local dir = r.out[1]
    local store = assert(tether.store.open("sqlite:" .. dir .. "/q.db"))
    local dead = assert(store:dead_letters())
    store:close()
    os.execute("rm -r " .. dir)
    assert.same({}, dead)
  end)

  it("ends s:run as a failed step: the compensations run first, detached",
     function()
    local r = ctrl_c([[
      local gate = tether.chan(0)
      local s = tether.saga { name = "order",
        { name = "reserve", action = function() end,
          compensate = function(ctx)
            -- A wait of its own, not interrupted by the same Ctrl-C.
            assert(tether.sleep(0.05, ctx))
            print("compensated reserve", ctx:err())
          end },
        { name = "charge", action = function() gate:recv() end } }]],
      "s:run(bg, {})")
    assert.matches("compensated reserve\tnil", r.stdout, 1, true)
  end)

  it("reaches plain Lua code as lua5.4 does", function()
    ctrl_c("", "while true do end", true)
  end)

  it("is caught by pcall like lua5.4's, and the next wait works",
     function()
    local c = child.start([[
local tether = require "tether"
print("ready")
local ok, err = pcall(tether.sleep, 60)
print("caught", ok, err)
print(tether.sleep(0.01))
]])
    assert.is_true(c:expect("ready"))
    assert.is_true(c:blocked())
    c:signal("INT")
    local r = c:finish()
    assert.equal(0, r.status, child.describe(r))
    assert.matches("caught\tfalse\t.*interrupted!", r.stdout)
    assert.matches("\ntrue$", r.stdout)
    assert.is_true(r.took < 2, child.describe(r))
  end)
end)

describe("tether.signal_context", function()
  it("handles SIGINT instead of the interrupt: waits go on, the context "
     .. "ends with a signal cause", function()
    local c = child.start([[
local tether = require "tether"
local ctx, stop = tether.signal_context(tether.background(), "INT")
print("ready")
local ok, err = tether.sleep(60, ctx)
local cause = ctx:cause()
print(ok, err, cause.code, cause.signal, tostring(cause))
stop()
]])
    assert.is_true(c:expect("ready"))
    assert.is_true(c:blocked())
    c:signal("INT")
    local r = c:finish()
    assert.equal(0, r.status, child.describe(r))
    assert.equal("nil\tcontext canceled\tsignal\tINT\treceived signal SIGINT",
                 r.out[2], child.describe(r))
    assert.is_true(r.took < 2, child.describe(r))
  end)

  for _, sig in ipairs({"TERM", "HUP", "USR1", "USR2"}) do
    it("works with SIG" .. sig, function()
      local c = child.start([[
local tether = require "tether"
local ctx = tether.signal_context(tether.background(), "INT", "TERM",
                                  "HUP", "USR1", "USR2")
print("ready")
ctx:wait()
print(ctx:cause().signal)
]])
      assert.is_true(c:expect("ready"))
      assert.is_true(c:blocked())
      c:signal(sig)
      local r = c:finish()
      assert.equal(0, r.status, child.describe(r))
      assert.equal(sig, r.out[2], child.describe(r))
    end)
  end

  it("lets a second signal after the context is done take the default "
     .. "action", function()
    local c = child.start([[
local tether = require "tether"
local ctx = tether.signal_context(tether.background(), "INT")
print("ready")
ctx:wait()
print("canceled")
tether.sleep(60)  -- stuck, say, in a drain
]])
    assert.is_true(c:expect("ready"))
    assert.is_true(c:blocked())
    c:signal("INT")
    assert.is_true(c:expect("canceled"))
    assert.is_true(c:blocked())
    c:signal("INT")
    local r = c:finish()
    assert.equal(130, r.status, child.describe(r))  -- killed by SIGINT
    assert.equal("", r.stderr)
    assert.is_true(r.took < 2, child.describe(r))
  end)

  it("stop() gives back the previous disposition: Ctrl-C interrupts again",
     function()
    local c = child.start([[
local tether = require "tether"
local ctx, stop = tether.signal_context(tether.background(), "INT")
stop()
print(ctx:err())
print("ready")
tether.sleep(60)
]])
    assert.is_true(c:expect("ready"))
    assert.is_true(c:blocked())
    c:signal("INT")
    local r = c:finish()
    assert.equal(1, r.status, child.describe(r))
    assert.equal("context canceled", r.out[1])
    assert.matches("interrupted!", r.stderr, 1, true)
  end)

  it("stop() of a SIGTERM context gives SIGTERM its default action back",
     function()
    local c = child.start([[
local tether = require "tether"
local _, stop = tether.signal_context(tether.background(), "TERM")
stop()
print("ready")
tether.sleep(60)
]])
    assert.is_true(c:expect("ready"))
    assert.is_true(c:blocked())
    c:signal("TERM")
    local r = c:finish()
    assert.equal(143, r.status, child.describe(r))
  end)

  it("refuses signals it cannot handle, with a clear error", function()
    assert.has_error(function() tether.signal_context(bg, "KILL") end,
      "bad argument #2 to 'signal_context' (signal 'KILL' cannot be caught)")
    assert.has_error(function() tether.signal_context(bg, "INT", "SEGV") end,
      "bad argument #3 to 'signal_context' (signal 'SEGV' is not supported "
      .. "(INT, TERM, HUP, USR1 and USR2 are))")
    assert.has_error(function() tether.signal_context(bg, "NOPE") end,
      "bad argument #2 to 'signal_context' (unknown signal 'NOPE')")
    assert.has_error(function() tether.signal_context(bg) end,
      "bad argument #2 to 'signal_context' (signal name expected, got no "
      .. "value)")
    assert.has_error(function() tether.signal_context(nil, "INT") end,
      "bad argument #1 to 'signal_context' (tether.Context expected, got "
      .. "nil)")
  end)

  it("accepts names with or without SIG, in any case, and numbers",
     function()
    local ctx, stop = tether.signal_context(bg, "sigusr2", "USR1", 10)
    assert.equal("signalstop", tether.type(stop))
    assert.matches("tether.SignalStop %(USR2 USR1%)", tostring(stop))
    stop()
    assert.equal(tether.canceled, ctx:err())
  end)
end)

describe("tether.run_context outside the runner", function()
  it("is one signal context for the process, canceled by SIGTERM",
     function()
    local c = child.start([[
local tether = require "tether"
local a = tether.run_context()
local b = tether.run_context()
print(rawequal(a, b))
print("ready")
a:wait()
print(a:cause().signal)
]])
    assert.is_true(c:expect("ready"))
    assert.is_true(c:blocked())
    c:signal("TERM")
    local r = c:finish()
    assert.equal(0, r.status, child.describe(r))
    assert.same({"true", "ready", "TERM"}, r.out)
  end)
end)

describe("commands started by ops", function()
  local pool

  before_each(function()
    pool = tether.pool { name = "commands", workers = 2, quiet = true }
  end)

  after_each(function()
    assert.is_true(pool:drain())
  end)

  it("io.popen's child dies on SIGTERM", function()
    local pids = tether.chan(1)
    local h = pool:submit(bg, "popen", function(_, out)
      local p = io.popen("echo $$; exec sleep 60")
      out:send(p:read("l"))
      return p:close()
    end, pids)
    local pid = assert(tonumber((pids:recv())))
    assert.is_true(os.execute("kill -TERM " .. pid))
    local ok, how, n = h:wait(tether.with_timeout(bg, 10))
    assert.same({nil, "signal", 15}, {ok, how, n})
  end)

  it("os.execute's child dies on SIGTERM", function()
    local f = os.tmpname()
    local h = pool:submit(bg, "execute", function(_, path)
      return os.execute("echo $$ > " .. path .. "; exec sleep 60")
    end, f)
    -- Bounded: the op writes the pid at once.
    local pid
    local limit = tether.now() + 10
    repeat
      local fh = io.open(f)
      pid = fh and tonumber(fh:read("a"))
      if fh then fh:close() end
      if not pid then tether.sleep(0.005) end
    until pid or tether.now() > limit
    os.remove(f)
    assert.is_true(os.execute("kill -TERM " .. assert(pid)))
    local ok, how, n = h:wait(tether.with_timeout(bg, 10))
    assert.same({nil, "signal", 15}, {ok, how, n})
  end)

  it("os.execute and io.popen of an op keep Lua's results", function()
    local h = pool:submit(bg, "results", function()
      local r = {}
      r[1] = {os.execute("exit 3")}
      r[2] = {os.execute()}
      local p = io.popen("printf 'a\\nb\\n'")
      r[3] = p:read("a")
      r[4] = {p:close()}
      local w = io.popen("cat >/dev/null", "w")
      w:write("x")
      r[5] = {w:close()}
      r[6] = io.type(p)
      return r
    end)
    local r = h:wait()
    assert.same({nil, "exit", 3}, {r[1][1], r[1][2], r[1][3]})
    assert.same({true}, r[2])
    assert.equal("a\nb\n", r[3])
    assert.same({true, "exit", 0}, r[4])
    assert.same({true, "exit", 0}, r[5])
    assert.equal("closed file", r[6])
  end)
end)
