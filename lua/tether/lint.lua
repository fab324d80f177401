-- tether.lint: a linter for partial-cancellation bugs in code using tether.
--
-- It reads Lua source with luacheck's parser and reports three rules:
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
-- The analysis follows simple local data flow only. When it cannot tell
-- where a value comes from (a table field, a global, the result of an
-- unknown call) it stays silent: a missed finding costs less than a false
-- one that teaches people to ignore the tool. docs/lint.md explains each
-- rule, its message and how to suppress it.
--
-- This module is pure Lua and never loads the tether C module, so it works
-- on a machine where the engine is not built.

local lint = {}

lint.version = "1.0"

-- Debian installs luacheck under the Lua 5.1 tree only. Its parser is
-- plain Lua that runs on 5.4 too, so the 5.1 folders are appended to the
-- search path when the parser cannot be found otherwise (as happens in a
-- luarocks tree or with the system lua5.4).
local function load_luacheck()
  if not pcall(require, "luacheck.parser") then
    package.path = package.path
      .. ";/usr/share/lua/5.1/?.lua;/usr/share/lua/5.1/?/init.lua"
  end
  local ok, parser = pcall(require, "luacheck.parser")
  if not ok then
    error("tether.lint needs luacheck's parser (Debian package lua-check): "
      .. tostring(parser), 0)
  end
  return require("luacheck.decoder"), parser
end

local decoder, parser = load_luacheck()

