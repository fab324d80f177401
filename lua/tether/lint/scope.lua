-- tether.lint.scope: scope resolution over luacheck's syntax tree.
--
-- scope.resolve(A) binds every identifier of the chunk to its variable
-- and records, in the analysis state A:
--
--   A.parent[node]     the node that holds `node`
--   A.ref_var[id]      the variable an identifier reads
--   A.decl_var[id]     the variable an identifier declares
--   A.set_var[id]      the variable an assignment target sets
--   A.global[id]       true for an identifier that names a global
--   A.free[fn]         the free variables of each function: {node, var}
--   A.returns[fn]      the return statements of each function
--   A.calls            every call, in source order
--   A.stmt_call[call]  true for a call used as a statement
--
-- A variable is {name, node, kind = "local"|"param"|"for", func, reads,
-- defs, close, param_index}; `defs` lists the statements that assign it.

local M = {}

local walk_expr, walk_block, walk_function

-- Makes a scope nested in `up`.
local function new_scope(up)
  return {up = up, names = {}}
end

-- The variable `name` refers to in `scope`, or nil for a global.
local function lookup(scope, name)
  while scope do
    local var = scope.names[name]
    if var then
      return var
    end
    scope = scope.up
  end
end

-- Declares the variable of identifier `id` in `scope`.
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

-- Records that identifier `node` reads `var`.
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

-- Resolves expression `node`, held by `parent`.
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

-- Resolves function literal `fn`: its parameters, then its body.
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

-- Records that value `index` of statement `stmt` assigns `var`.
local function add_def(var, stmt, index)
  var.defs[#var.defs + 1] = {stmt = stmt, index = index}
end

-- The statements that bind or read names, by tag; others are skipped.
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

-- scope.resolve(A) resolves the chunk `A.ast` (see above). The chunk is
-- walked as the body of a function that spans the whole source.
function M.resolve(A)
  A.parent, A.ref_var, A.decl_var, A.set_var = {}, {}, {}, {}
  A.global, A.free, A.returns, A.calls = {}, {}, {}, {}
  A.stmt_call, A.fnstack = {}, {}
  local chunk = {
    tag = "Function", {}, A.ast, line = 1, offset = 1,
    end_offset = math.huge,
  }
  walk_function(A, chunk, nil, nil)
  return chunk
end

return M
