-- tether.lint.rules: the rules and their checks.
--
--   W101  leaked context: work spawned with tether.go, tether.safe_go or
--         tether.after_func captures (or is passed) a context that is not
--         detached, so the work dies when the request ends.
--   W102  unbounded detach: a context made by tether.without_cancel runs
--         work with no timeout or deadline wrapped around it.
--   W103  lost cancel: the cancel function of with_cancel, with_timeout,
--         with_deadline or with_cancel_cause is dropped, or a return can
--         be reached before it is used.
--
-- rules.check(A) runs every rule over an analysis state made ready by
-- scope.resolve and flow.attach and returns the findings (unsorted,
-- unfiltered). docs/lint.md explains each rule, its message and how to
-- suppress it.

local api = require "tether.lint.api"
local flow = require "tether.lint.flow"

local DERIVE, CANCELERS, BOUNDERS = api.DERIVE, api.CANCELERS, api.BOUNDERS
local SPAWNERS, BUILTINS, BUILTIN_LIBS =
  api.SPAWNERS, api.BUILTINS, api.BUILTIN_LIBS
local class_of_expr, tether_callee = flow.class_of_expr, flow.tether_callee
local arg_of, arg_pos, nargs = flow.arg_of, flow.arg_pos, flow.nargs

local rules = {}

-- The codes of warnings, each with its name and a one-line summary.
rules.warnings = {
  W101 = {
    name = "leaked context",
    summary = "spawned work captures a context that is not detached",
  },
  W102 = {
    name = "unbounded detach",
    summary = "a context from without_cancel runs work with no timeout",
  },
  W103 = {
    name = "lost cancel",
    summary = "a cancel function is discarded or not called on all paths",
  },
}

-- The codes of errors: they are reported like warnings but stop the
-- analysis of a file, and neither --ignore nor --only nor comments hide
-- them.
rules.errors = {
  E010 = {name = "unreadable file"},
  E011 = {name = "syntax error"},
  E012 = {name = "analysis failed"},
}

-- The column of byte (or character) offset `offset` on `line`.
local function column(A, line, offset)
  return offset - (A.line_offsets[line] or 1) + 1
end

-- Adds a finding at `node`; `end_node` (default `node`) gives the end of
-- the range, clipped to the first line.
local function add_finding(A, code, node, message, end_node)
  end_node = end_node or node
  local line = node.line
  local col = column(A, line, node.offset)
  local end_offset = end_node.end_offset
  local last = (A.line_offsets[line] or 1) + (A.line_lengths[line] or 0) - 1
  if end_offset > last then
    end_offset = math.max(last, node.offset)
  end
  A.findings[#A.findings + 1] = {
    code = code, line = line, column = col,
    end_column = column(A, line, end_offset), message = message,
    file = A.file,
  }
end

local FIX_W101 =
  "; detach it with tether.without_cancel and give it its own timeout"
local FIX_W102 = " but has no timeout or deadline; bound it with "
  .. "tether.with_timeout or tether.with_deadline before running work"

-- The message of a W101 finding.
local function w101_message(name, class, how, spawner, via)
  local subject = name and ("context '" .. name .. "'") or "this context"
  return ("%s (%s) is %s work spawned with tether.%s%s%s")
    :format(subject, class.origin, how, spawner,
      via and (" (through '" .. via .. "')") or "", FIX_W101)
end

-- The message of a W102 finding.
local function w102_message(name)
  if name then
    return "context '" .. name .. "' is detached with tether.without_cancel"
      .. FIX_W102
  end
  return "this context is detached with tether.without_cancel" .. FIX_W102
end

-- Tells whether `class` is a detached context with no bound.
local function is_unbounded(class)
  return class and class.kind == "ctx" and class.detached
    and not class.bounded
end

-- Tells whether `class` is a context that is not detached.
local function is_attached(class)
  return class and class.kind == "ctx" and not class.detached
end

-- How a reference to a context is used, judged from the call it is an
-- argument of: "detach", "bound", "derive", "trigger", "submit", "arg"
-- (an argument of any other call) or "other".
local function use_of(A, ref)
  local call = A.parent[ref]
  if not call or (call.tag ~= "Call" and call.tag ~= "Invoke") then
    return "other"
  end
  local pos = arg_pos(call, ref)
  if not pos then
    return "other"
  end
  if call.tag == "Invoke" and call[2][1] == "submit" then
    return "submit"
  end
  local name = tether_callee(A, call)
  if name and pos == 1 then
    if name == "without_cancel" then
      return "detach"
    elseif BOUNDERS[name] then
      return "bound"
    elseif DERIVE[name] then
      return "derive"
    elseif name == "after_func" then
      return "trigger"
    end
  end
  return "arg"