-- {====================================================================
-- Rules and the tether API the analysis knows about.
-- =====================================================================

lint.rules = {
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

-- Codes of errors: they are reported like warnings but stop the analysis
-- of a file, and neither --ignore nor --only nor comments hide them.
lint.errors = {
  E010 = {name = "unreadable file"},
  E011 = {name = "syntax error"},
}

-- Constructors whose first result is derived from their first argument.
local DERIVE = {
  with_cancel = true, with_cancel_cause = true, with_timeout = true,
  with_deadline = true, with_value = true,
}

-- Constructors that also return a cancel function, which must be called.
local CANCELERS = {
  with_cancel = true, with_cancel_cause = true, with_timeout = true,
  with_deadline = true,
}

-- Constructors that put a bound on a context.
local BOUNDERS = {with_timeout = true, with_deadline = true}

-- Functions that run a Lua function on another thread: `fn` is the index of
-- the function argument, `trigger` the index of after_func's context.
local SPAWNERS = {
  go = {fn = 1},
  safe_go = {fn = 2},
  after_func = {fn = 2, trigger = 1},
}

-- Parameter names that mark a context by convention, besides any name
-- ending in "ctx".
local CTX_NAMES = {ctx = true, parent = true, req_ctx = true, rctx = true}

-- Lua's own functions and libraries: passing a context to them does not
-- run work with it, so rule W102 ignores such calls.
local BUILTINS = {
  assert = true, collectgarbage = true, error = true, getmetatable = true,
  ipairs = true, next = true, pairs = true, pcall = true, print = true,
  rawequal = true, rawget = true, rawlen = true, rawset = true,
  require = true, select = true, setmetatable = true, tonumber = true,
  tostring = true, type = true, xpcall = true,
}
local BUILTIN_LIBS = {
  coroutine = true, debug = true, io = true, math = true, os = true,
  package = true, string = true, table = true, utf8 = true,
}

-- }====================================================================

-- {====================================================================
-- Value classes.
--
-- A class says what the analysis knows about a value: the tether module,
-- one of its functions, a context (detached or not, bounded or not), a
-- cancel function, a group, a singleflight, or a function literal. nil
-- means "unknown", which never produces a finding.
-- =====================================================================

local TETHER = {kind = "tether"}
local GROUP = {kind = "group"}
local SINGLEFLIGHT = {kind = "singleflight"}
local POOL = {kind = "pool"}

-- The context a pool gives an op is with_timeout(without_cancel(parent)).
local POOL_OP_CTX = {kind = "ctx", detached = true, bounded = true}

-- singleflight runs the loader under a detached context with a timeout.
local FLIGHT_CTX = {kind = "ctx", detached = true, bounded = true}

local function group_ctx()
  return {
    kind = "ctx", detached = false,
    origin = "a tether.group context", desc = "a tether.group context",
  }
end

local function is_ctx_name(name)
  return CTX_NAMES[name] or name:lower():sub(-3) == "ctx"
end

-- }====================================================================

-- {====================================================================
-- Scope resolution: binds every identifier to its variable, records the
-- parent of every node, the free variables of every function, its return
-- statements, and every call.
-- =====================================================================

local walk_expr, walk_block, walk_function

local function new_scope(up)
  return {up = up, names = {}}
end

local function lookup(scope, name)
  while scope do
    local var = scope.names[name]
    if var then
      return var
    end
    scope = scope.up
  end
end

local function declare(A, scope, id, kind)
  local var = {
    name = id[1], node = id, kind = kind, func = A.fnstack[#A.fnstack],
    reads = {}, defs = {},
  }
  scope.names[id[1]] = var
  A.decl_var[id] = var
  return var
end

-- Tells whether the declaration of `id` carries a Lua 5.4 `<close>`
-- attribute: luacheck's parser reads attributes but drops them.
local function has_close_attrib(A, id)
  -- Positions count characters in UTF-8 source: stay within the text.
  local last = math.min(id.end_offset + 24, A.chars:get_length())
  local text = A.chars:get_substring(id.end_offset + 1, last)
  return text:match("^%s*<%s*close%s*>") ~= nil
end

local function add_read(A, node, var)
  A.ref_var[node] = var
  var.reads[#var.reads + 1] = node
  -- The reference is free in every function between here and the one that
  -- declares the variable.
  for i = #A.fnstack, 1, -1 do
    local fn = A.fnstack[i]
    if fn == var.func then
      break
    end
    local list = A.free[fn]
    list[#list + 1] = {node = node, var = var}
  end
end

function walk_expr(A, node, scope, parent)
  A.parent[node] = parent
  local tag = node.tag
  if tag == "Id" then
    local var = lookup(scope, node[1])
    if var then
      add_read(A, node, var)
    else
      A.global[node] = true
    end
  elseif tag == "Function" then
    walk_function(A, node, scope, parent)
  elseif tag == "Call" or tag == "Invoke" or tag == "Index"
      or tag == "Table" or tag == "Pair" or tag == "Paren" then
    for _, child in ipairs(node) do
      walk_expr(A, child, scope, node)
    end
    if tag == "Call" or tag == "Invoke" then
      A.calls[#A.calls + 1] = node
    end
  elseif tag == "Op" then
    for i = 2, #node do
      walk_expr(A, node[i], scope, node)
    end
  end
end

function walk_function(A, fn, scope, parent)
  A.parent[fn] = parent
  A.free[fn] = {}
  A.returns[fn] = {}
  local fscope = new_scope(scope)
  A.fnstack[#A.fnstack + 1] = fn
  for i, param in ipairs(fn[1]) do
    A.parent[param] = fn
    if param.tag == "Id" then
      local var = declare(A, fscope, param, "param")
      var.param_index = i
    end
  end
  A.parent[fn[2]] = fn
  walk_block(A, fn[2], fscope)
  A.fnstack[#A.fnstack] = nil
end

local function add_def(var, stmt, index)
  var.defs[#var.defs + 1] = {stmt = stmt, index = index}
end

local walk_stmt = {}

function walk_stmt.Local(A, node, scope)
  local lhs, rhs = node[1], node[2]
  for _, expr in ipairs(rhs or {}) do
    walk_expr(A, expr, scope, node)
  end
  for i, id in ipairs(lhs) do
    A.parent[id] = node
    local var = declare(A, scope, id, "local")
    var.close = has_close_attrib(A, id)
    if rhs then
      add_def(var, node, i)
    end
  end
end

function walk_stmt.Localrec(A, node, scope)
  local id, fn = node[1][1], node[2][1]
  A.parent[id] = node
  local var = declare(A, scope, id, "local")
  add_def(var, node, 1)
  walk_function(A, fn, scope, node)
end

function walk_stmt.Set(A, node, scope)
  local lhs, rhs = node[1], node[2]
  for _, expr in ipairs(rhs) do
    walk_expr(A, expr, scope, node)
  end
  for i, target in ipairs(lhs) do
    if target.tag == "Id" then
      A.parent[target] = node
      local var = lookup(scope, target[1])
      if var then
        A.set_var[target] = var
        add_def(var, node, i)
      else
        A.global[target] = true
      end
    else
      walk_expr(A, target, scope, node)
    end
  end
end

function walk_stmt.OpSet(A, node, scope)
  walk_expr(A, node[2], scope, node)
  walk_expr(A, node[3], scope, node)
end

function walk_stmt.Return(A, node, scope)
  local list = A.returns[A.fnstack[#A.fnstack]]
  list[#list + 1] = node
  for _, expr in ipairs(node) do
    walk_expr(A, expr, scope, node)
  end
end

function walk_stmt.If(A, node, scope)
  for i, child in ipairs(node) do
    if i % 2 == 0 or i == #node then
      A.parent[child] = node
      walk_block(A, child, new_scope(scope))
    else
      walk_expr(A, child, scope, node)
    end
  end
end

function walk_stmt.While(A, node, scope)
  walk_expr(A, node[1], scope, node)
  A.parent[node[2]] = node
  walk_block(A, node[2], new_scope(scope))
end

function walk_stmt.Do(A, node, scope)
  walk_block(A, node, new_scope(scope))
end

function walk_stmt.Repeat(A, node, scope)
  -- The condition of `until` sees the locals of the loop's body.
  local body = new_scope(scope)
  A.parent[node[1]] = node
  walk_block(A, node[1], body)
  walk_expr(A, node[2], body, node)
end

function walk_stmt.Fornum(A, node, scope)
  for i = 2, #node - 1 do
    walk_expr(A, node[i], scope, node)
  end
  local inner = new_scope(scope)
  A.parent[node[1]] = node
  declare(A, inner, node[1], "for")
  A.parent[node[#node]] = node
  walk_block(A, node[#node], inner)
end

function walk_stmt.Forin(A, node, scope)
  for _, expr in ipairs(node[2]) do
    walk_expr(A, expr, scope, node)
  end
  local inner = new_scope(scope)
  for _, id in ipairs(node[1]) do
    A.parent[id] = node
    declare(A, inner, id, "for")
  end
  A.parent[node[3]] = node
  walk_block(A, node[3], inner)
end

function walk_stmt.Call(A, node, scope)
  A.stmt_call[node] = true
  walk_expr(A, node, scope, A.parent[node])
end

walk_stmt.Invoke = walk_stmt.Call

-- Walks the statements of a block in `scope`. The caller links the block
-- to its owner; a Do statement is its own block.
function walk_block(A, block, scope)
  for _, stmt in ipairs(block) do
    A.parent[stmt] = block
    local handler = walk_stmt[stmt.tag]
    if handler then
      handler(A, stmt, scope)
    end
  end
end

-- }====================================================================

-- {====================================================================
-- Classes of expressions and variables.
-- =====================================================================

local class_of_expr

-- The first argument of a call is at index 2 of a Call node and at index
-- 3 of an Invoke node (after the receiver and the method name).
local function arg_base(call)
  return call.tag == "Invoke" and 2 or 1
end

local function arg_of(call, i)
  return call[arg_base(call) + i]
end

local function nargs(call)
  return #call - arg_base(call)
end

-- The position of `node` among the arguments of `call`, or nil.
local function arg_pos(call, node)
  for i = arg_base(call) + 1, #call do
    if call[i] == node then
      return i - arg_base(call)
    end
  end
end

-- The name of the tether function a Call node calls, or nil.
local function tether_callee(A, call)
  if call.tag ~= "Call" then
    return nil
  end
  local f = class_of_expr(A, call[1])
  return f and f.kind == "tfn" and f.name or nil
end

local function derive(parent, name)
  if not parent or parent.kind ~= "ctx" then
    return nil
  end
  if not parent.detached then
    return {
      kind = "ctx", detached = false,
      origin = "derived from " .. parent.desc, desc = parent.desc,
    }
  end
  return {
    kind = "ctx", detached = true,
    bounded = parent.bounded or BOUNDERS[name] or false,
  }
end

-- The class of result `k` of a call to tether function `name`.
local function call_result(A, call, name, k)
  if DERIVE[name] then
    if k == 1 then
      return derive(class_of_expr(A, call[2] or {}), name)
    elseif k == 2 and CANCELERS[name] then
      return {kind = "cancel"}
    end
  elseif name == "without_cancel" and k == 1 then
    return {kind = "ctx", detached = true, bounded = false}
  elseif name == "group" then
    if k == 1 then
      return GROUP
    elseif k == 2 then
      return group_ctx()
    end
  elseif name == "singleflight" and k == 1 then
    return SINGLEFLIGHT
  elseif name == "pool" and k == 1 then
    return POOL
  end
  return nil
end

-- The class of result `k` (default 1) of expression `node`. Results of a
-- call are memoized per node so that two uses of one value share one class
-- table: after_func compares the trigger's class by identity.
function class_of_expr(A, node, k)
  k = k or 1
  local tag = node.tag
  if tag == "Paren" then
    return k == 1 and class_of_expr(A, node[1]) or nil
  elseif tag == "Id" then
    if k ~= 1 then
      return nil
    end
    local var = A.ref_var[node]
    if var then
      return A.class_of_var(var)
    end
    if node[1] == "tether" and A.global[node] then
      return TETHER
    end
  elseif tag == "Index" then
    if k == 1 and node[2].tag == "String"
        and class_of_expr(A, node[1]) == TETHER then
      local name = node[2][1]
      A.tfns[name] = A.tfns[name] or {kind = "tfn", name = name}
      return A.tfns[name]
    end
  elseif tag == "Function" then
    if k == 1 then
      A.func_class[node] = A.func_class[node]
        or {kind = "func", node = node}
      return A.func_class[node]
    end
  elseif tag == "Call" then
    local memo = A.call_class[node]
    if not memo then
      memo = {}
      A.call_class[node] = memo
    end
    if memo[k] == nil then
      memo[k] = false
      local callee, first = node[1], node[2]
      local result
      if callee.tag == "Id" and callee[1] == "require"
          and A.global[callee] then
        if k == 1 and first and first.tag == "String"
            and first[1] == "tether" then
          result = TETHER
        end
      else
        local name = tether_callee(A, node)
        if name then
          result = call_result(A, node, name, k)
        end
      end
      memo[k] = result or false
    end
    return memo[k] or nil
  end
  return nil
end

-- The class a definition gives its variable. Returns "none" for a
-- definition that assigns nil (a declaration, or a missing value).
local function def_class(A, def)
  local stmt = def.stmt
  if stmt.tag == "Localrec" then
    return class_of_expr(A, stmt[2][1])
  end
  local rhs, i = stmt[2], def.index
  local n = #rhs
  if i <= n then
    if rhs[i].tag == "Nil" then
      return "none"
    end
    return class_of_expr(A, rhs[i])
  end
  local last = rhs[n]
  if last.tag == "Call" or last.tag == "Invoke" then
    return class_of_expr(A, last, i - n + 1)
  end
  return "none"
end

local function same_class(a, b)
  if a == b then
    return true
  end
  if a.kind ~= b.kind then
    return false
  end
  if a.kind == "ctx" then
    return a.detached == b.detached and a.bounded == b.bounded
      and a.origin == b.origin
  end
  return a.kind == "cancel" or a.kind == "group" or a.kind == "pool"
    or a.kind == "singleflight"
end

-- Where function literal `fn` is an argument of a call: the call and the
-- argument's position.
local function enclosing_call(A, fn)
  local p = A.parent[fn]
  if p and (p.tag == "Call" or p.tag == "Invoke") then
    local pos = arg_pos(p, fn)
    if pos then
      return p, pos
    end
  end
end

-- Tells whether parameter `var` is passed as the parent of a tether
-- context constructor, or of a pool submission: then it is a context
-- whatever its name.
local function used_as_parent(A, var)
  for _, ref in ipairs(var.reads) do
    local call = A.parent[ref]
    if call and call.tag == "Call" and call[2] == ref then
      local name = tether_callee(A, call)
      if name and (DERIVE[name] or name == "without_cancel"
          or name == "group" or name == "after_func") then
        return true
      end
    elseif call and call.tag == "Invoke" and call[3] == ref
        and call[2][1] == "submit" then
      return true
    end
  end
  return false
end

local function param_class(A, var)
  local fn, index = var.func, var.param_index
  local call, pos = enclosing_call(A, fn)
  if call then
    -- A function literal handed straight to a spawner, a pool, a group or
    -- a singleflight receives what the spawner gives it, whatever the
    -- names of its parameters.
    local name = tether_callee(A, call)
    local spawn = name and SPAWNERS[name]
    if spawn and spawn.fn == pos then
      local arg = arg_of(call, pos + index)
      return arg and class_of_expr(A, arg) or nil
    end
    if call.tag == "Invoke" then
      local method = call[2][1]
      if method == "submit" and pos == 3 then
        return index == 1 and POOL_OP_CTX or nil
      elseif (method == "go" or method == "try_go") and pos == 1 then
        if index == 1 and class_of_expr(A, call[1]) == GROUP then
          return group_ctx()
        end
        return nil
      elseif method == "call" and pos == 3
          and class_of_expr(A, call[1]) == SINGLEFLIGHT then
        return index == 1 and FLIGHT_CTX or nil
      end
    end
  end
  if is_ctx_name(var.name) or used_as_parent(A, var) then
    return {
      kind = "ctx", detached = false, origin = "a request context",
      desc = "request context '" .. var.name .. "'",
    }
  end
  return nil
end

local IN_PROGRESS = {}

local function make_class_of_var(A)
  local memo = {}
  return function(var)
    local c = memo[var]
    if c == IN_PROGRESS then
      return nil
    elseif c ~= nil then
      return c or nil
    end
    memo[var] = IN_PROGRESS
    local result
    if var.kind == "param" then
      result = param_class(A, var)
    elseif var.kind == "local" then
      -- Every assignment must agree, or the variable is unknown.
      local unknown = false
      for _, def in ipairs(var.defs) do
        local dc = def_class(A, def)
        if dc ~= "none" then
          if dc == nil or (result and not same_class(result, dc)) then
            unknown = true
            break
          end
          result = result or dc
        end
      end
      if unknown then
        result = nil
      end
    end
    memo[var] = result or false
    return result
  end
end

-- }====================================================================

-- {====================================================================
-- Findings.
-- =====================================================================

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

local function w101_message(name, class, how, spawner, via)
  local subject = name and ("context '" .. name .. "'") or "this context"
  return ("%s (%s) is %s work spawned with tether.%s%s%s")
    :format(subject, class.origin, how, spawner,
      via and (" (through '" .. via .. "')") or "", FIX_W101)
end

local function w102_message(name)
  if name then
    return "context '" .. name .. "' is detached with tether.without_cancel"
      .. FIX_W102
  end
  return "this context is detached with tether.without_cancel" .. FIX_W102
end

local function is_unbounded(class)
  return class and class.kind == "ctx" and class.detached
    and not class.bounded
end

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

local function by_offset(a, b)
  return a.ref.offset < b.ref.offset
end

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

local function check_work_call(A, call)
  for _, pos in ipairs(work_positions(A, call)) do
    local arg = arg_of(call, pos)
    if arg and is_unbounded(class_of_expr(A, arg)) then
      local name = arg.tag == "Id" and arg[1] or nil
      add_finding(A, "W102", arg, w102_message(name))
    end
  end
end

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

-- }====================================================================

-- {====================================================================
-- Suppression comments and filters.
-- =====================================================================

-- Reads `-- tether-lint: ignore [CODE...]` comments into a map from line
-- to true (every code) or a set of codes. Codes are separated by commas or
-- spaces; the first word that is not a code ends the list, so a reason may
-- follow.
local function suppressions(comments)
  local by_line = {}
  for _, comment in ipairs(comments) do
    local rest = comment.contents:match("^%s*tether%-lint:%s*ignore(.*)$")
    if rest and (rest == "" or rest:match("^[%s,]")) then
      local codes
      for word in rest:gmatch("[^%s,]+") do
        if not word:match("^[WE]%d%d%d$") then
          break
        end
        codes = codes or {}
        codes[word] = true
      end
      by_line[comment.line] = codes or true
    end
  end
  return by_line
end

local function code_set(list)
  if not list then
    return nil
  end
  local set = {}
  for _, code in ipairs(list) do
    set[code] = true
  end
  return set
end

local function finding_order(a, b)
  if a.line ~= b.line then
    return a.line < b.line
  elseif a.column ~= b.column then
    return a.column < b.column
  end
  return a.code < b.code
end

-- Keeps one finding per code and position, drops the suppressed and
-- filtered ones, and sorts the rest by position.
local function finish(findings, by_line, opts)
  local ignore, only = code_set(opts.ignore), code_set(opts.only)
  local seen, out = {}, {}
  for _, f in ipairs(findings) do
    local key = f.code .. ":" .. f.line .. ":" .. f.column
    local rule = by_line[f.line]
    if not seen[key]
        and not (rule == true or (rule and rule[f.code]))
        and not (ignore and ignore[f.code])
        and not (only and not only[f.code]) then
      seen[key] = true
      out[#out + 1] = f
    end
  end
  table.sort(out, finding_order)
  return out
end

-- }====================================================================

-- {====================================================================
-- Public API.
-- =====================================================================

-- Parses `src`; returns the analysis state, or nil and an E011 finding.
local function parse(src, filename)
  local chars = decoder.decode(src)
  local line_offsets, line_lengths = {}, {}
  local ok, ast, comments = pcall(parser.parse, chars, line_offsets,
    line_lengths)
  if not ok then
    local err = ast
    if type(err) ~= "table" or not err.line then
      error(err, 0)
    end
    local line = err.line
    local start = line_offsets[line] or 1
    return nil, {
      code = "E011", line = line, column = err.offset - start + 1,
      end_column = math.max(err.end_offset, err.offset) - start + 1,
      message = err.msg, file = filename,
    }
  end
  local A = {
    file = filename, chars = chars, ast = ast, comments = comments,
    line_offsets = line_offsets, line_lengths = line_lengths,
    parent = {}, ref_var = {}, decl_var = {}, set_var = {}, global = {},
    free = {}, returns = {}, calls = {}, stmt_call = {}, fnstack = {},
    tfns = {}, func_class = {}, call_class = {}, findings = {},
  }
  A.class_of_var = make_class_of_var(A)
  return A
end

-- lint.check_source(src, filename [, opts]) -> findings
--
-- Lints the Lua source `src`. `filename` (default "stdin") is copied into
-- each finding. `opts.ignore` and `opts.only` are lists of codes. Each
-- finding is `{code, line, column, end_column, message, file}`; they are
-- sorted by line and column. A syntax error gives a single finding with
-- code E011 at the error's position.
function lint.check_source(src, filename, opts)
  filename = filename or "stdin"
  opts = opts or {}
  local A, err = parse(src, filename)
  if not A then
    return {err}
  end
  local chunk = {
    tag = "Function", {}, A.ast, line = 1, offset = 1,
    end_offset = math.huge,
  }
  walk_function(A, chunk, nil, nil)
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
  return finish(A.findings, suppressions(A.comments), opts)
end

-- lint.check_file(path [, opts]) -> findings
--
-- Lints the file at `path`, like check_source. A file that cannot be read
-- gives a single finding with code E010 at line 1, column 1.
function lint.check_file(path, opts)
  local f, err = io.open(path, "rb")
  local src = f and f:read("a")
  if f then
    f:close()
  end
  if not src then
    return {{
      code = "E010", line = 1, column = 1, end_column = 1, file = path,
      message = "cannot read file: " .. tostring(err or "read failed"),
    }}
  end
  return lint.check_source(src, path, opts)
end

local function is_dir(path)
  local ok, lfs = pcall(require, "lfs")
  if ok then
    return lfs.attributes(path, "mode") == "directory"
  end
  local f = io.open(path, "rb")
  if not f then
    return false
  end
  -- Reading a directory fails with EISDIR, while a file reads fine.
  local _, _, code = f:read(1)
  f:close()
  return code == 21
end

local function shell_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- Lists the *.lua files under directory `dir`, recursively and sorted,
-- skipping hidden folders (such as .git or a .rocks tree).
local function lua_files_under(dir, out)
  local ok, lfs = pcall(require, "lfs")
  if not ok then
    local p = io.popen("find " .. shell_quote(dir)
      .. " -type f -name '*.lua' 2>/dev/null")
    local list = {}
    for line in p:lines() do
      if not line:sub(#dir + 1):match("/%.") then
        list[#list + 1] = line
      end
    end
    p:close()
    table.sort(list)
    table.move(list, 1, #list, #out + 1, out)
    return out
  end
  local names = {}
  for name in lfs.dir(dir) do
    if name:sub(1, 1) ~= "." then
      names[#names + 1] = name
    end
  end
  table.sort(names)
  local sep = dir:sub(-1) == "/" and "" or "/"
  for _, name in ipairs(names) do
    local path = dir .. sep .. name
    local mode = lfs.attributes(path, "mode")
    if mode == "directory" then
      lua_files_under(path, out)
    elseif mode == "file" and name:match("%.lua$") then
      out[#out + 1] = path
    end
  end
  return out
end

-- lint.expand_paths(paths) -> files
--
-- Replaces each directory in `paths` by the *.lua files under it.
function lint.expand_paths(paths)
  local files = {}
  for _, path in ipairs(paths) do
    if is_dir(path) then
      lua_files_under(path, files)
    else
      files[#files + 1] = path
    end
  end
  return files
end

-- lint.check_paths(paths [, opts]) -> report
--
-- Lints files and directories; "-" stands for the standard input, named
-- "stdin" in findings. The report is `{files = {{file, findings},
-- ...}, warnings = n, errors = n}`.
function lint.check_paths(paths, opts)
  local report = {files = {}, warnings = 0, errors = 0}
  for _, file in ipairs(lint.expand_paths(paths)) do
    local findings
    if file == "-" then
      file = "stdin"
      findings = lint.check_source(io.read("a") or "", file, opts)
    else
      findings = lint.check_file(file, opts)
    end
    report.files[#report.files + 1] = {file = file, findings = findings}
    for _, f in ipairs(findings) do
      if f.code:sub(1, 1) == "E" then
        report.errors = report.errors + 1
      else
        report.warnings = report.warnings + 1
      end
    end
  end
  return report
end

-- lint.format_finding(f) -> "path:line:col: (Wnnn) message"
function lint.format_finding(f)
  return ("%s:%d:%d: (%s) %s"):format(f.file, f.line, f.column, f.code,
    f.message)
end

local function plural(n, word)
  return ("%d %s%s"):format(n, word, n == 1 and "" or "s")
end

-- lint.summary(report) -> "Total: 3 warnings in 2 files"
function lint.summary(report)
  local errors = report.errors > 0
    and (" / " .. plural(report.errors, "error")) or ""
  return ("Total: %s%s in %s"):format(plural(report.warnings, "warning"),
    errors, plural(#report.files, "file"))
end

-- A small JSON encoder: strings, numbers, booleans, arrays and objects
-- with keys in sorted order (so the output is stable). An empty table is
-- written as an array.
local function json_string(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    local named = {
      ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r",
      ["\t"] = "\\t", ["\b"] = "\\b", ["\f"] = "\\f",
    }
    return named[c] or ("\\u%04x"):format(c:byte())
  end) .. '"'
end

local function json_encode(value, indent)
  local t = type(value)
  if t == "string" then
    return json_string(value)
  elseif t == "number" then
    if value ~= value or value == math.huge or value == -math.huge then
      return "null"
    end
    return math.type(value) == "integer" and tostring(value)
      or ("%.17g"):format(value)
  elseif t == "boolean" then
    return tostring(value)
  elseif t ~= "table" then
    return "null"
  end
  local inner = indent .. "  "
  local parts = {}
  if next(value) == nil or #value > 0 then
    for _, v in ipairs(value) do
      parts[#parts + 1] = inner .. json_encode(v, inner)
    end
    if #parts == 0 then
      return "[]"
    end
    return "[\n" .. table.concat(parts, ",\n") .. "\n" .. indent .. "]"
  end
  local keys = {}
  for k in pairs(value) do
    keys[#keys + 1] = tostring(k)
  end
  table.sort(keys)
  for _, k in ipairs(keys) do
    parts[#parts + 1] = inner .. json_string(k) .. ": "
      .. json_encode(value[k], inner)
  end
  return "{\n" .. table.concat(parts, ",\n") .. "\n" .. indent .. "}"
end

-- lint.json(value) -> string
lint.json = function(value)
  return json_encode(value, "")
end

-- lint.format(report [, formatter]) -> text
--
-- Renders a report as the CLI prints it. The "default" formatter gives one
-- line per finding, then the summary line. The "json" formatter gives
-- `{"findings": [...], "summary": {"warnings", "errors", "files"}}`.
function lint.format(report, formatter)
  formatter = formatter or "default"
  local lines = {}
  if formatter == "json" then
    local all = {}
    for _, entry in ipairs(report.files) do
      table.move(entry.findings, 1, #entry.findings, #all + 1, all)
    end
    return lint.json({
      findings = all,
      summary = {
        warnings = report.warnings, errors = report.errors,
        files = #report.files,
      },
    }) .. "\n"
  elseif formatter ~= "default" then
    error("unknown formatter '" .. tostring(formatter) .. "'", 2)
  end
  for _, entry in ipairs(report.files) do
    for _, f in ipairs(entry.findings) do
      lines[#lines + 1] = lint.format_finding(f)
    end
  end
  lines[#lines + 1] = lint.summary(report)
  return table.concat(lines, "\n") .. "\n"
end

-- }====================================================================

-- {====================================================================
-- Command line.
-- =====================================================================

lint.usage = [[
Usage: tether-lint [options] FILE|DIR...

Finds partial-cancellation bugs in Lua code that uses tether. Directories
are searched recursively for *.lua files; "-" reads the standard input.

Options:
  --formatter NAME   output format: default (one line per finding, then a
                     summary) or json
  --ignore CODES     drop these codes (comma-separated, e.g. W101,W103)
  --only CODES       keep only these codes
  -h, --help         print this help and exit

Codes:
  W101  leaked context: spawned work captures a context that is not
        detached
  W102  unbounded detach: a context from without_cancel runs work with no
        timeout
  W103  lost cancel: a cancel function is discarded or not called on all
        paths
  E010  a file could not be read
  E011  a file could not be parsed

Suppress a finding with a comment on its line:
  -- tether-lint: ignore W101      (or just "ignore" for every code)

Exit status: 0 no findings, 1 warnings, 2 a file could not be read or
parsed, 3 bad command line.
]]

local function parse_codes(text)
  local list = {}
  for code in text:gmatch("[^%s,]+") do
    if not lint.rules[code] then
      return nil, "unknown code '" .. code .. "'"
    end
    list[#list + 1] = code
  end
  if #list == 0 then
    return nil, "no codes given"
  end
  return list
end

-- Reads the command line; returns options and paths, or nil and an error.
local function parse_args(args)
  local opts, paths = {formatter = "default"}, {}
  local i = 1
  while i <= #args do
    local a = args[i]
    local name, value = a:match("^(%-%-[%w-]+)=(.*)$")
    name = name or a
    if name == "-h" or name == "--help" then
      opts.help = true
    elseif name == "--formatter" or name == "--ignore" or name == "--only" then
      if not value then
        i = i + 1
        value = args[i]
        if not value then
          return nil, "option " .. name .. " needs a value"
        end
      end
      if name == "--formatter" then
        if value ~= "default" and value ~= "json" then
          return nil, "unknown formatter '" .. value .. "'"
        end
        opts.formatter = value
      else
        local codes, err = parse_codes(value)
        if not codes then
          return nil, err
        end
        opts[name:sub(3)] = codes
      end
    elseif a == "--" then
      table.move(args, i + 1, #args, #paths + 1, paths)
      break
    elseif a:sub(1, 1) == "-" and a ~= "-" then
      return nil, "unknown option '" .. a .. "'"
    else
      paths[#paths + 1] = a
    end
    i = i + 1
  end
  return opts, paths
end

-- lint.main(args [, out, err]) -> exit status
--
-- Runs the command line `args` (a list of strings), writing to the files
-- `out` and `err` (default io.stdout and io.stderr).
function lint.main(args, out, err)
  out, err = out or io.stdout, err or io.stderr
  local opts, paths = parse_args(args)
  if not opts then
    err:write("tether-lint: ", paths, "\n",
      "Try 'tether-lint --help' for more information.\n")
    return 3
  end
  if opts.help then
    out:write(lint.usage)
    return 0
  end
  if #paths == 0 then
    err:write("tether-lint: no files given\n",
      "Try 'tether-lint --help' for more information.\n")
    return 3
  end
  local report = lint.check_paths(paths, opts)
  out:write(lint.format(report, opts.formatter))
  if report.errors > 0 then
    return 2
  end
  return report.warnings > 0 and 1 or 0
end

-- }====================================================================

return lint
