-- Transfer of values between lua_States (DESIGN section 2).
--
-- tether.core._test_transfer_roundtrip(...) (a hook for the specs, not
-- part of the API) packs its arguments, unpacks them in a brand-new
-- lua_State (standard libraries, this state's package paths,
-- require "tether"), packs them again there, closes that state and
-- unpacks the result here: every value below really crosses two states.

-- luacheck: read globals TRANSFER_SPEC_GLOBAL

local tether = require "tether"
local core = require "tether.core"
local rt = core._test_transfer_roundtrip

-- The exact message of a refusal by _test_transfer_roundtrip.
local function refused(path, why)
  return ("cannot transfer %s of '_test_transfer_roundtrip' (%s)"):format(
    path, why)
end

describe("transfer", function()
  it("runs on Lua 5.4", function()
    assert.are.equal("Lua 5.4", _VERSION)
    assert.are.equal(core._test_transfer_roundtrip,
                     tether.core._test_transfer_roundtrip)
  end)

  describe("scalars", function()
    it("keeps nil, booleans and the count of values", function()
      assert.are.equal(5, select("#", rt(nil, true, false, nil, nil)))
      local a, b, c, d, e = rt(nil, true, false, nil, nil)
      assert.is_nil(a)
      assert.is_true(b)
      assert.is_false(c)
      assert.is_nil(d)
      assert.is_nil(e)
      assert.are.equal(0, select("#", rt()))
    end)

    it("keeps the integer and float subtypes", function()
      local i, f, z = rt(3, 3.0, -0.0)
      assert.are.equal("integer", math.type(i))
      assert.are.equal("float", math.type(f))
      assert.are.equal(3, i)
      assert.are.equal(3.0, f)
      assert.are.equal(-math.huge, 1 / z)
      assert.are.equal(math.maxinteger, (rt(math.maxinteger)))
      assert.are.equal(math.mininteger, (rt(math.mininteger)))
      assert.are.equal(0.1, (rt(0.1)))
    end)

    it("keeps NaN and infinities", function()
      local nan, inf, ninf = rt(0 / 0, math.huge, -math.huge)
      assert.is_true(nan ~= nan)
      assert.are.equal("float", math.type(nan))
      assert.are.equal(math.huge, inf)
      assert.are.equal(-math.huge, ninf)
    end)

    it("copies strings byte for byte", function()
      local bin = "a\0b\0\255\n" .. ("x"):rep(100000)
      local s, e = rt(bin, "")
      assert.are.equal(bin, s)
      assert.are.equal(#bin, #s)
      assert.are.equal("", e)
    end)
  end)

  describe("tables", function()
    it("deep-copies nested tables", function()
      local t = {1, 2, 3, x = {y = {z = "deep"}}, [10] = true}
      local u = rt(t)
      assert.are_not.equal(t, u)
      assert.are.same(t, u)
      assert.are.equal("deep", u.x.y.z)
      assert.are.equal(3, #u)
    end)

    it("preserves cycles", function()
      local t = {name = "root"}
      t.self = t
      t.child = {parent = t}
      local u = rt(t)
      assert.are_not.equal(t, u)
      assert.are.equal(u, u.self)
      assert.are.equal(u, u.child.parent)
    end)

    it("keeps shared references shared", function()
      local shared = {n = 1}
      local t = {a = shared, b = shared, list = {shared, shared}}
      local u = rt(t)
      assert.are.equal(u.a, u.b)
      assert.are.equal(u.a, u.list[1])
      assert.are.equal(u.a, u.list[2])
      u.a.n = 2
      assert.are.equal(2, u.b.n)
      assert.are.equal(1, shared.n)
    end)

    it("keeps shared references across separate arguments", function()
      local shared = {}
      local a, b = rt(shared, {shared})
      assert.are.equal(a, b[1])
    end)

    it("takes keys of any transferable type", function()
      local k = {"key"}
      local t = {[k] = "table key", [true] = "bool", [1.5] = "float",
                 [2] = "int", ["s"] = "string", ref = k}
      local u = rt(t)
      assert.are.equal("bool", u[true])
      assert.are.equal("float", u[1.5])
      assert.are.equal("int", u[2])
      assert.are.equal("string", u.s)
      assert.are.equal("table key", u[u.ref])
      assert.are.equal("key", u.ref[1])
    end)

    it("keeps holes, and sparse keys whose length is far beyond them",
       function()
      local holes = {1, nil, "three", nil, 5.5, x = "x"}
      local u = rt(holes)
      for k, v in pairs(holes) do assert.are.equal(v, u[k]) end
      for k, v in pairs(u) do assert.are.equal(v, holes[k]) end
      -- Keys 1, 2, 4, ..., 2^24: a border of this table may be 2^24.
      local sparse = {}
      for e = 0, 24 do sparse[2 ^ e // 1] = e end
      u = rt(sparse)
      local n = 0
      for k, v in pairs(u) do
        assert.are.equal(sparse[k], v)
        n = n + 1
      end
      assert.are.equal(25, n)
    end)
  end)

  describe("functions", function()
    it("carries bytecode and upvalues", function()
      local base, scale = 10, {by = 3}
      local function f(x) return (base + x) * scale.by end
      local g = rt(f)
      assert.are_not.equal(f, g)
      assert.are.equal(f(2), g(2))
      assert.are.equal(36, g(2))
    end)

    it("keeps debug information: source, lines and upvalue names", function()
      local answer = 42
      local function f() return answer end
      local g = rt(f)
      local fi, gi = debug.getinfo(f, "S"), debug.getinfo(g, "S")
      assert.are.equal(fi.source, gi.source)
      assert.are.equal(fi.linedefined, gi.linedefined)
      assert.are.equal("answer", (debug.getupvalue(g, 1)))
    end)

    it("takes upvalues as snapshots", function()
      local n = 0
      local function counter() n = n + 1; return n end
      local c = rt(counter)
      assert.are.equal(1, c())
      assert.are.equal(2, c())
      assert.are.equal(1, counter())
    end)

    it("handles recursive local functions", function()
      local function fact(k)
        if k <= 1 then return 1 end
        return k * fact(k - 1)
      end
      local g = rt(fact)
      assert.are.equal(3628800, g(10))
      assert.are.equal(g, select(2, debug.getupvalue(g, 1)))
    end)

    it("handles mutually recursive functions", function()
      local is_even, is_odd
      function is_even(k)
        if k == 0 then return true end
        return is_odd(k - 1)
      end
      function is_odd(k)
        if k == 0 then return false end
        return is_even(k - 1)
      end
      local e = rt(is_even)
      assert.is_true(e(10))
      assert.is_false(e(7))
    end)

    it("keeps an upvalue table shared between functions", function()
      local store = {}
      local function put(k, v) store[k] = v end
      local function get(k) return store[k] end
      local p, g = rt(put, get)
      p("a", 1)
      assert.are.equal(1, g("a"))
      assert.is_nil(store.a)
    end)

    it("keeps a local shared between closures as one variable", function()
      local count = 0
      local function inc() count = count + 1 end
      local function read() return count end
      local t = rt({inc = inc, read = read})
      t.inc()
      t.inc()
      assert.are.equal(2, t.read())
      assert.are.equal(0, count)
    end)

    it("unpacks a function shared twice as one closure", function()
      local k = 1
      local function f() return k end
      local a, b = rt(f, {f})
      assert.are.equal(a, b[1])
    end)

    it("binds _ENV to the destination's globals", function()
      -- The fresh state has no TRANSFER_SPEC_GLOBAL; back here, after the
      -- second unpack, the function reads this state's global again: it
      -- never carried a copy of the globals it saw.  (busted runs this
      -- file in an environment of its own over _G: that environment is
      -- not carried either.)
      _G.TRANSFER_SPEC_GLOBAL = "here"
      local function f() return TRANSFER_SPEC_GLOBAL, _ENV end
      local g = rt(f)
      local v, env = g()
      assert.are.equal("here", v)
      assert.are.equal(_G, env)
      _G.TRANSFER_SPEC_GLOBAL = "changed"
      assert.are.equal("changed", (g()))
      _G.TRANSFER_SPEC_GLOBAL = nil
    end)

    it("binds the real globals in a function loaded with them", function()
      local f = load("return TRANSFER_SPEC_G2, _ENV")
      _G.TRANSFER_SPEC_G2 = 5
      local v, env = rt(f)()
      assert.are.equal(5, v)
      assert.are.equal(_G, env)
      _G.TRANSFER_SPEC_G2 = nil
    end)

    it("copies a sandbox _ENV that is a plain table", function()
      local f = load("return x, y", "sandboxed", "t", {x = 7})
      _G.y = "global y"
      local x, y = rt(f)()
      assert.are.equal(7, x)
      assert.is_nil(y)
      _G.y = nil
    end)

    it("copies a Lua function stored in a global", function()
      _G.transfer_spec_fn = function() return "copied" end
      local g = rt(_G.transfer_spec_fn)
      assert.are_not.equal(_G.transfer_spec_fn, g)
      assert.are.equal("copied", g())
      _G.transfer_spec_fn = nil
    end)
  end)

  describe("task calls of scalars", function()
    -- A task whose upvalues and arguments are all scalars is packed
    -- without the general packer's table of values seen (lpack.c's flat
    -- path): it must cross exactly as any other.
    it("carry upvalues and arguments as they are at each call", function()
      local n, s, f, b, z = 0, "a\0b\255", 2.5, true, nil
      local function task(x, y)
        return n, s, f, b, z, x, y, math.type(n), math.type(f), _G == _ENV
      end
      for i = 1, 3 do
        n = i
        local r = table.pack(tether.go(task, i * 10, "k"):wait())
        assert.are.equal(10, r.n)
        assert.are.equal(i, r[1])
        assert.are.equal("a\0b\255", r[2])
        assert.are.equal(2.5, r[3])
        assert.is_true(r[4])
        assert.is_nil(r[5])
        assert.are.equal(i * 10, r[6])
        assert.are.equal("k", r[7])
        assert.are.equal("integer", r[8])
        assert.are.equal("float", r[9])
        assert.is_true(r[10])
      end
    end)

    it("give results of any count, nils included", function()
      local r = table.pack(tether.go(function() return nil, 1, nil end)
                             :wait())
      assert.are.equal(3, r.n)
      assert.are.equal(1, r[2])
      assert.are.equal(0, select("#", tether.go(function() end):wait()))
    end)
  end)

  describe("values in package.loaded", function()
    it("cross by name: functions of the standard libraries", function()
      local p, f, rep, insert = rt(print, string.format, string.rep,
                                   table.insert)
      assert.are.equal(print, p)
      assert.are.equal(string.format, f)
      assert.are.equal(string.rep, rep)
      assert.are.equal(table.insert, insert)
    end)

    it("cross by name: module tables and io.stdout", function()
      local s, m, out = rt(string, math, io.stdout)
      assert.are.equal(string, s)
      assert.are.equal(math, m)
      assert.are.equal(io.stdout, out)
    end)

    it("cross by name: the tether module and its functions", function()
      local t, c, bg = rt(tether, core, tether.background)
      assert.are.equal(tether, t)
      assert.are.equal(core, c)
      assert.are.equal(tether.background, bg)
    end)

    it("cross by name inside functions and tables", function()
      local f = rt(function(...) return string.format("%d-%s", ...) end)
      assert.are.equal("1-a", f(1, "a"))
      local t = rt({fmt = string.format, lib = table})
      assert.are.equal(string.format, t.fmt)
      assert.are.equal(table, t.lib)
    end)

    it("passes the global table itself as the destination's", function()
      local g, t = rt(_G, {env = _G})
      assert.are.equal(_G, g)
      assert.are.equal(_G, t.env)
    end)

    describe("a user's module", function()
      local dir, base, files, saved_path

      setup(function()
        local tmp = os.tmpname()
        os.remove(tmp)
        dir = tmp:match("^(.*)/[^/]*$")
        base = "transfer_spec_" .. tostring(os.time()) .. "_" ..
               tostring(math.random(1, 1e9))
        files = {}
        local function write(name, text)
          local path = dir .. "/" .. name
          local f = assert(io.open(path, "w"))
          f:write(text)
          f:close()
          files[#files + 1] = path
        end
        -- helper's upvalue is a file handle: only its name can cross.
        write(base .. ".lua", [[
          local log = io.tmpfile()
          local M = {}
          function M.helper(x) log:write(x, "\n") return x * 2 end
          M.config = setmetatable({}, {__index = function() return 1 end})
          return M
        ]])
        -- A module with a dot in its name: tether.lint and the like.
        os.execute("mkdir -p '" .. dir .. "/" .. base .. "'")
        write(base .. "/sub.lua", [[
          return { fn = function() return "sub" end }
        ]])
        saved_path = package.path
        package.path = dir .. "/?.lua;" .. package.path
      end)

      teardown(function()
        for i = #files, 1, -1 do os.remove(files[i]) end
        os.remove(dir .. "/" .. base)
        package.path = saved_path
        package.loaded[base] = nil
        package.loaded[base .. ".sub"] = nil
      end)

      it("crosses by name, required again on the other side", function()
        local mod = require(base)
        local m, helper, config = rt(mod, mod.helper, mod.config)
        assert.are.equal(mod, m)
        assert.are.equal(mod.helper, helper)
        assert.are.equal(mod.config, config)
        assert.are.equal(42, helper(21))
      end)

      it("is found even when required after an earlier transfer", function()
        assert.are.equal(print, (rt(print)))
        local sub = require(base .. ".sub")
        local fn = rt(sub.fn)
        assert.are.equal(sub.fn, fn)
        assert.are.equal("sub", fn())
      end)

      it("lets a closure over the module cross", function()
        local mod = require(base)
        local f = rt(function(x) return mod.helper(x) + 1 end)
        assert.are.equal(7, f(3))
      end)
    end)
  end)

  describe("tether objects", function()
    it("cross by reference and stay ==", function()
      local bg = tether.background()
      local a, t = rt(bg, {ctx = bg})
      assert.are.equal(bg, a)
      assert.are.equal(bg, t.ctx)
    end)

    it("keep the error sentinels ==", function()
      local c, d = rt(tether.canceled, tether.deadline_exceeded)
      assert.are.equal(tether.canceled, c)
      assert.are.equal(tether.deadline_exceeded, d)
    end)

    it("cross as upvalues", function()
      local bg = tether.background()
      local f = rt(function() return bg end)
      assert.are.equal(bg, f())
    end)
  end)

  describe("refusals", function()
    it("refuse a coroutine, naming the argument", function()
      local co = coroutine.create(function() end)
      assert.has_error(function() rt(co) end,
                       refused("argument #1", "thread"))
      assert.has_error(function() rt(1, co) end,
                       refused("argument #2", "thread"))
    end)

    it("refuse a foreign userdata", function()
      local f = io.tmpfile()
      assert.has_error(function() rt(f) end,
                       refused("argument #1", "userdata"))
      f:close()
    end)

    it("refuse a table with a metatable", function()
      assert.has_error(function() rt(setmetatable({}, {})) end,
                       refused("argument #1", "table with a metatable"))
    end)

    it("refuse a C function found in no module", function()
      local wrapped = coroutine.wrap(function() end)
      assert.has_error(function() rt(wrapped) end,
                       refused("argument #1", "C function"))
    end)

    it("name the path through upvalues and fields", function()
      local cfg = {db = io.tmpfile()}
      local function audit() return cfg end
      assert.has_error(function() rt(audit) end,
        refused("field 'db' of upvalue 'cfg' of argument #1", "userdata"))
      cfg.db:close()
    end)

    it("name other keys in brackets", function()
      local co = coroutine.create(function() end)
      assert.has_error(function() rt({1, 2, co}) end,
                       refused("field [3] of argument #1", "thread"))
      assert.has_error(function() rt({x = {[1.5] = {[true] = co}}}) end,
        refused("field [true] of field [1.5] of field 'x' of argument #1",
                "thread"))
      assert.has_error(function() rt({[co] = 1}) end,
                       refused("a key of argument #1", "thread"))
    end)

    it("refuse nesting deeper than 200 levels", function()
      local function chain(n)
        local t = {}
        local cur = t
        for _ = 2, n do cur.next = {}; cur = cur.next end
        return t
      end
      assert.are.equal("table", type(rt(chain(200))))
      assert.has_error(function() rt(chain(201)) end,
        refused("argument #1", "nested more than 200 levels deep"))
      assert.has_error(function() rt(chain(100000)) end,
        refused("argument #1", "nested more than 200 levels deep"))
    end)

    it("leave the state usable after a refusal", function()
      local co = coroutine.create(function() end)
      for _ = 1, 100 do
        local ok = pcall(rt, {big = ("x"):rep(1000), tether.background(),
                              {print}, co})
        assert.is_false(ok)
      end
      collectgarbage()
      assert.are.equal(3, (rt(3)))
    end)
  end)
end)
