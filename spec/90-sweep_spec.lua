-- Bad-input sweep: every public function and method of the module, found
-- from the module tables and from the metatables registered by the
-- binding (so new ones are covered without editing this file), is called
-- with nil, wrong types, NaN, +-inf, negative and huge numbers, empty and
-- huge strings, closed, finished and collected objects and objects of the
-- wrong kind.  Each call must either return or raise a Lua error with a
-- message; the process must not crash (`make check` runs this under ASan,
-- UBSan and TSan), and every pool touched must keep exact accounting.
--
-- How calls stay bounded.  Each function has a template of valid
-- arguments; one position at a time is replaced by each bad value.  The
-- templates of calls that can block give them something ready (a closed
-- channel to receive from, a resolved handle to wait on, an idle pool to
-- drain) or an already canceled context, so that replacing any one
-- argument cannot make them wait for ever.  The forms that block for ever
-- by design are never produced; SKIPPED lists them and is printed.  A
-- watchdog ends the process with a message naming the function if a
-- function makes no progress for WATCHDOG seconds.
local tether = require "tether"
local core = require "tether.core"
local accounting = require "spec.support.accounting"

local bg = tether.background()
local NAN, INF = 0 / 0, math.huge
local WATCHDOG = 120

local SKIPPED = {
  "Chan:recv() without a context on an open, empty channel",
  "Chan:send() without a context on a channel with no room",
  "Context:wait() without a timeout on a context that is not done",
  "Handle:wait() without a context on a handle that never resolves",
  "Pool:drain() without a context on a pool whose work never ends",
  "Group:go() at the limit, Group:wait() and Singleflight:call() while "
    .. "a task blocks",
  "tether.sleep() for long without a context; tether.select() with no "
    .. "ready case and no default",
  "tether.shutdown() while executor work blocks (it waits for the work)",
  "__gc on the process-wide objects background(), todo(), canceled, "
    .. "deadline_exceeded and default: collecting their userdata by hand "
    .. "empties the module's own fields (tether.canceled, tether.default) "
    .. "for the rest of the state",
  "tether.lint.json() of a cyclic table or _G: the encoder has no cycle "
    .. "check and recurses until Lua's stack overflows (5 s, a minute "
    .. "under TSan) before it raises",
  "tether.drain_all(): it drains every pool of the process, the suite's "
    .. "own among them (spec/16-exit_spec.lua runs it in a process of its "
    .. "own)",
  "tether.run_context(): it takes over SIGINT and SIGTERM of the process "
    .. "that runs the suite (spec/15-signals_spec.lua runs it in processes "
    .. "of their own)",
}

-- Never called at all (SKIPPED says why).
local NOT_CALLED = {
  ["tether.drain_all"] = true,
  ["tether.run_context"] = true,
}

-- Called with no arguments at all, these block for ever by design.
local NO_ARGS_BLOCKS = { ["tether.select"] = true }

-- Values a function is not given (SKIPPED says why), by label.
local NOT_GIVEN = {
  ["tether.lint.json"] = { ["cyclic table"] = true, ["_G"] = true },
}

local function noop() end

