-- Batches: pool:submit_many (many ops of one function, packed once and
-- queued together) and tether.map (results per item, at most the queue's
-- capacity outstanding, attached to a context).  Every ordering here is
-- made by channels, gates and the pool's events, never by sleeping.
local tether = require "tether"
local accounting = require "spec.support.accounting"
local child = require "spec.support.child"
local S = require "spec.support.store"

local bg = tether.background()

local function within(secs) return tether.with_timeout(bg, secs or 10) end

-- gated makes a pool whose only worker is held by a gate op, so that
-- what is submitted next stays queued until release() opens it.
local function gated(opts)
  opts.workers = 1
  opts.quiet = true
  local pool = tether.pool(opts)
  local gate, started = tether.chan(0), tether.chan(1)
  local blocker = assert(pool:submit(bg, "blocker", function(_, g, s)
    s:send(true)
    g:recv()
    return true
  end, gate, started))
  assert(started:recv(within()))
  return pool, function()
    gate:close()
    assert(blocker:wait(within()))
  end
end

local function balanced(pool)
  local s = pool:stats()
  accounting.check(s, accounting.describe(s))
  return s
end

describe("pool:submit_many", function()
  it("submits fn(ctx, item) for each item, in order, with fn shared",
     function()
    local pool = tether.pool { workers = 2, queue = 64, quiet = true }
    local scale = 10
    local items = {}
    for i = 1, 40 do items[i] = i end
    local hs, err = pool:submit_many(bg, "sq", function(ctx, x)
      assert(ctx:err() == nil)
      return x * scale
    end, items)
    assert.is_nil(err)
    assert.equal(40, #hs)
    for i, h in ipairs(hs) do
      assert.equal(i * 10, (h:wait(within())))
    end
    assert(pool:drain(within()))
    local s = balanced(pool)
    assert.equal(40, s.submitted)
    assert.equal(40, s.completed)
    -- Each op is its own: one submitted event each.
    local evs = pool:events()
    local p2 = tether.pool { workers = 1, queue = 8, quiet = true }
    local ch = p2:events()
    hs = assert(p2:submit_many(bg, { name = "named", timeout = 5 },
                               function(_, x) return x end, { "a", "b" }))
    assert(p2:drain(within()))
    local kinds = {}
    for ev in function() return ch:recv(within()) end do
      kinds[ev.kind] = (kinds[ev.kind] or 0) + 1
      if ev.kind == "submitted" then assert.equal("named", ev.name) end
    end
    assert.equal(2, kinds.submitted)
    assert.equal(2, kinds.completed)
    assert.equal("b", (hs[2]:wait()))
    evs:close()
  end)

  it("an empty list gives an empty table", function()
    local pool = tether.pool { quiet = true }
    local hs, err = pool:submit_many(bg, "x", function() end, {})
    assert.same({}, hs)
    assert.is_nil(err)
    assert.equal(0, pool:stats().submitted)
  end)

  it("stops at a full queue: the handles of the prefix and the refusal",
     function()
    local pool, release = gated { queue = 3 }
    local hs, err = pool:submit_many(bg, "x", function(_, x) return x end,
                                     { 1, 2, 3, 4, 5, 6 })
    assert.equal(3, #hs)
    assert.equal("queue_full", err.code)
    assert.equal(4, err.index)
    assert.matches("queue full: pool", err.message)
    local s = balanced(pool)
    assert.equal(1, s.rejected)
    assert.equal(4, s.submitted)  -- the blocker and items 1..3
    release()
    for i, h in ipairs(hs) do assert.equal(i, (h:wait(within()))) end
    assert(pool:drain(within()))
    balanced(pool)
    -- A closed pool takes none.
    hs, err = pool:submit_many(bg, "x", function() end, { 1 })
    assert.same({}, hs)
    assert.equal("closed", err.code)
    assert.equal(1, err.index)
  end)

  it("an item that cannot cross refuses the whole list", function()
    local pool, release = gated { queue = 8 }
    local co = coroutine.create(print)
    assert.has_error(function()
      pool:submit_many(bg, "x", function() end, { 1, 2, co })
    end, "cannot transfer item #3 of task 'x' (thread)")
    assert.equal(1, pool:stats().submitted)  -- the blocker only
    release()
    assert(pool:drain(within()))
    balanced(pool)
  end)

  it("raises for bad arguments, in Lua's words", function()
    local pool = tether.pool { quiet = true }
    local fn = function() end
    assert.has_error(function() pool:submit_many(bg, "x", fn, nil) end,
      "bad argument #4 to 'submit_many' (table expected, got nil)")
    assert.has_error(function() pool:submit_many(bg, "x", 42, {}) end,
      "bad argument #3 to 'submit_many' (function expected, got number)")
    assert.has_error(function() pool:submit_many(bg, true, fn, {}) end,
      "bad argument #2 to 'submit_many' (string or table expected, got "
      .. "boolean)")
    assert.has_error(function()
      pool:submit_many(bg, { nam = "x" }, fn, {})
    end, "bad argument #2 to 'submit_many' (unknown option 'nam'; did you "
      .. "mean 'name'?)")
    assert.has_error(function()
      pool:submit_many(bg, { priority = "high" }, fn, { 1 })
    end, "bad argument #2 to 'submit_many' (unknown priority class "
      .. "'high')")
    assert.equal(0, pool:stats().submitted)
  end)

  describe("with an overflow store", function()
    local dir
    lazy_setup(function() dir = S.setup_dir() end)
    lazy_teardown(function() S.rmdir(dir) end)

    it("items that find the queue full spill as pool:submit's would",
       function()
      local store = assert(tether.store.open("sqlite:" .. dir .. "/b.db"))
      local pool, release = gated { name = "p", queue = 1,
                                    overflow = store }
      local hs, err = pool:submit_many(bg, "op", "storeops:record",
                                       { "b1", "b2", "b3" })
      assert.is_nil(err)
      assert.equal(3, #hs)
      -- The first took the queue's slot; the others spilled.
      local _, e2 = hs[2]:wait(within(20))
      local _, e3 = hs[3]:wait(within(20))
      assert.equal("spilled", e2.code)
      assert.equal("spilled", e3.code)
      assert.is_string(e3.id)
      -- An item that is not plain data cannot travel: the list stops
      -- there, with the ones before it spilled.
      hs, err = pool:submit_many(bg, "op", "storeops:record",
                                 { "b4", { f = print }, "b5" })
      assert.equal(1, #hs)
      assert.equal("queue_full", err.code)
      assert.equal(2, err.index)
      assert.equal("spilled", select(2, hs[1]:wait(within(20))).code)
      local s = balanced(pool)
      assert.equal(3, s.spilled)
      release()
      assert(pool:drain(within()))
      balanced(pool)
      -- The spilled items run elsewhere as the same op would.
      local drainer = tether.pool { name = "d", workers = 2, queue = 4,
                                    quiet = true }
      local ok, rep = drainer:drain_store(store, within(30),
                                          { allow = { "storeops" } })
      assert.is_true(ok, tostring(rep))
      assert.equal(3, rep.completed)
      local tags = {}
      for _, d in ipairs(S.done(dir)) do tags[#tags + 1] = d.tag end
      table.sort(tags)
      assert.same({ "b1", "b2", "b3", "b4" }, tags)
      store:close()
    end)
  end)
end)

describe("tether.map", function()
  it("gives results and errors per item", function()
    local pool = tether.pool { workers = 2, queue = 4, quiet = true }
    local items = {}
    for i = 1, 50 do items[i] = i end
    local r, e = tether.map(pool, bg, function(_, x) return x * 2 end, items)
    assert.is_nil(e)
    for i = 1, 50 do assert.equal(i * 2, r[i]) end
    r, e = tether.map(pool, bg, function(_, x)
      if x % 10 == 0 then error("bad " .. x) end
      return x
    end, items)
    for i = 1, 50 do
      if i % 10 == 0 then
        assert.is_nil(r[i])
        assert.equal("failed", e[i].code)
        assert.matches("bad " .. i, e[i].message)
      else
        assert.equal(i, r[i])
        assert.is_nil(e[i])
      end
    end
    -- Never more outstanding than the queue holds: nothing was refused.
    local s = balanced(pool)
    assert.equal(0, s.rejected)
    assert.equal(100, s.submitted)
    assert.same({}, (tether.map(pool, bg, function() end, {})))
  end)

  it("ordered = false gives outcomes in the order the ops ended",
     function()
    -- Item 1 waits for a gate that item 4 opens; item 4 then waits for
    -- the pool's report that item 1 completed.  Items 2 and 3 run on the
    -- other worker before item 4: the ends come 2, 3, 1, 4.
    local pool = tether.pool { workers = 2, queue = 8, quiet = true }
    local evs = pool:events()
    local gate = tether.chan(0)
    local fn = function(ctx, x)
      if x == 1 then
        gate:recv(ctx)
        return "one"
      elseif x == 4 then
        gate:send(true, ctx)
        local done = 0
        while done < 3 do
          local ev = assert(evs:recv(ctx))
          if ev.kind == "completed" then done = done + 1 end
        end
      end
      return x
    end
    local r, e, index = tether.map(pool, within(), fn, { 1, 2, 3, 4 },
                                   { ordered = false })
    assert.is_nil(e)
    assert.same({ 2, 3, 1, 4 }, index)
    assert.same({ 2, 3, "one", 4 }, r)
    -- In order, the same work gives results by item.
    r, e, index = tether.map(pool, within(), fn, { 1, 2, 3, 4 })
    assert.is_nil(e)
    assert.is_nil(index)
    assert.same({ "one", 2, 3, 4 }, r)
    evs:close()
  end)

  it("ends with its context: the rest get the context's error", function()
    local pool = tether.pool { workers = 1, queue = 3, quiet = true }
    local ctx, cancel = tether.with_cancel(bg)
    local r, e = tether.map(pool, ctx, function(opctx, x)
      if x == 1 then
        cancel()
        return 1
      end
      -- The op's context is a child of ctx: ended too.
      if opctx:err() then error(opctx:err()) end
      return x
    end, { 1, 2, 3, 4, 5, 6 })
    assert.same({ 1 }, r)
    assert.is_nil(e[1])
    for i = 2, 6 do assert.equal("canceled", e[i].code, "item " .. i) end
    assert(pool:wait_idle(within()))
    local s = balanced(pool)
    assert.is_true(s.submitted <= 3)  -- items 4..6 never went in
    -- A context that ended already: nothing runs.
    r, e = tether.map(pool, ctx, function() return true end, { 1, 2 })
    assert.same({}, r)
    assert.equal("canceled", e[1].code)
    assert.equal("canceled", e[2].code)
    assert.equal(s.submitted, pool:stats().submitted)
  end)

  it("a refusal that waiting cannot lift is the item's error", function()
    local pool = tether.pool { quiet = true }
    pool:close()
    local r, e = tether.map(pool, bg, function() return 1 end, { 1, 2 })
    assert.same({}, r)
    assert.equal("closed", e[1].code)
    assert.equal("closed", e[2].code)
    assert.equal(2, e[2].index)
    balanced(pool)
  end)

  it("raises for bad arguments and unknown options", function()
    local pool = tether.pool { quiet = true }
    local fn = function() end
    assert.has_error(function() tether.map(pool, bg, fn, {}, { order = 1 }) end,
      "bad argument #5 to 'map' (unknown option 'order'; did you mean "
      .. "'ordered'?)")
    assert.has_error(function() tether.map(pool, bg, fn, nil) end,
      "bad argument #4 to 'map' (table expected, got nil)")
    assert.has_error(function() tether.map(pool, bg, 1, {}) end,
      "bad argument #3 to 'map' (function expected, got number)")
    assert.has_error(function() tether.map(pool, nil, fn, {}) end)
    assert.has_error(function()
      tether.map(pool, bg, fn, { 1, coroutine.create(print) })
    end, "cannot transfer item #2 of task 'map' (thread)")
    assert.equal(0, pool:stats().submitted)
  end)

  it("is ended by Ctrl-C, and its ops with it", function()
    child.ctrl_c([[
local pool = tether.pool { workers = 1, quiet = true }
local gate = tether.chan(0)]],
      [[tether.map(pool, bg, function(ctx) gate:recv(ctx) end, { 1, 2, 3 })]])
  end)
end)
