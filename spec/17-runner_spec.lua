-- The runner: `tether run [options] script.lua [args...]` (bin/tether,
-- lua/tether/run.lua).  Its command line is parsed in this process; what
-- it does with signals runs in processes of its own
-- (spec/support/child.lua).
local run = require "tether.run"
local child = require "spec.support.child"
local eventually = require "spec.support.eventually"

-- A script whose ops outlive the signal: 'n' ops of 'secs' seconds each
-- on a pool of 'workers', the ops detached from the run context as pool
-- ops are; it prints "ready" once every worker runs one (so that which
-- ops run and which wait when the signal comes does not depend on how
-- fast the workers start) and then waits for the run context.
local function batch(n, secs, workers)
  return ([[
local tether = require "tether"
local ctx = tether.run_context()
local p = tether.pool { name = "batch", workers = %d }
local started = tether.chan(%d)
for i = 1, %d do
  p:submit(ctx, "item" .. i, function(_, s, st)
    st:send(true)
    require("tether").sleep(s)
    io.stdout:write("done\n")
  end, %g, started)
end
-- Every worker has an op running before the signal can come.
for _ = 1, %d do started:recv() end
print("ready")
ctx:wait()
print("canceled by " .. ctx:cause().signal)
p:drain()
]]):format(workers, n, n, secs, math.min(n, workers))
end

local function count(s, pat)
  return select(2, s:gsub(pat, ""))
end