end

-- Collects the free variables of function `fn`, following the local
-- functions it calls. `via` names the local function a capture goes
-- through, and `at` the node to report it at.
local function collect_captures(A, fn, out, seen, via, at)
  for _, free in ipairs(A.free[fn]) do
    local class = A.class_of_var(free.var)
    if class and class.kind == "func" then
      if not seen[class.node] then
        seen[class.node] = true
        collect_captures(A, class.node, out, seen, via or free.var.name,
          at or free.node)
      end
    else
      out[#out + 1] = {
        var = free.var, class = class, ref = free.node,
        at = at or free.node, via = via,
      }
    end
  end
  return out
end

-- Orders captures by their position in the source.
local function by_offset(a, b)
  return a.ref.offset < b.ref.offset
end

-- The position of `item` in `list`, or nil.
local function index_of(list, item)
  for i, v in ipairs(list) do
    if v == item then
      return i
    end
  end
end

-- Tells whether the handle returned by spawn `call` is kept: assigned to
-- a variable that is read later, stored, passed on or returned. Work whose
-- handle is kept is structured: its caller can wait for it or stop it, and
-- it is meant to end with the caller's context.
local function handle_kept(A, call)
  if A.stmt_call[call] then
    return false
  end
  local p = A.parent[call]
  if p.tag ~= "Local" and p.tag ~= "Set" then
    return true
  end
  local k = index_of(p[2], call)
  local target = k and p[1][k]
  if not target or (target.tag == "Id" and target[1] == "_") then
    return false
  end
  local var = A.decl_var[target] or A.set_var[target]
  return not var or #var.reads > 0
end

-- Rules W101 and W102 for spawn `call` of tether function `spawner`
-- (`spec` is its entry in api.SPAWNERS).
local function check_spawn(A, call, spawner, spec)
  local structured = spawner ~= "after_func" and handle_kept(A, call)
  local fn_expr = arg_of(call, spec.fn)
  local trigger = spec.trigger and arg_of(call, spec.trigger)
  local trigger_class = trigger and class_of_expr(A, trigger)
  local captures
  if fn_expr and fn_expr.tag == "Function" then
    captures = collect_captures(A, fn_expr, {}, {[fn_expr] = true})
  elseif fn_expr and fn_expr.tag == "Id" then
    local class = class_of_expr(A, fn_expr)
    if class and class.kind == "func" then
      captures = collect_captures(A, class.node, {}, {[class.node] = true},
        fn_expr[1], fn_expr)
    end
  end
  table.sort(captures or {}, by_offset)
  local done101, done102 = {}, {}
  for _, cap in ipairs(captures or {}) do
    local class, var = cap.class, cap.var
    local use = use_of(A, cap.ref)
    if is_attached(class) and class ~= trigger_class and not structured
        and use ~= "detach" and use ~= "submit" and not done101[var] then
      done101[var] = true
      add_finding(A, "W101", cap.at, w101_message(var.name, class,
        "captured by", spawner, cap.via))
    elseif is_unbounded(class) and use == "arg" and not done102[var] then
      done102[var] = true
      add_finding(A, "W102", cap.at, w102_message(var.name))
    end
  end
  -- Extra arguments are handed to the spawned function.
  for i = spec.fn + 1, nargs(call) do
    local arg = arg_of(call, i)
    local class = class_of_expr(A, arg)
    local name = arg.tag == "Id" and arg[1] or nil
    if is_attached(class) and not structured then
      add_finding(A, "W101", arg, w101_message(name, class,
        "passed to", spawner))
    elseif is_unbounded(class) then
      add_finding(A, "W102", arg, w102_message(name))
    end
  end
end

-- Tells whether `callee` is one of Lua's own functions.
local function is_builtin(A, callee)
  if callee.tag == "Id" then
    return A.global[callee] and BUILTINS[callee[1]]
  elseif callee.tag == "Index" and callee[1].tag == "Id" then
    return A.global[callee[1]] and BUILTIN_LIBS[callee[1][1]]
  end
  return false
end

-- The argument positions at which a call receives the context it runs
-- under: the first argument of most calls, the second of tether.sleep and
-- of a channel's send.
local function work_positions(A, call)
  if call.tag == "Invoke" then
    local method = call[2][1]
    if method == "submit" then
      return {}
    elseif method == "send" then
      return {2}
    end
    return {1}
  end
  local name = tether_callee(A, call)
  if name == "sleep" then
    return {2}
  elseif name == "group" then
    return {1}
  elseif name then
    return {}
  elseif is_builtin(A, call[1]) then
    return {}
  end
  return {1}
end

