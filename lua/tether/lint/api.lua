-- tether.lint.api: what the analysis knows of tether's own API.
--
-- Which functions derive a context from another, which return a cancel
-- function, which bound a context, which run a function on another
-- thread, which parameter names mark a context, and which of Lua's own
-- functions never run work with a context they are given.

local api = {}

-- Constructors whose first result is derived from their first argument.
api.DERIVE = {
  with_cancel = true, with_cancel_cause = true, with_timeout = true,
  with_deadline = true, with_value = true,
}

-- Constructors that also return a cancel function, which must be called.
api.CANCELERS = {
  with_cancel = true, with_cancel_cause = true, with_timeout = true,
  with_deadline = true,
}

-- Constructors that put a bound on a context.
api.BOUNDERS = {with_timeout = true, with_deadline = true}

-- Functions that run a Lua function on another thread: `fn` is the index of
-- the function argument, `trigger` the index of after_func's context.
api.SPAWNERS = {
  go = {fn = 1},
  safe_go = {fn = 2},
  after_func = {fn = 2, trigger = 1},
}

-- Parameter names that mark a context by convention, besides any name
-- ending in "ctx".
local CTX_NAMES = {ctx = true, parent = true, req_ctx = true, rctx = true}

-- Lua's own functions and libraries: passing a context to them does not
-- run work with it, so rule W102 ignores such calls.
api.BUILTINS = {
  assert = true, collectgarbage = true, error = true, getmetatable = true,
  ipairs = true, next = true, pairs = true, pcall = true, print = true,
  rawequal = true, rawget = true, rawlen = true, rawset = true,
  require = true, select = true, setmetatable = true, tonumber = true,
  tostring = true, type = true, xpcall = true,
}
api.BUILTIN_LIBS = {
  coroutine = true, debug = true, io = true, math = true, os = true,
  package = true, string = true, table = true, utf8 = true,
}

-- api.is_ctx_name(name) tells whether a parameter called `name` is a
-- context by convention.
function api.is_ctx_name(name)
  return CTX_NAMES[name] or name:lower():sub(-3) == "ctx"
end

return api