-- {====================================================================
-- Enumeration
-- =====================================================================

-- The registry names of the binding's types: every metatable with a
-- '__tether_type' field.
local function registry_types()
  local names = {}
  for name, mt in pairs(debug.getregistry()) do
    if type(name) == "string" and type(mt) == "table"
       and rawget(mt, "__tether_type") ~= nil then
      names[#names + 1] = name
    end
  end
  table.sort(names)
  return names
end

-- "tether.Chan" -> "Chan" (labels) and "chan" (tether.type's words).
local function short(tname) return (tname:gsub("^tether%.", "")) end
local function lower(tname) return short(tname):lower() end

-- entries lists {label, fn, tname} for the module functions ("tether.x",
-- each function once: tether re-exports tether.core), the linter
-- ("tether.lint.x"), methods ("Chan:send") and metamethods ("Chan.__len",
-- for every type even where types share one C function).
local function entries()
  local list, seen = {}, {}
  local function add(label, fn, tname)
    if type(fn) == "function" and (tname or not seen[fn]) then
      seen[fn] = true
      list[#list + 1] = {label = label, fn = fn, tname = tname}
    end
  end
  local function add_module(prefix, mod)
    local keys = {}
    for k in pairs(mod) do keys[#keys + 1] = k end
    table.sort(keys)
    for _, k in ipairs(keys) do add(prefix .. k, mod[k]) end
  end
  add_module("tether.", tether)
  add_module("tether.", core)
  add_module("tether.lint.", require "tether.lint")
  for _, tname in ipairs(registry_types()) do
    local mt = debug.getregistry()[tname]
    local keys = {}
    for k in pairs(mt) do keys[#keys + 1] = k end
    table.sort(keys)
    for _, k in ipairs(keys) do
      add(short(tname) .. "." .. k, mt[k], tname)
    end
    if type(mt.__index) == "table" then
      keys = {}
      for k in pairs(mt.__index) do keys[#keys + 1] = k end
      table.sort(keys)
      for _, k in ipairs(keys) do
        add(short(tname) .. ":" .. k, mt.__index[k], tname)
      end
    end
  end
  return list
end

-- }====================================================================


-- {====================================================================
-- Objects in every state, made fresh for each function
-- =====================================================================

-- (A cancel function made in this state holds no object of its own, and
-- has no __gc: it stays as it is.)
local function freed(o)
  local gc = getmetatable(o).__gc
  if gc then gc(o) end
  return o
end

local function is_freed(o)
  local mt = type(o) == "userdata" and getmetatable(o)
  return mt and rawget(mt, "__tether_type") ~= nil
     and tostring(o) == "tether object (freed)" or false
end

-- make_world returns a table of objects, one or more of each type, in
-- several states; w.gate (never handed to a call) holds the one op of
-- w.pool_busy that blocks.
local function make_world()
  local w = {}
  w.bg, w.todo = tether.background(), tether.todo()
  w.canceled, w.deadline_exceeded = tether.canceled, tether.deadline_exceeded
  w.default = tether.default
  w.ctx_live, w.cancel_live = tether.with_cancel(bg)
  w.ctx_cause, w.cancel_cause = tether.with_cancel_cause(bg)
  local c
  w.ctx_canceled, c = tether.with_cancel(bg)
  c()
  w.cancel_used = c
  w.ctx_expired = tether.with_timeout(bg, 0)
  w.ctx_far, w.cancel_far = tether.with_deadline(bg, tether.now() + 3600)
  w.ctx_value = tether.with_value(w.ctx_live, "k", "v")
  w.ctx_detached = tether.without_cancel(w.ctx_canceled)
  w.key = tether.key("k")
  w.chan_big = tether.chan(4096)
  w.chan_unbuf = tether.chan(0)
  w.chan_full = tether.chan(1)
  assert(w.chan_full:try_send("x"))
  w.chan_closed = tether.chan(1)
  w.chan_closed:close()
  w.send_case = w.chan_big:send_case("s")
  w.send_case_used = w.chan_big:send_case("u")
  assert.equal(1, (tether.select(w.send_case_used)))
  w.timer = tether.after(0)
  w.timer_far = tether.after(3600)
  w.af = tether.after_func(w.ctx_live, noop)
  w.af_ran = tether.after_func(w.ctx_canceled, noop)
  w.h_done = tether.go(function() return 1 end)
  w.h_failed = tether.go(function() error("boom") end)
  w.h_done:wait()
  w.h_failed:wait()
  w.gate = tether.chan(0)
  w.pool = tether.pool { name = "sweep", workers = 1, queue = 256,
                         quiet = true }
  w.pool_busy = tether.pool { name = "sweep-busy", workers = 1, queue = 4,
                              quiet = true }
  w.h_running = w.pool_busy:submit(bg, "gate", function(_, gate)
    gate:recv()
  end, w.gate)
  w.h_queued = w.pool_busy:submit(bg, "queued", noop)
  w.h_stopped = w.pool_busy:submit(bg, "stopped", noop)
  assert.is_true(w.h_stopped:stop())
  w.pool_drained = tether.pool { name = "sweep-drained", workers = 1,
                                 quiet = true }
  assert.is_true(w.pool_drained:drain())
  w.pool_dead = tether.pool { name = "sweep-dead", workers = 1,
                              quiet = true }
  w.pool_dead:submit(bg, "fails", function() error("dead") end):wait()
  w.dead_id = w.pool_dead:dead_letters()[1].id
  w.group, w.gctx = tether.group(bg)
  w.group_limited = tether.group(bg, { limit = 1 })
  w.group_failed = tether.group(bg)
  w.group_failed:go(function() error("group task failed") end)
  w.group_failed:wait()
  w.sf = tether.singleflight()
  w.saga = tether.saga { name = "sweep",
    { name = "a", action = noop, compensate = noop } }
  w.err = tether.error("failed", "boom", "cause")
  -- Collected by hand: the box is empty, the object released.
  w.freed_ctx = freed((tether.with_cancel(bg)))
  w.freed_chan = freed(tether.chan(1))
  w.freed_pool = freed(tether.pool { name = "sweep-freed", workers = 1,
                                     quiet = true })
  w.freed_handle = freed(tether.go(noop))
  w.freed_group = freed((tether.group(bg)))
  w.freed_sf = freed(tether.singleflight())
  w.freed_saga = freed(tether.saga { { name = "a", action = noop } })
  w.freed_key = freed(tether.key("k"))
  w.freed_err = freed(tether.error("failed", "x"))
  w.freed_timer = freed(tether.after(0))
  w.freed_cancel = freed(select(2, tether.with_cancel(bg)))
  return w
end

-- The objects of a world, each with a label, in a stable order.
local function world_values(w)
  local keys, out = {}, {}
  for k in pairs(w) do
    if k ~= "gate" and k ~= "dead_id" then keys[#keys + 1] = k end
  end
  table.sort(keys)
  for _, k in ipairs(keys) do out[#out + 1] = {k, w[k]} end
  return out
end

-- The process-wide objects that __gc must not be called on (SKIPPED).
local function singleton(v)
  return rawequal(v, bg) or rawequal(v, tether.todo())
      or rawequal(v, tether.canceled)
      or rawequal(v, tether.deadline_exceeded)
      or rawequal(v, tether.default)
end

-- The first live object of each type in a world, by tether.type's word;
-- a process-wide one only with 'shared' (or if there is no other).
local function instances(w, shared)
  local by, fallback = {}, {}
  for _, kv in ipairs(world_values(w)) do
    local t = tether.type(kv[2])
    if t and not is_freed(kv[2]) then
      if singleton(kv[2]) then
        fallback[t] = fallback[t] or kv[2]
      else
        by[t] = by[t] or kv[2]
      end
    end
  end
  if shared then
    for t, v in pairs(fallback) do by[t] = by[t] or v end
  end
  return by
end

-- }====================================================================


-- {====================================================================
-- Bad values (made once)
-- =====================================================================

local HUGE = string.rep("x", 1 << 20)
local tmpfile = assert(io.tmpfile())
local closedfile = assert(io.tmpfile())
closedfile:close()
local deep = {}
do
  local t = deep
  for _ = 1, 300 do t.next = {}; t = t.next end
end
local cycle = {}
cycle.self, cycle[1] = cycle, cycle
local big = {}
for i = 1, 10000 do big[i] = i end
local trap = setmetatable({}, {
  __index = function(_, k) error("trap: read of " .. tostring(k)) end,
  __len = function() error("trap: length") end,
})

local PLAIN = {
  {"nil", nil}, {"false", false}, {"true", true},
  {"0", 0}, {"-0.0", -0.0}, {"1", 1}, {"3", 3}, {"-1", -1}, {"0.5", 0.5},
  {"-0.5", -0.5}, {"1e-300", 1e-300}, {"2^31", 2 ^ 31}, {"2^53", 2 ^ 53},
  {"2^63", 2 ^ 63}, {"-2^63", -2 ^ 63}, {"maxinteger", math.maxinteger},
  {"mininteger", math.mininteger}, {"1e308", 1e308}, {"-1e308", -1e308},
  {"inf", INF}, {"-inf", -INF}, {"NaN", NAN},
  {"''", ""}, {"'x'", "x"}, {"'0'", "0"}, {"'-1'", "-1"}, {"'nan'", "nan"},
  {"'inf'", "inf"}, {"'a\\0b'", "a\0b"}, {"'%s%d%n'", "%s%d%n"},
  {"'high'", "high"}, {"'default'", "default"},
  {"'no.such.module:fn'", "no.such.module:fn"},
  {"'string:rep'", "string:rep"}, {"1 MiB string", HUGE},
  {"{}", {}}, {"{1,2,3}", {1, 2, 3}}, {"{name='x'}", {name = "x"}},
  {"{limit=-1,workers=-1,queue=-1,timeout=NaN}",
    {limit = -1, workers = -1, queue = -1, timeout = NAN}},
  {"{timeout=inf,retry={attempts=0}}",
    {timeout = INF, retry = {attempts = 0}, priority = "none"}},
  {"cyclic table", cycle}, {"300-deep table", deep},
  {"10000-element table", big}, {"table with trapping __index", trap},
  {"_G", _G}, {"tether module", tether},
  {"Lua function", noop},
  {"erroring function", function() error("sweep: raised") end},
  {"function raising a table", function() error({}) end},
  {"function returning a coroutine",
    function() return coroutine.create(noop) end},
  {"string.len", string.len},
  {"C function in no module", coroutine.wrap(noop)},
  {"coroutine", coroutine.create(noop)},
  {"foreign userdata (file)", tmpfile},
  {"closed file", closedfile},
  {"light userdata", rawget(debug.getregistry()["tether.Chan"],
                            "__tether_type")},
}

-- }====================================================================


-- {====================================================================
-- Templates: valid arguments, receiver first for methods
-- =====================================================================

local sink = { write = function(self) return self end }
local lint_report = { files = {}, warnings = 0, errors = 0 }
local lint_finding = { file = "x.lua", line = 1, column = 1,
                       end_column = 1, code = "W101", message = "m" }

local T = {
  ["tether.after"] = function() return {0.001} end,
  ["tether.after_func"] = function(w) return {w.ctx_live, noop} end,
  ["tether.chan"] = function() return {4} end,
  ["tether.error"] = function() return {"failed", "m", "cause"} end,
  ["tether.go"] = function() return {noop, 1} end,
  ["tether.group"] = function(w) return {w.bg, {limit = 2}} end,
  ["tether.key"] = function() return {"k"} end,
  ["tether.pool"] = function()
    return {{name = "sweep-made", workers = 1, queue = 4, quiet = true}}
  end,
  ["tether.safe_go"] = function() return {"sweep", noop} end,
  ["tether.saga"] = function()
    return {{name = "s", {name = "a", action = noop}}}
  end,
  ["tether.select"] = function(w) return {w.default, w.chan_closed} end,
  ["tether.sleep"] = function(w) return {0, w.ctx_canceled} end,
  ["tether._test_transfer_roundtrip"] = function() return {1, "x"} end,
  ["tether.type"] = function() return {1} end,
  ["tether.with_cancel"] = function(w) return {w.bg} end,
  ["tether.with_cancel_cause"] = function(w) return {w.bg} end,
  ["tether.with_deadline"] = function(w)
    return {w.bg, tether.now() + 60, "c"}
  end,
  ["tether.with_timeout"] = function(w) return {w.bg, 60, "c"} end,
  ["tether.with_value"] = function(w) return {w.bg, "k", "v"} end,
  ["tether.without_cancel"] = function(w) return {w.bg} end,
  ["Context:value"] = function(w) return {w.ctx_value, "k"} end,
  ["Context:wait"] = function(w) return {w.ctx_canceled, 0} end,
  ["Chan:send"] = function(w) return {w.chan_big, "v", w.ctx_canceled} end,
  ["Chan:recv"] = function(w) return {w.chan_closed, w.ctx_canceled} end,
  ["Chan:try_send"] = function(w) return {w.chan_big, "v"} end,
  ["Chan:send_case"] = function(w) return {w.chan_big, "v"} end,
  ["Pool:submit"] = function(w) return {w.pool, w.bg, "op", noop, 1} end,
  ["Pool:drain"] = function(w) return {w.pool, w.ctx_canceled} end,
  ["Pool:wait_idle"] = function(w) return {w.pool, w.ctx_canceled} end,
  ["tether.signal_context"] = function(w) return {w.bg, "USR2"} end,
  ["Pool:retry_dead"] = function(w) return {w.pool_dead, w.dead_id} end,
  ["Pool:drop_dead"] = function(w) return {w.pool_dead, w.dead_id} end,
  ["Handle:wait"] = function(w) return {w.h_done, w.ctx_canceled} end,
  ["Group:go"] = function(w) return {w.group, noop, 1} end,
  ["Group:try_go"] = function(w) return {w.group, noop, 1} end,
  ["Singleflight:call"] = function(w)
    return {w.sf, w.bg, "k", noop, {timeout = 5}}
  end,
  ["Singleflight:forget"] = function(w) return {w.sf, "k"} end,
  ["Saga:run"] = function(w) return {w.saga, w.bg, {}} end,
  ["CancelFunc.__call"] = function(w) return {w.cancel_cause, "c"} end,
  ["Error.__index"] = function(w) return {w.err, "code"} end,
  ["Error.__concat"] = function(w) return {w.err, "x"} end,
  ["tether.lint.check_source"] = function()
    return {"local x = 1\n", "x.lua", {}}
  end,
  ["tether.lint.check_file"] = function()
    return {"lua/tether/init.lua", {}}
  end,
  ["tether.lint.expand_paths"] = function() return {{"lua/tether"}} end,
  ["tether.lint.check_paths"] = function()
    return {{"lua/tether/init.lua"}, {}}
  end,
  ["tether.lint.format_finding"] = function() return {lint_finding} end,
  ["tether.lint.summary"] = function() return {lint_report} end,
  ["tether.lint.format"] = function() return {lint_report, "default"} end,
  ["tether.lint.main"] = function() return {{"-x"}, sink, sink} end,
  ["tether.lint.json"] = function() return {{a = 1, b = {1, 2}}} end,
}

-- template returns the valid arguments of an entry and whether they came
-- from T: methods and metamethods without one get an object of their
-- type, module functions get no arguments.
local function template(e, w)
  local t = T[e.label]
  if t then return t(w), true end
  if e.tname then
    local shared = e.label:match("%.__gc$") == nil
    return {instances(w, shared)[lower(e.tname)]}, false
  end
  return {}, false
end

-- }====================================================================


-- {====================================================================
-- Running the calls
-- =====================================================================

local totals = { calls = 0, raised = 0, returned = 0, functions = 0,
                 generic = {}, slowest = 0, slowest_label = "" }

local function message_of(e)
  if type(e) == "string" then return e end
  if tether.type(e) == "error" then return tostring(e) end
  return nil
end

local function check_pool(p, where, problems)
  local s = p:stats()
  if s.submitted ~= accounting.sum(s) or s.queued ~= 0
     or s.inflight ~= 0 then
    problems[#problems + 1] = ("%s: pool '%s' accounting: %s"):format(
      where, p:name(), accounting.describe(s))
  end
end

-- sweep_one calls entry 'e' in every form and returns the problems found.
local function sweep_one(e, beat)
  local w = make_world()
  local base, known = template(e, w)
  if not known then totals.generic[#totals.generic + 1] = e.label end
  local nbase = 0
  for i in pairs(base) do nbase = math.max(nbase, i) end
  local values = {}
  for _, kv in ipairs(PLAIN) do values[#values + 1] = kv end
  for _, kv in ipairs(world_values(w)) do values[#values + 1] = kv end
  local problems = {}
  local made = { pools = {}, handles = {}, groups = {}, cancels = {} }

  local function call(args, n, label)
    totals.calls = totals.calls + 1
    local t0 = tether.now()
    local r = table.pack(pcall(e.fn, table.unpack(args, 1, n)))
    local dt = tether.now() - t0
    if dt > totals.slowest then
      totals.slowest, totals.slowest_label = dt, label
    end
    if not r[1] then
      totals.raised = totals.raised + 1
      local msg = message_of(r[2])
      if msg == nil or msg == "" then
        problems[#problems + 1] = label .. " raised a "
          .. type(r[2]) .. " without a message"
      elseif msg:find("(null)", 1, true) then
        problems[#problems + 1] = label .. " raised '" .. msg .. "'"
      end
      return
    end
    totals.returned = totals.returned + 1
    -- The refusal convention: nil and an error object with a code.
    if r.n >= 3 and r[2] == nil and tether.type(r[3]) == "error"
       and (type(r[3].code) ~= "string" or r[3].code == "") then
      problems[#problems + 1] = label .. " refused without a code"
    end
    for i = 2, r.n do
      local t = tether.type(r[i])
      if t == "pool" then made.pools[#made.pools + 1] = r[i]
      elseif t == "handle" then made.handles[#made.handles + 1] = r[i]
      elseif t == "group" then made.groups[#made.groups + 1] = r[i]
      elseif t == "cancelfunc" or t == "signalstop" then
        made.cancels[#made.cancels + 1] = r[i]
      end
    end
  end

  local is_gc = e.label:match("%.__gc$") ~= nil
  if not NO_ARGS_BLOCKS[e.label] then call({}, 0, e.label .. "()") end
  local npos = math.max(nbase + 1, 3)
  for p = 1, npos do
    beat(e.label .. " argument #" .. p)
    for _, kv in ipairs(values) do
      if not (is_gc and p == 1 and singleton(kv[2]))
         and not (NOT_GIVEN[e.label] and NOT_GIVEN[e.label][kv[1]]) then
        local args = table.move(base, 1, nbase, 1, {})
        args[p] = kv[2]
        call(args, math.max(nbase, p),
             ("%s argument #%d = %s"):format(e.label, p, kv[1]))
      end
    end
  end

  -- Everything started must end, and every pool must add up.  Items
  -- left in channels are taken out: a channel sent into itself holds its
  -- own reference, a cycle that reference counting cannot free.
  beat(e.label .. " cleanup")
  w.gate:close()
  for _, k in ipairs({"cancel_live", "cancel_cause", "cancel_far"}) do
    made.cancels[#made.cancels + 1] = w[k]
  end
  for _, cancel in ipairs(made.cancels) do
    if not is_freed(cancel) then
      -- A cancel function made here uses its context's userdata: once
      -- that was freed by hand, it says so.
      local ok, err = pcall(cancel)
      assert(ok or tostring(err):find("freed tether.Context", 1, true),
             tostring(err))
    end
  end
  for _, kv in ipairs(world_values(w)) do
    if tether.type(kv[2]) == "chan" and not is_freed(kv[2]) then
      while select(2, kv[2]:try_recv()) do end
    end
  end
  local limit = tether.with_timeout(bg, 60)
  for _, kv in ipairs(world_values(w)) do
    if tether.type(kv[2]) == "handle" then
      made.handles[#made.handles + 1] = kv[2]
    elseif tether.type(kv[2]) == "pool" then
      made.pools[#made.pools + 1] = kv[2]
    elseif tether.type(kv[2]) == "group" then
      made.groups[#made.groups + 1] = kv[2]
    end
  end
  for _, h in ipairs(made.handles) do
    if not is_freed(h) then
      h:wait(limit)
      local st = h:state()
      if st ~= "done" and st ~= "failed" and st ~= "stopped" then
        problems[#problems + 1] = e.label .. ": handle '" .. h:name()
          .. "' still " .. st
      end
    end
  end
  for _, g in ipairs(made.groups) do
    if not is_freed(g) then g:wait() end
  end
  for _, p in ipairs(made.pools) do
    if not is_freed(p) then
      local ok, err = p:drain(limit)
      if not ok then
        problems[#problems + 1] = e.label .. ": pool '" .. p:name()
          .. "' did not drain: " .. tostring(err)
      end
      check_pool(p, e.label, problems)
    end
  end
  return problems
end

-- }====================================================================


local start_watchdog = dofile("spec/support/watchdog.lua")


-- TETHER_SWEEP_ONLY=pattern limits the sweep to the functions whose label
-- matches (a Lua pattern), to reproduce a finding.
local ALL = {}
for _, e in ipairs(entries()) do
  if not NOT_CALLED[e.label] then ALL[#ALL + 1] = e end
end
local ENTRIES = ALL
local ONLY = os.getenv("TETHER_SWEEP_ONLY")
if ONLY then
  local kept = {}
  for _, e in ipairs(ALL) do
    if e.label:match(ONLY) then kept[#kept + 1] = e end
  end
  ENTRIES = kept
end

describe("bad-input sweep", function()
  local dog

  setup(function()
    dog = start_watchdog("sweep", WATCHDOG)
  end)

  teardown(function()
    dog.stop()
    tmpfile:close()
    -- Idle executor threads keep their Lua states, and in them the
    -- objects the sweep handed to tasks, until they end.
    tether.shutdown()
  end)

  it("finds the module's functions and every registered type", function()
    local types = registry_types()
    for _, name in ipairs({"tether.Context", "tether.Chan", "tether.Pool",
                           "tether.Handle", "tether.Group",
                           "tether.Singleflight", "tether.Saga",
                           "tether.Timer", "tether.CancelFunc",
                           "tether.AfterFunc", "tether.Key",
                           "tether.Error"}) do
      local found = false
      for _, t in ipairs(types) do found = found or t == name end
      assert.is_true(found, name .. " is not registered")
    end
    local labels = {}
    for _, e in ipairs(ALL) do labels[e.label] = true end
    for _, l in ipairs({"tether.with_timeout", "tether.pool",
                        "tether.select", "Chan:send", "Pool:submit",
                        "Context:wait", "Chan.__gc",
                        "tether.lint.check_source"}) do
      assert.is_true(labels[l] == true, l .. " not enumerated")
    end
  end)

  for _, e in ipairs(ENTRIES) do
    it(e.label, function()
      totals.functions = totals.functions + 1
      local problems = sweep_one(e, dog.beat)
      assert.are.same({}, problems)
    end)
  end

  it("never hands out a collected userdata for a new object", function()
    local makers = {
      key = function() return tether.key("k") end,
      chan = function() return tether.chan(1) end,
      error = function() return tether.error("failed", "m") end,
      singleflight = function() return tether.singleflight() end,
      context = function() return (tether.with_cancel(bg)) end,
    }
    local names = {}
    for name in pairs(makers) do names[#names + 1] = name end
    table.sort(names)
    for _, name in ipairs(names) do
      local dead = {}
      for _ = 1, 50 do
        local x = makers[name]()
        totals.calls = totals.calls + 2
        dead[#dead + 1] = freed(x)
        local y = makers[name]()
        assert.is_false(is_freed(y), "tether." .. name .. " returned the "
                        .. "collected userdata of an earlier object")
      end
    end
  end)

  -- The threads of this process, by id (Linux).
  local function tids()
    local f = assert(io.open("/proc/self/stat"))
    local pid = f:read("n")
    f:close()
    local set, p = {}, assert(io.popen("ls /proc/" .. pid .. "/task"))
    for tid in p:lines() do set[tonumber(tid)] = true end
    p:close()
    return set
  end

  -- held_pool makes a pool of 3 workers and returns it with the ids of its
  -- threads; once it is freed, they end.
  local function held_pool()
    -- No executor thread is left to start, and the timer thread runs:
    -- the threads that appear next are the pool's.
    tether.shutdown()
    tether.sleep(0.001)
    local before = tids()
    local pool = tether.pool { name = "held", workers = 3, quiet = true }
    local mine = {}
    for tid in pairs(tids()) do
      if not before[tid] then mine[#mine + 1] = tid end
    end
    assert.equal(3, #mine)
    return pool, mine
  end

  local function alive(list)
    collectgarbage()
    collectgarbage()
    local limit, n = tether.now() + 5, #list
    while n > 0 and tether.now() < limit do
      local now = tids()
      n = 0
      for _, tid in ipairs(list) do
        if now[tid] then n = n + 1 end
      end
      if n > 0 then tether.sleep(0.01) end
    end
    return n
  end

  it("frees what an after_func holds once its stop is collected on a "
     .. "context that can never end", function()
    local pool, workers = held_pool()
    tether.after_func(tether.background(), function() return pool end)
    pool = nil
    assert.equal(0, alive(workers))
  end)

  it("frees what an after_func holds once its context is dropped without "
     .. "cancel", function()
    local pool, workers = held_pool()
    local ctx = tether.with_cancel(bg)
    tether.after_func(ctx, function() return pool end)
    pool, ctx = nil, nil  -- luacheck: ignore 311
    assert.equal(0, alive(workers))
  end)

  it("frees what an after_func holds once it is stopped", function()
    local pool, workers = held_pool()
    local ctx = tether.with_cancel(bg)
    local stop = tether.after_func(ctx, function() return pool end)
    assert.is_true(stop())
    pool, ctx, stop = nil, nil, nil  -- luacheck: ignore 311
    assert.equal(0, alive(workers))
  end)

  it("keeps a pending deadline firing across tether.shutdown()",
     function()
    local ctx, cancel = tether.with_timeout(bg, 0.05)
    tether.shutdown()
    local fired = ctx:wait(5)
    cancel()
    assert.is_true(fired, "a 0.05 s deadline had not fired after 5 s")
    assert.equal(tether.deadline_exceeded, ctx:err())
  end)

  it("leaves pools with exact accounting", function()
    local pool = tether.pool { name = "after-sweep", workers = 2, queue = 8,
                               quiet = true }
    local gate = tether.chan(0)
    local handles, refused = {}, 0
    for i = 1, 2 do
      handles[i] = pool:submit(bg, "hold", function(_, g) g:recv() end, gate)
    end
    -- Both workers hold an op before the queue fills.
    local limit = tether.now() + 30
    while pool:stats().inflight < 2 and tether.now() < limit do
      tether.sleep(0.001)
    end
    assert.equal(2, pool:stats().inflight)
    for i = 1, 20 do
      local h, err = pool:submit(bg, "op", function(_, n)
        if n % 3 == 0 then error("op " .. n .. " failed") end
        return n
      end, i)
      if h then
        handles[#handles + 1] = h
      else
        assert.equal("queue_full", err.code)
        refused = refused + 1
      end
    end
    assert.equal(12, refused)
    -- Ops 1 and 5 are stopped; 3 and 6 fail; 2, 4, 7 and 8 complete.
    assert.is_true(handles[3]:stop())
    assert.is_true(handles[7]:stop())
    gate:close()
    assert.is_true(pool:drain(tether.with_timeout(bg, 30)))
    local s = pool:stats()
    assert.equal(10, s.submitted)
    assert.equal(12, s.rejected)
    assert.equal(6, s.completed)
    assert.equal(2, s.failed + s.dead)
    assert.equal(2, s.stopped)
    assert.equal(0, s.queued)
    assert.equal(0, s.inflight)
    accounting.check(s)
    local states = {}
    for _, h in ipairs(handles) do
      local st = h:state()
      states[st] = (states[st] or 0) + 1
    end
    assert.are.same({ done = 6, failed = 2, stopped = 2 }, states)
    print(("\n  bad-input sweep: %d calls over %d functions (%d raised an "
      .. "error with a message, %d returned); slowest call %.3f s (%s)")
      :format(totals.calls, totals.functions, totals.raised,
              totals.returned, totals.slowest, totals.slowest_label))
    local generic = {}
    for _, l in ipairs(totals.generic) do
      if not l:match("%.__gc$") and not l:match("%.__tostring$") then
        generic[#generic + 1] = l
      end
    end
    print(("  %d functions had no template and got only their receiver "
      .. "(or nothing) as valid arguments: %s, and __gc/__tostring of "
      .. "every type"):format(#totals.generic, table.concat(generic, ", ")))
    print("  never called, by construction:\n    - "
      .. table.concat(SKIPPED, "\n    - "))
  end)
end)