-- Rule W102 for a call that may run work with a context it is given.
local function check_work_call(A, call)
  for _, pos in ipairs(work_positions(A, call)) do
    local arg = arg_of(call, pos)
    if arg and is_unbounded(class_of_expr(A, arg)) then
      local name = arg.tag == "Id" and arg[1] or nil
      add_finding(A, "W102", arg, w102_message(name))
    end
  end
end

-- The function literal (or the chunk) that holds `node`.
local function enclosing_function(A, node)
  local p = A.parent[node]
  while p and p.tag ~= "Function" do
    p = A.parent[p]
  end
  return p
end

-- Maps each If statement above `node` (up to `stop`) to the child of the
-- If that leads to `node`. Ifs inside a nested function are left out when
-- `flat` is set: a closure created in a branch captures its upvalues
-- whichever branch runs later.
local function if_children(A, node, stop, flat)
  local map, child, p = {}, node, A.parent[node]
  while p and p ~= stop do
    if p.tag == "If" then
      map[p] = child
    elseif p.tag == "Function" and flat then
      map = {}
    end
    child, p = p, A.parent[p]
  end
  return map
end

-- Tells whether `child` is a branch block of If statement `node`, rather
-- than one of its conditions.
local function is_branch(node, child)
  for i, c in ipairs(node) do
    if c == child then
      return i % 2 == 0 or i == #node
    end
  end
  return false
end

-- The message of a W103 finding.
local function cancel_message(name, fname, tail)
  return ("the cancel function %sreturned by tether.%s %s")
    :format(name and ("'" .. name .. "' ") or "", fname, tail)
end

-- Rule W103 for a cancel function kept in local variable `var`, assigned
-- by statement `stmt` from the call `call` to tether function `fname`.
local function check_cancel_var(A, var, stmt, call, fname)
  if var.close then
    return
  end
  if #var.reads == 0 then
    add_finding(A, "W103", call,
      cancel_message(var.name, fname, "is never used; call it when the "
        .. "work ends"), call[1])
    return
  end
  local fn = enclosing_function(A, stmt)
  local s_ifs = if_children(A, stmt, fn)
  for _, ret in ipairs(A.returns[fn]) do
    local reachable = ret.offset > stmt.end_offset
    local r_ifs = if_children(A, ret, fn)
    for node, child in pairs(s_ifs) do
      if r_ifs[node] and r_ifs[node] ~= child then
        reachable = false
      end
    end
    local handled = false
    for _, ref in ipairs(var.reads) do
      if reachable and ref.offset > stmt.end_offset
          and ref.offset <= ret.end_offset then
        local on_path = true
        for node, child in pairs(if_children(A, ref, fn, true)) do
          if is_branch(node, child) and s_ifs[node] ~= child
              and r_ifs[node] ~= child then
            on_path = false
          end
        end
        handled = handled or on_path
      end
    end
    if reachable and not handled then
      add_finding(A, "W103", ret, cancel_message(var.name, fname,
        ("on line %d is not called on all paths (this return leaks it)")
          :format(call.line)), {end_offset = ret.offset + 5})
    end
  end
end

-- Rule W103: follows the second result of a call to a canceling
-- constructor.
local function check_cancel(A, call, fname)
  local p = A.parent[call]
  local discarded = true
  if p.tag == "Local" or p.tag == "Set" then
    local k = index_of(p[2], call)
    local target = k == #p[2] and p[1][k + 1]
    if target and target.tag ~= "Id" then
      discarded = false
    elseif target and target[1] ~= "_" then
      local var = A.decl_var[target] or A.set_var[target]
      if var then
        return check_cancel_var(A, var, p, call, fname)
      end
      discarded = false
    end
  elseif A.stmt_call[call] then
    discarded = true
  elseif p.tag == "Call" or p.tag == "Invoke" then
    -- The last argument of a call passes on every result; tether's own
    -- functions other than the spawners keep only the context.
    local pos = arg_pos(p, call)
    local name = tether_callee(A, p)
    discarded = pos ~= nargs(p) or (name ~= nil and not SPAWNERS[name])
  elseif p.tag == "Return" or p.tag == "Table" then
    discarded = p[#p] ~= call
  end
  if discarded then
    add_finding(A, "W103", call, cancel_message(nil, fname,
      "is discarded; call it when the work ends"), call[1])
  end
end

-- rules.check(A) -> findings
--
-- Runs every rule over the calls of the analysis state `A`.
function rules.check(A)
  A.findings = {}
  for _, call in ipairs(A.calls) do
    local name = tether_callee(A, call)
    if name and SPAWNERS[name] then
      check_spawn(A, call, name, SPAWNERS[name])
    else
      check_work_call(A, call)
    end
    if name and CANCELERS[name] then
      check_cancel(A, call, name)
    end
  end
  return A.findings
end

return rules
