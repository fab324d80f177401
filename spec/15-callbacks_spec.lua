-- Nothing is lost silently in callbacks: after_func passes its extra
-- arguments, and a failing after_func, on_idle, on_resume or
-- on_compensation_failure is logged as safe_go's tasks are (one JSON line
-- on stderr with the name, the error and the traceback); a dead letter a
-- dlq channel cannot take is logged too.
local tether = require "tether"
local json = require "dkjson"

local bg = tether.background()

-- stderr_of runs a Lua snippet in a fresh lua5.4 process with the module
-- on its path and returns the JSON records it wrote on stderr, and
-- whether it exited cleanly.  Each snippet ends with tether.shutdown(),
-- which waits for the engine's threads and so for their log lines.
local function stderr_of(src)
  local f = os.tmpname()
  local h = assert(io.open(f, "w"))
  h:write('package.path = "./lua/?.lua;./lua/?/init.lua;" .. package.path\n',
          'package.cpath = "./build/?.so;" .. package.cpath\n', src)
  h:close()
  local p = io.popen("lua5.4 " .. f .. " 2>&1 >/dev/null")
  local out = p:read("a")
  local ok = p:close()
  os.remove(f)
  local recs = {}
  for line in out:gmatch("[^\n]+") do
    local rec = json.decode(line)
    if type(rec) == "table" then recs[#recs + 1] = rec end
  end
  return recs, ok, out
end

-- Every wait in a snippet is bounded (5 s), so that a failure fails.

-- find returns the first record whose msg is 'msg'.
local function find(recs, msg)
  for _, r in ipairs(recs) do
    if r.msg == msg then return r end
  end
  return nil
end

describe("callbacks", function()
  it("after_func passes its extra arguments", function()
    local ctx, cancel = tether.with_cancel(bg)
    local ch = tether.chan(1)
    tether.after_func(ctx, function(out, a, b, t)
      out:send({ a, b, t.k })
    end, ch, "x", 2, { k = "v" })
    cancel()
    assert.same({ "x", 2, "v" }, (ch:recv(tether.with_timeout(bg, 5))))
  end)

  it("a failing after_func is logged with its name and traceback",
     function()
    local recs, ok, out = stderr_of([[
      local tether = require "tether"
      local ctx, cancel = tether.with_cancel(tether.background())
      local ran = tether.chan(1)
      tether.after_func(ctx, function()
        ran:send(true)
        error("after boom")
      end)
      cancel()
      assert(ran:recv(tether.with_timeout(tether.background(), 5)))
      tether.shutdown()
    ]])
    assert.is_true(ok, out)
    local rec = find(recs, "after_func failed")
    assert.is_table(rec, out)
    assert.equal("error", rec.level)
    -- Where the function was defined: line 4 of the snippet, after the
    -- two lines stderr_of puts first.
    assert.matches(":6$", rec.name)
    assert.matches("after boom", rec.error)
    assert.matches("stack traceback", rec.traceback)
  end)

  it("a failing on_idle or on_resume is logged with the pool's name",
     function()
    local recs, ok, out = stderr_of([[
      local tether = require "tether"
      local seen = tether.chan(2)
      local limit = tether.with_timeout(tether.background(), 5)
      local p = tether.pool { name = "lazy", workers = 1, quiet = true,
        idle_after = 0.01,
        on_idle = function() seen:send("idle") error("idle boom") end,
        on_resume = function() seen:send("resume") error("resume boom") end }
      p:submit(tether.background(), "a", function() end):wait()
      assert(seen:recv(limit) == "idle")
      p:submit(tether.background(), "b", function() end):wait()
      assert(seen:recv(limit) == "resume")
      assert(p:drain(limit))
      tether.shutdown()
    ]])
    assert.is_true(ok, out)
    local idle = find(recs, "on_idle failed")
    assert.is_table(idle, out)
    assert.equal("lazy", idle.name)
    assert.matches("idle boom", idle.error)
    assert.matches("stack traceback", idle.traceback)
    local resume = find(recs, "on_resume failed")
    assert.is_table(resume, out)
    assert.equal("lazy", resume.name)
    assert.matches("resume boom", resume.error)
  end)

  it("a failing on_compensation_failure is logged with the saga's name",
     function()
    local recs, ok, out = stderr_of([[
      local tether = require "tether"
      local s = tether.saga { name = "refund",
        on_compensation_failure = function() error("hook boom") end,
        { name = "debit", action = function() end,
          compensate = function() error("ledger offline") end },
        { name = "notify", action = function() error("smtp down") end } }
      local ok, _, report = s:run(tether.background())
      assert(ok == nil and report.compensation_failures == 1)
      tether.shutdown()
    ]])
    assert.is_true(ok, out)
    local rec = find(recs, "on_compensation_failure failed")
    assert.is_table(rec, out)
    assert.equal("refund", rec.name)
    assert.matches("hook boom", rec.error)
    assert.matches("stack traceback", rec.traceback)
  end)

  it("a dead letter the saga's dlq cannot take is logged", function()
    local recs, ok, out = stderr_of([[
      local tether = require "tether"
      local dlq = tether.chan(1)
      dlq:send("full")
      local s = tether.saga { name = "refund", dlq = dlq,
        { name = "debit", action = function() end,
          compensate = function() error("ledger offline") end },
        { name = "notify", action = function() error("smtp down") end } }
      s:run(tether.background())
      tether.shutdown()
    ]])
    assert.is_true(ok, out)
    local rec = find(recs, "dead letter not sent to dlq")
    assert.is_table(rec, out)
    assert.equal("warn", rec.level)
    assert.equal("refund", rec.saga)
    assert.equal("debit", rec.step)
    assert.equal("the dlq channel is full", rec.reason)
  end)

  it("a dead letter the pool's dlq cannot take is logged", function()
    local recs, ok, out = stderr_of([[
      local tether = require "tether"
      local dlq = tether.chan(1)
      dlq:close()
      local p = tether.pool { name = "exports", workers = 1, quiet = true,
                              dlq = dlq }
      p:submit(tether.background(), "export", function()
        error("disk full")
      end):wait()
      assert(#p:dead_letters() == 1)
      assert(p:drain(tether.with_timeout(tether.background(), 5)))
      tether.shutdown()
    ]])
    assert.is_true(ok, out)
    local rec = find(recs, "dead letter not sent to dlq")
    assert.is_table(rec, out)
    assert.equal("exports", rec.pool)
    assert.equal("export", rec.name)
  end)
end)
