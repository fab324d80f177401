-- Exit without silent loss: the pools of a script drain when it ends (for
-- at most their exit_timeout, all together), what is left is reported
-- and counted as abandoned; pool:wait_idle.  The exit behaviour runs in
-- processes of their own (spec/support/child.lua).
local tether = require "tether"
local dkjson = require "dkjson"
local accounting = require "spec.support.accounting"
local child = require "spec.support.child"

local bg = tether.background()

-- abandoned_lines returns the decoded "abandoned at exit" records of a
-- child's stderr.
local function abandoned_lines(stderr)
  local out = {}
  for line in stderr:gmatch("[^\n]+") do
    local rec = dkjson.decode(line)
    if type(rec) == "table" and rec.msg == "abandoned at exit" then
      out[#out + 1] = rec
    end
  end
  return out
end

describe("when a script ends", function()
  it("its pools finish an op still running (exit_timeout, 5 s by default)",
     function()
    local r = child.run([[
local tether = require "tether"
local p = tether.pool { name = "slow", workers = 1 }
p:submit(tether.background(), "work", function()
  require("tether").sleep(0.5)
  io.stdout:write("op done\n")
end)
print("script ends")
]])
    assert.equal(0, r.status, child.describe(r))
    assert.same({"script ends", "op done"}, r.out)
    assert.same({}, abandoned_lines(r.stderr))
  end)

  it("with exit_timeout = 0 the op is reported as abandoned at once",
     function()
    local t0 = tether.now()
    local r = child.run([[
local tether = require "tether"
local p = tether.pool { name = "slow", workers = 1, exit_timeout = 0 }
p:submit(tether.background(), "work", function()
  require("tether").sleep(5)
  io.stdout:write("op done\n")
end)
p:submit(tether.background(), "next", function() end)
while p:stats().inflight == 0 do tether.sleep(0.001) end
print("script ends")
]])
    assert.equal(0, r.status, child.describe(r))
    assert.same({"script ends"}, r.out)
    assert.is_true(tether.now() - t0 < 2, child.describe(r))
    local recs = abandoned_lines(r.stderr)
    table.sort(recs, function(a, b) return a.id < b.id end)
    assert.equal(2, #recs, child.describe(r))
    assert.same({"error", "slow", "work", 1, "running"},
                {recs[1].level, recs[1].pool, recs[1].op, recs[1].id,
                 recs[1].state})
    assert.same({"slow", "next", 2, "queued"},
                {recs[2].pool, recs[2].op, recs[2].id, recs[2].state})
  end)

  it("os.exit(code) without closing the state drains too", function()
    local r = child.run([[
local tether = require "tether"
local p = tether.pool { name = "slow", workers = 1 }
p:submit(tether.background(), "work", function()
  require("tether").sleep(0.3)
  io.stdout:write("op done\n")
end)
print("script ends")
os.exit(3)
]])
    assert.equal(3, r.status, child.describe(r))
    assert.same({"script ends", "op done"}, r.out)
  end)

  it("drains all pools together under the largest exit_timeout", function()
    local r = child.run([[
local tether = require "tether"
local short = tether.pool { name = "short", workers = 1,
                            exit_timeout = 0.05 }
local long = tether.pool { name = "long", workers = 1, exit_timeout = 3 }
short:submit(tether.background(), "in-short", function()
  require("tether").sleep(0.4)
  io.stdout:write("short done\n")
end)
long:submit(tether.background(), "in-long", function() end)
print("script ends")
]])
    assert.equal(0, r.status, child.describe(r))
    assert.same({"script ends", "short done"}, r.out)
  end)

  it("lets an op hand work to another pool while they drain", function()
    local r = child.run([[
local tether = require "tether"
local audit = tether.pool { name = "audit", workers = 1 }
local batch = tether.pool { name = "batch", workers = 1 }
batch:submit(tether.background(), "item", function(ctx, audit)
  require("tether").sleep(0.2)
  assert(audit:submit(ctx, "audit", function()
    io.stdout:write("audited\n")
  end))
end, audit)
print("script ends")
]])
    assert.equal(0, r.status, child.describe(r))
    assert.same({"script ends", "audited"}, r.out)
  end)

  it("counts abandoned ops in stats(), and the identity holds", function()
    local r = child.run([[
local tether = require "tether"
local gate = tether.chan(0)
local p = tether.pool { name = "p", workers = 1 }
local h = p:submit(tether.background(), "stuck", function(ctx, g)
  g:recv()
end, gate)
p:submit(tether.background(), "queued", function() end)
while p:stats().inflight == 0 do tether.sleep(0.001) end
local rep = tether.drain_all(0)
local s = p:stats()
print(rep.pools, rep.abandoned, s.abandoned, s.queued, s.inflight,
      s.submitted)
local v, err = h:wait()
print(v, err.code, h:state())
gate:close()
]])
    assert.equal(0, r.status, child.describe(r))
    assert.same({"1\t2\t2\t0\t0\t2", "nil\tabandoned\tfailed"}, r.out)
  end)
end)

describe("pool exit_timeout", function()
  it("is a checked option", function()
    assert.has_error(function()
      tether.pool { exit_timeout = -1 }
    end, "bad argument #1 to 'pool' (field 'exit_timeout' must be at "
      .. "least 0)")
    assert.has_error(function()
      tether.pool { exit_timout = 1 }
    end, "bad argument #1 to 'pool' (unknown option 'exit_timout'; did "
      .. "you mean 'exit_timeout'?)")
    local p = tether.pool { name = "ok", exit_timeout = 0.5, quiet = true }
    assert.is_true(p:drain())
  end)
end)

describe("pool:wait_idle", function()
  it("waits until nothing is queued or running, without closing",
     function()
    local p = tether.pool { name = "batch", workers = 2, quiet = true }
    local flaky = tether.chan(1)
    flaky:send(true)
    for i = 1, 6 do
      p:submit(bg, "item" .. i, function(_, n, once)
        require("tether").sleep(0.01)
        if n == 3 and once:try_recv() then error("flaky") end
      end, i, flaky)
    end
    assert.is_true(p:wait_idle())
    local s = p:stats()
    assert.same({0, 0, 5, 1}, {s.queued, s.inflight, s.completed, s.dead})
    -- Still open: the dead letter is retried, and waited for the same way.
    assert.equal("handle", tether.type(p:retry_dead(p:dead_letters()[1])))
    assert.is_true(p:wait_idle())
    s = p:stats()
    assert.same({6, 0}, {s.completed, s.dead_held})
    accounting.check(s, "after wait_idle")
    assert.is_true(p:drain())
  end)

  it("returns nil and the context's error when the context ends first",
     function()
    local p = tether.pool { name = "stuck", workers = 1, quiet = true }
    local gate = tether.chan(0)
    p:submit(bg, "stuck", function(_, g) g:recv() end, gate)
    local ok, err = p:wait_idle(tether.with_timeout(bg, 0.05))
    assert.is_nil(ok)
    assert.equal(tether.deadline_exceeded, err)
    gate:close()
    assert.is_true(p:wait_idle())
    assert.is_true(p:drain())
  end)

  it("is refused from one of the pool's own ops", function()
    local p = tether.pool { name = "self", workers = 1, quiet = true }
    local h = p:submit(bg, "self", function(_, pool)
      return pool:wait_idle()
    end, p)
    local v, err = h:wait()
    assert.is_nil(v)
    assert.matches("wait_idle called from an op of pool 'self'",
                   err.message, 1, true)
    assert.is_true(p:drain())
  end)
end)