describe("tether run's command line", function()
  it("takes options before the script, and the rest is the script's",
     function()
    local cl = assert(run.parse({"run", "--drain", "3", "s.lua", "a",
                                 "--drain", "-x"}))
    assert.equal("run", cl.command)
    assert.equal(3, cl.options.drain)
    assert.equal("s.lua", cl.script)
    assert.same({"a", "--drain", "-x"}, cl.args)
    cl = assert(run.parse({"run", "--drain=0.5", "--no-progress", "--",
                           "-odd.lua"}))
    assert.equal(0.5, cl.options.drain)
    assert.is_true(cl.options["no-progress"])
    assert.equal("-odd.lua", cl.script)
    assert.equal(25, assert(run.parse({"run", "s.lua"})).options.drain)
  end)

  it("refuses what it does not know, saying what it expected", function()
    assert.same({nil, "unknown option '--drian'; did you mean '--drain'?",
                 "run"}, {run.parse({"run", "--drian", "3", "s.lua"})})
    assert.same({nil, "option '--drain' expects a non-negative number of "
                 .. "seconds, got 'soon'", "run"},
                {run.parse({"run", "--drain", "soon", "s.lua"})})
    assert.same({nil, "option '--drain' needs SECONDS", "run"},
                {run.parse({"run", "--drain"})})
    assert.same({nil, "option '--progress' takes no value", "run"},
                {run.parse({"run", "--progress=yes", "s.lua"})})
    assert.same({nil, "unknown command 'walk'"}, {run.parse({"walk"})})
  end)

  it("is described by tables that later options and commands join",
     function()
    local names = {}
    for _, o in ipairs(run.commands.run.options) do
      names[#names + 1] = o.name
    end
    assert.same({"drain", "admin", "progress", "no-progress", "store",
                 "help"},
                names)
    assert.matches("%-%-drain SECONDS", run.help("run"))
    assert.matches("%-%-admin ADDR", run.help("run"))
    assert.matches("run +run a script", run.help())
    assert.matches("worker +drain a durable store", run.help())
  end)

  it("prints its help and its version", function()
    local r = child.run("", { runner = {"--help"} })
    assert.equal(0, r.status, child.describe(r))
    assert.matches("Usage: tether run %[options%] script.lua %[args...%]",
                   r.stdout)
    local p = io.popen("LUA_CPATH_5_4='./build/?.so;;' lua5.4 bin/tether "
                       .. "--version")
    local out = p:read("a")
    assert.is_true(p:close())
    assert.equal("tether " .. run.VERSION .. " (Lua 5.4)\n", out)
  end)

  it("ends with status 2 and a hint on a bad command line", function()
    local p = io.popen("LUA_CPATH_5_4='./build/?.so;;' lua5.4 bin/tether "
                       .. "run --drian 1 x.lua 2>&1")
    local out = p:read("a")
    local _, _, status = p:close()
    assert.equal(2, status)
    assert.equal("tether run: unknown option '--drian'; did you mean "
      .. "'--drain'?\nTry 'tether run --help' for more information.\n", out)
  end)

  it("refuses an admin page off loopback without a token, with the hint",
     function()
    -- Every address, on purpose: refused before anything is bound.
    local p = io.popen("TETHER_ADMIN_TOKEN= LUA_CPATH_5_4='./build/?.so;;' "
                       .. "lua5.4 bin/tether run --admin 0.0.0.0:0 "
                       .. "examples/01-detach.lua 2>&1")
    local out = p:read("a")
    local _, _, status = p:close()
    assert.equal(2, status)
    assert.matches("^tether run: option '%-%-admin': 0%.0%.0%.0:0: ", out)
    assert.matches("token", out)
    assert.matches("\nTry 'tether run %-%-help' for more information%.\n$",
                   out)
  end)
end)

describe("tether run", function()
  it("gives the script its arguments in ... and arg, and exits 0",
     function()
    local r = child.run([[
local a, b = ...
print(select("#", ...), a, b, arg[0] ~= nil, arg[1], arg[2])
]], { runner = {}, args = {"a b", "--drain"} })
    assert.equal(0, r.status, child.describe(r))
    assert.equal("2\ta b\t--drain\ttrue\ta b\t--drain", r.out[1])
  end)

  it("exits 1 with the error when the script raises", function()
    local r = child.run("error('boom')", { runner = {} })
    assert.equal(1, r.status, child.describe(r))
    assert.matches("^tether run: .*: boom\nstack traceback:", r.stderr)
  end)

  it("on SIGTERM drains every pool and exits 143, saying nothing was "
     .. "abandoned", function()
    local c = child.start(batch(2, 0.3, 2), { runner = {"--drain", "10"} })
    assert.is_true(c:expect("ready"))
    assert.is_true(c:blocked())
    c:signal("TERM")
    local r = c:finish()
    assert.equal(143, r.status, child.describe(r))
    assert.equal(2, count(r.stdout, "done"), child.describe(r))
    assert.matches("canceled by TERM", r.stdout, 1, true)
    assert.matches("tether run: SIGTERM: 1 pool drained in [%d.]+ s; "
                   .. "nothing abandoned\n$", r.stderr)
    assert.is_true(r.took < 2, child.describe(r))
  end)

  it("on SIGINT drains for --drain seconds, then reports what it "
     .. "abandoned and exits 130", function()
    local c = child.start(batch(3, 60, 1), { runner = {"--drain", "0.2"} })
    assert.is_true(c:expect("ready"))
    assert.is_true(c:blocked())
    c:signal("INT")
    local r = c:finish()
    assert.equal(130, r.status, child.describe(r))
    assert.equal(0, count(r.stdout, "done"))
    assert.equal(1, count(r.stderr, '"state":"running"'), r.stderr)
    assert.equal(2, count(r.stderr, '"state":"queued"'), r.stderr)
    assert.matches("tether run: SIGINT: 1 pool drained in [%d.]+ s; 3 ops "
                   .. "abandoned %(see the lines above%)\n$", r.stderr)
    assert.is_true(r.took < 2, child.describe(r))
  end)

  it("ends at once on a second signal during the drain", function()
    local c = child.start(batch(1, 60, 1), { runner = {"--drain", "60"} })
    assert.is_true(c:expect("ready"))
    assert.is_true(c:blocked())
    c:signal("INT")
    assert.is_true(c:expect("canceled by INT"))
    assert.is_true(c:blocked())
    c:signal("INT")
    local r = c:finish()
    assert.equal(130, r.status, child.describe(r))  -- killed by SIGINT
    assert.is_nil(r.stderr:find("drained in", 1, true), r.stderr)
    assert.is_true(r.took < 2, child.describe(r))
  end)

  it("exits once the script ends after the signal, with the drain done",
     function()
    local c = child.start([[
local tether = require "tether"
local ctx = tether.run_context()
print("ready")
ctx:wait()
print("bye")
]], { runner = {} })
    assert.is_true(c:expect("ready"))
    assert.is_true(c:blocked())
    c:signal("TERM")
    local r = c:finish()
    assert.equal(143, r.status, child.describe(r))
    assert.same({"ready", "bye"}, r.out)
    assert.matches("SIGTERM: 0 pools drained", r.stderr, 1, true)
  end)

  it("serves until its context ends: on SIGTERM the server stops "
     .. "accepting, a request in flight completes with its audit, and "
     .. "the runner exits 143", function()
    local socket = require "socket"
    local c = child.start(nil, { file = "examples/04-http-audit.lua",
                                 runner = {}, args = { "--serve" },
                                 plain = true })
    local _, port = c:expect_match("^serving on http://127%.0%.0%.1:(%d+) "
                                   .. "until SIGINT or SIGTERM$")
    assert.truthy(port, port or child.describe(c:finish()))
    -- A request in flight when the signal comes: the server has its
    -- headers (it asks for the body), its body is not all there yet.
    local conn = assert(socket.connect("127.0.0.1", tonumber(port)))
    conn:settimeout(10)
    assert(conn:send("POST /orders HTTP/1.1\r\nHost: t\r\n"
      .. "Content-Length: 10\r\nExpect: 100-continue\r\n\r\n"))
    assert.equal("HTTP/1.1 100 Continue", conn:receive("*l"))
    assert.equal("", conn:receive("*l"))
    assert(conn:send("half-"))
    assert.is_true(c:blocked())
    c:signal("TERM")
    assert.truthy(c:expect_match("shutting down"))
    eventually(function()
      local again = socket.connect("127.0.0.1", tonumber(port))
      if again then again:close() end
      return again == nil
    end, "new connections to be refused")
    -- The request in flight completes, and so does its audit.
    assert(conn:send("rest!"))
    local data, _, partial = conn:receive("*a")
    conn:close()
    data = data or partial
    assert.matches("^HTTP/1%.1 200 OK\r\n", data)
    assert.matches("\r\n\r\norder of 10 bytes accepted\n$", data)
    local r = c:finish()
    assert.equal(143, r.status, child.describe(r))
    assert.matches("audit of order request %S+ completed", r.stdout)
    assert.matches("audit completed: 3 of 3 submitted", r.stdout, 1, true)
    assert.matches("tether run: SIGTERM: 2 pools drained in [%d.]+ s; "
                   .. "nothing abandoned\n$", r.stderr)
  end)

  it("prints nothing extra when stderr is not a terminal", function()
    local r = child.run(batch(2, 0.01, 1):gsub("ctx:wait%(%)", "")
                          :gsub('print%("canceled.-\n', ""),
                        { runner = {} })
    assert.equal(0, r.status, child.describe(r))
    assert.equal("", r.stderr)
  end)

  it("shows the progress line of all pools with --progress", function()
    local r = child.run([[
local tether = require "tether"
local p = tether.pool { name = "p", workers = 1 }
for i = 1, 3 do p:submit(tether.background(), "x", function() end) end
p:drain()
tether.sleep(0.6)
]], { runner = {"--progress"} })
    assert.equal(0, r.status, child.describe(r))
    assert.matches("tether: 1 pool  accepted 3  done 3  failed 0  dead 0  "
                   .. "queued 0  running 0", r.stderr, 1, true)
    assert.equal("\r\27[K", r.stderr:sub(-4))  -- cleared at the end
  end)
end)
