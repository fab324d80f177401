-- tether.lint.flow: the data flow the analysis follows.
--
-- A class says what the analysis knows about a value: the tether module,
-- one of its functions, a context (detached or not, bounded or not), a
-- cancel function, a group, a singleflight, a pool, or a function literal.
-- nil means "unknown", which never produces a finding. Classes flow
-- through simple local assignments only: a variable whose assignments
-- disagree is unknown.
--
-- flow.attach(A) gives the analysis state (after scope.resolve) the
-- function A.class_of_var(var); flow.class_of_expr(A, node, k) gives the
-- class of result k of an expression.

local api = require "tether.lint.api"

local DERIVE, CANCELERS, BOUNDERS = api.DERIVE, api.CANCELERS, api.BOUNDERS
local SPAWNERS = api.SPAWNERS

local flow = {}

local TETHER = {kind = "tether"}
local GROUP = {kind = "group"}
local SINGLEFLIGHT = {kind = "singleflight"}
local POOL = {kind = "pool"}

-- The context a pool gives an op is with_timeout(without_cancel(parent)).
local POOL_OP_CTX = {kind = "ctx", detached = true, bounded = true}

-- singleflight runs the loader under a detached context with a timeout.
local FLIGHT_CTX = {kind = "ctx", detached = true, bounded = true}

-- The context a tether.group gives its work (attached: group work ends
-- with the group).
local function group_ctx()
  return {
    kind = "ctx", detached = false,
    origin = "a tether.group context", desc = "a tether.group context",
  }
end

local class_of_expr

-- The first argument of a call is at index 2 of a Call node and at index
-- 3 of an Invoke node (after the receiver and the method name).
local function arg_base(call)
  return call.tag == "Invoke" and 2 or 1
end

-- Argument `i` of `call`.
local function arg_of(call, i)
  return call[arg_base(call) + i]
end

-- The number of arguments of `call`.
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

-- The class of a context made by tether constructor `name` from a parent
-- of class `parent`: attached if the parent is, else detached and bounded
-- once any constructor on the way bounds it.
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

-- Tells whether classes `a` and `b` say the same about a value.
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

-- The class of parameter `var`: what a tether function hands the literal
-- it is a parameter of, or a request context by its name or its use.
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
  if api.is_ctx_name(var.name) or used_as_parent(A, var) then
    return {
      kind = "ctx", detached = false, origin = "a request context",
      desc = "request context '" .. var.name .. "'",
    }
  end
  return nil
end

-- Marks a variable whose class is being computed: a cycle of assignments
-- (`a = b; b = a`) leaves it unknown.
local IN_PROGRESS = {}

-- Makes A.class_of_var, memoized per variable.
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

flow.class_of_expr = class_of_expr
flow.tether_callee = tether_callee
flow.arg_of = arg_of
flow.arg_pos = arg_pos
flow.nargs = nargs

-- flow.attach(A) readies the analysis state `A` (resolved by scope.resolve)
-- for class_of_expr and A.class_of_var.
function flow.attach(A)
  A.tfns, A.func_class, A.call_class = {}, {}, {}
  A.class_of_var = make_class_of_var(A)
end

return flow
