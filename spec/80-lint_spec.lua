-- Specs of tether.lint and bin/tether-lint (scenario 18), and of the lint
-- examples in docs/migration.md (scenario 16).
--
-- Run from the repository root:
--   lua5.4 /usr/bin/busted --lpath='./lua/?.lua;./lua/?/init.lua' \
--     spec/80-lint_spec.lua
--
-- The linter is pure Lua: none of these specs needs the C module built.

local lint = require "tether.lint"

-- Lints `src` and lists its findings as "line:column CODE".
local function found(src, opts)
  local out = {}
  for _, f in ipairs(lint.check_source(src, "t.lua", opts)) do
    out[#out + 1] = ("%d:%d %s"):format(f.line, f.column, f.code)
  end
  return out
end

-- Runs a shell command from the repository root; returns its output
-- (stdout and stderr) and its exit status.
local function run(cmd)
  local p = io.popen(cmd .. " 2>&1")
  local output = p:read("a")
  local _, _, status = p:close()
  return output, status
end

local function quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

local function write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

local function read(path)
  local f = assert(io.open(path, "rb"))
  local text = f:read("a")
  f:close()
  return text
end

-- Makes a fresh temporary directory.
local function tmpdir()
  local path = os.tmpname()
  os.remove(path)
  assert(os.execute("mkdir -p " .. quote(path)))
  return path
end

local function rmdir(path)
  os.execute("rm -rf " .. quote(path))
end

local LINT = "lua5.4 bin/tether-lint"

-- {====================================================================
-- The corpus: snippets that must give exactly the listed findings, and
-- snippets that must give none.
-- =====================================================================

local CORPUS = {W101 = {}, W102 = {}, W103 = {}}

CORPUS.W101.positive = {
  {"a closure that captures a request context", [[
local tether = require "tether"
local function handler(ctx)
  tether.go(function()
    fetch(ctx)
  end)
end
]], {"4:11 W101"}},

  {"a closure spawned with safe_go", [[
local tether = require "tether"
local function handler(ctx)
  tether.safe_go("audit", function() audit(ctx) end)
end
]], {"3:44 W101"}},

  {"a request context passed as an argument", [[
local tether = require "tether"
local function handler(ctx)
  tether.go(worker, ctx)
end
]], {"3:21 W101"}},

  {"a context derived by with_cancel", [[
local tether = require "tether"
local function handler(ctx)
  local c, cancel = tether.with_cancel(ctx)
  tether.go(function()
    fetch(c)
    cancel()
  end)
end
]], {"5:11 W101"}},

  {"a chain of local aliases", [[
local tether = require "tether"
local function handler(ctx)
  local a = ctx
  local b = a
  tether.go(function() fetch(b) end)
end
]], {"5:30 W101"}},

  {"the module and go under other local names", [[
local T = require("tether")
local go = T.go
local function handler(req_ctx)
  go(function() return req_ctx:err() end)
end
]], {"4:24 W101"}},

  {"a local function spawned by name", [[
local tether = require "tether"
local function handler(ctx)
  local function work()
    fetch(ctx)
  end
  tether.go(work)
end
]], {"6:13 W101"}},

  {"after_func's function using another context", [[
local tether = require "tether"
local function handler(ctx, parent)
  tether.after_func(parent, function()
    cleanup(ctx)
  end)
end
]], {"4:13 W101"}},

  {"a context made by with_value", [[
local tether = require "tether"
local function handler(ctx, user)
  local vctx = tether.with_value(ctx, "user", user)
  tether.go(function() audit(vctx) end)
end
]], {"4:30 W101"}},

  {"a parameter used as the parent of a context", [[
local tether = require "tether"
local function handler(r)
  local c, cancel = tether.with_timeout(r, 5)
  tether.go(function() log(r) end)
  work(c)
  cancel()
end
]], {"4:28 W101"}},

  {"the global tether", [[
function handle(ctx)
  tether.go(function() fetch(ctx) end)
end
]], {"2:30 W101"}},

  {"a local function called by the spawned closure", [[
local tether = require "tether"
local function handler(ctx)
  local function helper()
    return fetch(ctx)
  end
  tether.go(function()
    helper()
  end)
end
]], {"7:5 W101"}},

  {"a group's context captured by bare go", [[
local tether = require "tether"
local function handler(ctx)
  local g, gctx = tether.group(ctx)
  g:go(function(c) return step(c) end)
  tether.go(function() notify(gctx) end)
  return g:wait()
end
]], {"5:31 W101"}},

  {"a parameter named parent of a method", [[
local tether = require "tether"
local M = {}
function M:handle(parent, job)
  tether.go(function()
    local c = parent
    run(c, job)
  end)
end
return M
]], {"5:15 W101"}},

  {"one finding per context and spawn", [[
local tether = require "tether"
local function handler(ctx, req)
  if req.async then
    tether.go(function()
      fetch(ctx)
      store(ctx)
    end)
  end
end
]], {"5:13 W101"}},

  {"a derived context passed as an expression", [[
local tether = require "tether"
local function handler(ctx)
  tether.go(run, tether.with_value(ctx, "k", 1))
end
]], {"3:18 W101"}},

  {"a closure that polls the request's error", [[
local tether = require "tether"
local function handler(ctx)
  tether.go(function()
    while not ctx:err() do tick() end
  end)
end
]], {"4:15 W101"}},

  {"safe_go with a function value and a context argument", [[
local tether = require "tether"
local work = function(c) return c end
local function handler(rctx)
  tether.safe_go("job", work, rctx)
end
]], {"4:31 W101"}},

  {"a context whose name ends in Ctx", [[
local tether = require "tether"
local function handler(reqCtx)
  tether.go(function() fetch(reqCtx) end)
end
]], {"3:30 W101"}},

  {"a handle that is never used", [[
local tether = require "tether"
local function handler(ctx)
  local h = tether.go(function() fetch(ctx) end)
  local _ = tether.go(function() fetch(ctx) end)
end
]], {"3:40 W101", "4:40 W101"}},
}

CORPUS.W101.negative = {
  {"a detached, bounded context", [[
local tether = require "tether"
local function handler(ctx)
  local d, cancel = tether.with_timeout(tether.without_cancel(ctx), 5)
  tether.go(function()
    fetch(d)
    cancel()
  end)
end
]]},

  {"a closure that detaches the context itself", [[
local tether = require "tether"
local function handler(ctx)
  tether.go(function()
    local d, cancel = tether.with_timeout(tether.without_cancel(ctx), 5)
    fetch(d)
    cancel()
  end)
end
]]},

  {"group work", [[
local tether = require "tether"
local function handler(ctx)
  local g = tether.group(ctx)
  g:go(function() return fetch(ctx) end)
  g:try_go(function() return fetch(ctx) end)
  return g:wait()
end
]]},

  {"a pool submission", [[
local tether = require "tether"
local pool = tether.pool{name = "p", workers = 2}
local function handler(ctx)
  pool:submit(ctx, "audit", function(opctx) audit(opctx, ctx) end)
end
]]},

  {"after_func using its own trigger", [[
local tether = require "tether"
local function handler(ctx)
  tether.after_func(ctx, function() log(ctx:err()) end)
end
]]},

  {"a context from a table field", [[
local tether = require "tether"
local function handler(req)
  local c = req.ctx
  tether.go(function() fetch(c) end)
end
]]},

  {"a global context", [[
local tether = require "tether"
tether.go(function() fetch(ctx) end)
]]},

  {"a context returned by an unknown function", [[
local tether = require "tether"
local function handler()
  local c = make_context()
  tether.go(function() fetch(c) end)
end
]]},

  {"the spawned function's own parameter", [[
local tether = require "tether"
local function handler(ctx)
  tether.go(function(ctx) return fetch(ctx) end, tether.background())
end
]]},

  {"a captured parameter that is not a context", [[
local tether = require "tether"
local function handler(ctx, user)
  tether.go(function() mail(user.email) end)
  return ctx
end
]]},

  {"a go that is not tether's", [[
local go = require("other").go
local function handler(ctx)
  go(function() fetch(ctx) end)
  scheduler.go(function() fetch(ctx) end)
end
]]},

  {"a local context that shadows the request's", [[
local tether = require "tether"
local function handler(ctx)
  tether.go(function()
    local ctx = tether.background()
    fetch(ctx)
  end)
end
]]},

  {"singleflight work", [[
local tether = require "tether"
local sf = tether.singleflight()
local function handler(ctx)
  return sf:call(ctx, "k", function(wctx)
    tether.go(function() warm(wctx) end)
    return load(wctx)
  end)
end
]]},

  {"a pool op's context captured inside the op", [[
local tether = require "tether"
local pool = tether.pool{name = "p", workers = 2, timeout = 5}
local function handler(ctx)
  pool:submit(ctx, "x", function(opctx)
    tether.go(function() log(opctx) end)
  end)
end
]]},

  {"a background context", [[
local tether = require "tether"
local bg = tether.background()
tether.go(function() fetch(bg) end)
]]},

  {"a variable with an unclear assignment", [[
local tether = require "tether"
local function handler(ctx, detach)
  local c = ctx
  if detach then c = lookup_context() end
  tether.go(function() fetch(c) end)
end
]]},

  {"code inside a string", [[
local tether = require "tether"
local function handler(ctx)
  return "tether.go(function() fetch(ctx) end)", ctx
end
]]},

  {"work whose handle is waited on", [[
local tether = require "tether"
local function handler(ctx)
  local h = tether.go(function() return fetch(ctx) end)
  return h:wait(ctx)
end
]]},

  {"handles kept in a list", [[
local tether = require "tether"
local function handler(ctx, urls)
  local hs = {}
  for i, url in ipairs(urls) do
    hs[i] = tether.go(fetch, ctx, url)
  end
  return hs
end
]]},

  {"a parameter fed by a bounded spawn argument", [[
local tether = require "tether"
local function handler(ctx)
  local d, cancel = tether.with_timeout(tether.without_cancel(ctx), 5)
  tether.go(function(wctx, stop)
    tether.go(function() poll(wctx) end)
    stop()
  end, d, cancel)
end
]]},
}

CORPUS.W102.positive = {
  {"a detached context passed to a spawn", [[
local tether = require "tether"
local function handler(ctx)
  tether.go(audit, tether.without_cancel(ctx))
end
]], {"3:20 W102"}},

  {"a detached variable passed to a spawn", [[
local tether = require "tether"
local function handler(ctx)
  local dctx = tether.without_cancel(ctx)
  tether.go(audit, dctx)
end
]], {"4:20 W102"}},

  {"a detached context captured and used", [[
local tether = require "tether"
local function handler(ctx, ev)
  local dctx = tether.without_cancel(ctx)
  tether.go(function()
    audit.write(ev, dctx)
  end)
end
]], {"5:21 W102"}},

  {"a detached context given to a call", [[
local tether = require "tether"
local function handler(ctx)
  local dctx = tether.without_cancel(ctx)
  do_work(dctx)
end
]], {"4:11 W102"}},

  {"a sleep under a detached context", [[
local tether = require "tether"
local function handler(ctx)
  local dctx = tether.without_cancel(ctx)
  tether.sleep(5, dctx)
end
]], {"4:19 W102"}},

  {"a channel receive", [[
local tether = require "tether"
local function handler(ctx, ch)
  local dctx = tether.without_cancel(ctx)
  return ch:recv(dctx)
end
]], {"4:18 W102"}},

  {"a wait on a handle", [[
local tether = require "tether"
local function handler(ctx, h)
  local dctx = tether.without_cancel(ctx)
  return h:wait(dctx)
end
]], {"4:17 W102"}},

  {"a channel send", [[
local tether = require "tether"
local function handler(ctx, ch, v)
  local dctx = tether.without_cancel(ctx)
  ch:send(v, dctx)
end
]], {"4:14 W102"}},

  {"with_value keeps a detached context unbounded", [[
local tether = require "tether"
local function handler(ctx)
  local d = tether.with_value(tether.without_cancel(ctx), "k", 1)
  work(d)
end
]], {"4:8 W102"}},

  {"with_cancel keeps a detached context unbounded", [[
local tether = require "tether"
local function handler(ctx)
  local d = tether.without_cancel(ctx)
  local c, cancel = tether.with_cancel(d)
  work(c)
  cancel()
end
]], {"5:8 W102"}},

  {"without_cancel drops an earlier timeout", [[
local tether = require "tether"
local function handler(ctx)
  local b, cancel = tether.with_timeout(ctx, 1)
  local d = tether.without_cancel(b)
  work(d)
  cancel()
end
]], {"5:8 W102"}},

  {"a safe_go closure", [[
local tether = require "tether"
local function handler(ctx, ev)
  local d = tether.without_cancel(ctx)
  tether.safe_go("audit", function() audit.write(d, ev) end)
end
]], {"4:50 W102"}},

  {"a group over a detached context", [[
local tether = require "tether"
local function handler(ctx)
  local g, gctx = tether.group(tether.without_cancel(ctx))
  g:go(function() return step(gctx) end)
  return g:wait()
end
]], {"3:32 W102"}},

  {"an alias of without_cancel", [[
local tether = require "tether"
local detach = tether.without_cancel
local function handler(ctx)
  local d = detach(ctx)
  run(d)
end
]], {"5:7 W102"}},

  {"a detached context whose parent is unknown", [[
local tether = require "tether"
local function handler(req)
  local d = tether.without_cancel(req.ctx)
  process(d, req)
end
]], {"4:11 W102"}},

  {"a singleflight call", [[
local tether = require "tether"
local sf = tether.singleflight()
local function handler(ctx)
  local d = tether.without_cancel(ctx)
  return sf:call(d, "key", load)
end
]], {"5:18 W102"}},

  {"an after_func closure", [[
local tether = require "tether"
local function handler(ctx)
  local d = tether.without_cancel(ctx)
  tether.after_func(ctx, function() flush(d) end)
end
]], {"4:43 W102"}},

  {"each use of an alias", [[
local tether = require "tether"
local function handler(ctx)
  local d = tether.without_cancel(ctx)
  local e = d
  first(e)
  second(d)
end
]], {"5:9 W102", "6:10 W102"}},
}

CORPUS.W102.negative = {
  {"a detached context with a timeout", [[
local tether = require "tether"
local function handler(ctx)
  local d, cancel = tether.with_timeout(tether.without_cancel(ctx), 5)
  work(d)
  cancel()
end
]]},

  {"a detached context with a deadline", [[
local tether = require "tether"
local function handler(ctx)
  local d, cancel = tether.with_deadline(tether.without_cancel(ctx),
    tether.now() + 5)
  work(d)
  cancel()
end
]]},

  {"a timeout added later", [[
local tether = require "tether"
local function handler(ctx)
  local d = tether.without_cancel(ctx)
  local b, cancel = tether.with_timeout(d, 5)
  work(b)
  cancel()
end
]]},

  {"a pool submission", [[
local tether = require "tether"
local function handler(ctx, pool)
  pool:submit(tether.without_cancel(ctx), "audit", audit)
  local d = tether.without_cancel(ctx)
  pool:submit(d, {name = "audit"}, audit)
end
]]},

  {"a detached context stored in a table", [[
local tether = require "tether"
local function handler(ctx, state)
  state.ctx = tether.without_cancel(ctx)
  local t = {ctx = tether.without_cancel(ctx)}
  return t
end
]]},

  {"a detached context returned", [[
local tether = require "tether"
local function detached(ctx)
  local d = tether.without_cancel(ctx)
  return d
end
]]},

  {"methods of the detached context", [[
local tether = require "tether"
local function handler(ctx)
  local d = tether.without_cancel(ctx)
  if d:err() then return nil end
  return d:value("trace")
end
]]},

  {"Lua's own functions", [[
local tether = require "tether"
local function handler(ctx)
  local d = tether.without_cancel(ctx)
  print(tostring(d), type(d))
  assert(d)
end
]]},

  {"a closure that bounds the context", [[
local tether = require "tether"
local function handler(ctx)
  local d = tether.without_cancel(ctx)
  tether.go(function()
    local b, cancel = tether.with_timeout(d, 5)
    work(b)
    cancel()
  end)
end
]]},

  {"with_value over a bounded context", [[
local tether = require "tether"
local function handler(ctx)
  local d = tether.without_cancel(ctx)
  local b, cancel = tether.with_timeout(d, 2)
  local v = tether.with_value(b, "k", 1)
  work(v)
  cancel()
end
]]},

  {"a detached context sent as a value", [[
local tether = require "tether"
local function handler(ctx, ch)
  ch:send(tether.without_cancel(ctx))
end
]]},

  {"a detached context in a later argument", [[
local tether = require "tether"
local function handler(ctx)
  local d = tether.without_cancel(ctx)
  log("detached", d)
end
]]},

  {"a detached context as after_func's trigger", [[
local tether = require "tether"
local function handler(ctx)
  local stop = tether.after_func(tether.without_cancel(ctx), cleanup)
  return stop
end
]]},

  {"a bounded context built inline", [[
local tether = require "tether"
local function handler(ctx)
  work(tether.with_timeout(tether.without_cancel(ctx), 1))
end
]]},

  {"a pool op's own context", [[
local tether = require "tether"
local pool = tether.pool{name = "p", workers = 2, timeout = 5}
local function handler(ctx)
  pool:submit(ctx, "x", function(opctx) work(opctx) end)
end
]]},

  {"a variable with an unclear assignment", [[
local tether = require "tether"
local function handler(ctx, x)
  local d = tether.without_cancel(ctx)
  if x then d = lookup_context() end
  work(d)
end
]]},

  {"a request context, which is not detached", [[
local tether = require "tether"
local function handler(ctx)
  work(ctx)
  tether.sleep(1, ctx)
end
]]},
}

CORPUS.W103.positive = {
  {"a single target", [[
local tether = require "tether"
local function handler(ctx)
  local c = tether.with_timeout(ctx, 1)
  return work(c)
end
]], {"3:13 W103"}},

  {"a cancel assigned to _", [[
local tether = require "tether"
local function handler(ctx)
  local c, _ = tether.with_cancel(ctx)
  return work(c)
end
]], {"3:16 W103"}},

  {"a cancel never used", [[
local tether = require "tether"
local function handler(ctx, t)
  local c, cancel = tether.with_deadline(ctx, t)
  work(c)
end
]], {"3:21 W103"}},

  {"a call statement", [[
local tether = require "tether"
local function handler(ctx)
  tether.with_cancel(ctx)
end
]], {"3:3 W103"}},

  {"a call that is not the last argument", [[
local tether = require "tether"
local function handler(ctx, x)
  work(tether.with_timeout(ctx, 1), x)
end
]], {"3:8 W103"}},

  {"a cancel dropped by without_cancel", [[
local tether = require "tether"
local function handler(ctx)
  local d = tether.without_cancel(tether.with_timeout(ctx, 1))
  return d
end
]], {"3:35 W103"}},

  {"parentheses that keep one result", [[
local tether = require "tether"
local function handler(ctx)
  local c, cancel = (tether.with_timeout(ctx, 1))
  work(c, cancel)
end
]], {"3:22 W103"}},

  {"an early return", [[
local tether = require "tether"
local function handler(ctx)
  local c, cancel = tether.with_timeout(ctx, 1)
  local v, err = fetch(c)
  if err then
    return nil, err
  end
  cancel()
  return v
end
]], {"6:5 W103"}},

  {"a return in an elseif branch", [[
local tether = require "tether"
local function handler(ctx, mode)
  local c, cancel = tether.with_cancel(ctx)
  if mode == "a" then
    cancel()
  elseif mode == "b" then
    return work(c)
  end
  cancel()
end
]], {"7:5 W103"}},

  {"a call in the other branch only", [[
local tether = require "tether"
local function handler(ctx, a)
  local c, cancel = tether.with_timeout(ctx, 1)
  if a then
    cancel()
  else
    return nil
  end
  cancel()
  return c
end
]], {"7:5 W103"}},

  {"a call that is not the last value", [[
local tether = require "tether"
local function handler(ctx)
  local c, cancel = tether.with_timeout(ctx, 1), nil
  return c, cancel
end
]], {"3:21 W103"}},

  {"an assignment to a declared local never used", [[
local tether = require "tether"
local function handler(ctx)
  local c, cancel
  c, cancel = tether.with_cancel_cause(ctx)
  return work(c)
end
]], {"4:15 W103"}},

  {"an alias of with_cancel_cause", [[
local tether = require "tether"
local wcc = tether.with_cancel_cause
local function handler(ctx)
  local c = wcc(ctx)
  return work(c)
end
]], {"4:13 W103"}},

  {"a table field", [[
local tether = require "tether"
local function handler(ctx)
  local t = {ctx = tether.with_timeout(ctx, 1)}
  return t
end
]], {"3:20 W103"}},

  {"a return inside a loop", [[
local tether = require "tether"
local function handler(ctx)
  local c, cancel = tether.with_timeout(ctx, 1)
  for i = 1, 3 do
    if try(c, i) then return true end
  end
  cancel()
  return false
end
]], {"5:23 W103"}},

  {"an and/or expression", [[
local tether = require "tether"
local function handler(ctx, ok)
  local c = ok and tether.with_cancel(ctx)
  return c
end
]], {"3:20 W103"}},

  {"a method call on the new context", [[
local tether = require "tether"
local function handler(ctx)
  return tether.with_timeout(ctx, 0):err()
end
]], {"3:10 W103"}},

  {"two leaking returns", [[
local tether = require "tether"
local function handler(ctx, a, b)
  local c, cancel = tether.with_timeout(ctx, 1)
  if a then return 1 end
  if b then return 2 end
  cancel()
  return c
end
]], {"4:13 W103", "5:13 W103"}},
}

CORPUS.W103.negative = {
  {"a cancel called at the end", [[
local tether = require "tether"
local function handler(ctx)
  local c, cancel = tether.with_timeout(ctx, 1)
  work(c)
  cancel()
end
]]},

  {"a cancel passed on", [[
local tether = require "tether"
local function handler(ctx)
  local c, cancel = tether.with_timeout(ctx, 1)
  tether.after_func(c, cancel)
  return c
end
]]},

  {"a cancel stored in fields", [[
local tether = require "tether"
local Job = {}
function Job:start(ctx)
  self.ctx, self.cancel = tether.with_cancel(ctx)
  local c, cancel = tether.with_cancel(ctx)
  self.stop = cancel
  return c
end
return Job
]]},

  {"a cancel returned", [[
local tether = require "tether"
local function child(ctx)
  return tether.with_timeout(ctx, 1)
end
local function other(ctx)
  local c, cancel = tether.with_cancel(ctx)
  return c, cancel
end
return child, other
]]},

  {"a cancel captured by a closure", [[
local tether = require "tether"
local function handler(ctx, defer)
  local c, cancel = tether.with_timeout(ctx, 1)
  defer(function() cancel() end)
  return work(c)
end
]]},

  {"a to-be-closed cancel", [[
local tether = require "tether"
local function handler(ctx)
  local c, cancel <close> = tether.with_timeout(ctx, 1)
  return work(c)
end
]]},

  {"a to-be-closed alias of the cancel", [[
local tether = require "tether"
local function handler(ctx)
  local c, cancel = tether.with_timeout(ctx, 1)
  local _ <close> = cancel
  return work(c)
end
]]},

  {"a cancel called before an early return", [[
local tether = require "tether"
local function handler(ctx)
  local c, cancel = tether.with_timeout(ctx, 1)
  local v, err = fetch(c)
  if err then
    cancel()
    return nil, err
  end
  cancel()
  return v
end
]]},

  {"a cancel used in the return", [[
local tether = require "tether"
local function handler(ctx)
  local c, cancel = tether.with_timeout(ctx, 1)
  return finish(c, cancel)
end
]]},

  {"every result passed on", [[
local tether = require "tether"
local function handler(ctx)
  register(tether.with_cancel(ctx))
end
]]},

  {"globals as targets", [[
local tether = require "tether"
JOB_CTX, JOB_CANCEL = tether.with_cancel(tether.background())
]]},

  {"a table that keeps every result", [[
local tether = require "tether"
local function handler(ctx)
  local pair = {tether.with_cancel(ctx)}
  return pair
end
]]},

  {"a return in a nested function", [[
local tether = require "tether"
local function handler(ctx)
  local c, cancel = tether.with_timeout(ctx, 1)
  local f = function() return 1 end
  work(c, f)
  cancel()
end
]]},

  {"a return in the other branch", [[
local tether = require "tether"
local function handler(ctx, a)
  if a then
    local c, cancel = tether.with_timeout(ctx, 1)
    work(c)
    cancel()
  else
    return nil
  end
end
]]},

  {"results handed to a spawned function", [[
local tether = require "tether"
local function handler(ctx)
  tether.go(worker, tether.with_timeout(tether.without_cancel(ctx), 5))
end
]]},

  {"a cancel used in a condition", [[
local tether = require "tether"
local function handler(ctx)
  local c, cancel = tether.with_timeout(ctx, 1)
  if stop_when_done(c, cancel) then
    return true
  end
  return false
end
]]},

  {"a cancel called before a later return", [[
local tether = require "tether"
local function handler(ctx)
  local c, cancel = tether.with_timeout(ctx, 1)
  local ok, err = pcall(work, c)
  cancel()
  if not ok then
    return nil, err
  end
  return true
end
]]},

  {"a with_value, which has no cancel", [[
local tether = require "tether"
local function handler(ctx)
  local v = tether.with_value(ctx, "k", 1)
  return work(v)
end
]]},
}

describe("tether.lint corpus", function()
  for _, code in ipairs({"W101", "W102", "W103"}) do
    describe(code, function()
      it("has at least 15 positive and 15 negative snippets", function()
        assert.is_true(#CORPUS[code].positive >= 15)
        assert.is_true(#CORPUS[code].negative >= 15)
      end)

      for _, case in ipairs(CORPUS[code].positive) do
        it("flags " .. case[1], function()
          assert.same(case[3], found(case[2]))
        end)
      end

      for _, case in ipairs(CORPUS[code].negative) do
        it("accepts " .. case[1], function()
          assert.same({}, found(case[2]))
        end)
      end
    end)
  end
end)

-- }====================================================================

describe("tether.lint findings", function()
  local src = [[
local tether = require "tether"
local function handler(ctx)
  local d = tether.without_cancel(ctx)
  tether.go(function() fetch(ctx) end)
  work(d)
end
]]

  it("have the documented fields", function()
    local f = lint.check_source(src, "h.lua")
    assert.same({
      code = "W101", line = 4, column = 30, end_column = 32, file = "h.lua",
      message = "context 'ctx' (a request context) is captured by work "
        .. "spawned with tether.go; detach it with tether.without_cancel "
        .. "and give it its own timeout",
    }, f[1])
    assert.same({
      code = "W102", line = 5, column = 8, end_column = 8, file = "h.lua",
      message = "context 'd' is detached with tether.without_cancel but "
        .. "has no timeout or deadline; bound it with tether.with_timeout "
        .. "or tether.with_deadline before running work",
    }, f[2])
    assert.equal(2, #f)
  end)

  it("name a context derived from a request context", function()
    local f = lint.check_source([[
local tether = require "tether"
local function handler(ctx)
  local c, cancel = tether.with_cancel(ctx)
  tether.go(worker, c, cancel)
end
]])
    assert.equal("context 'c' (derived from request context 'ctx') is "
      .. "passed to work spawned with tether.go; detach it with "
      .. "tether.without_cancel and give it its own timeout", f[1].message)
    assert.equal("stdin", f[1].file)
  end)

  it("name the local function the capture goes through", function()
    local f = lint.check_source(CORPUS.W101.positive[7][2], "w.lua")
    assert.equal("context 'ctx' (a request context) is captured by work "
      .. "spawned with tether.go (through 'work'); detach it with "
      .. "tether.without_cancel and give it its own timeout", f[1].message)
  end)

  it("explain each kind of lost cancel", function()
    local f = lint.check_source([[
local tether = require "tether"
local function handler(ctx, a)
  local c1 = tether.with_timeout(ctx, 1)
  local c2, cancel2 = tether.with_deadline(ctx, 9)
  local c3, cancel3 = tether.with_cancel(ctx)
  if a then return c1, c2 end
  cancel3()
  return c3
end
]])
    assert.same({
      "the cancel function returned by tether.with_timeout is discarded; "
        .. "call it when the work ends",
      "the cancel function 'cancel2' returned by tether.with_deadline is "
        .. "never used; call it when the work ends",
      "the cancel function 'cancel3' returned by tether.with_cancel on "
        .. "line 5 is not called on all paths (this return leaks it)",
    }, {f[1].message, f[2].message, f[3].message})
    assert.same({3, 14, 32}, {f[1].line, f[1].column, f[1].end_column})
    assert.same({6, 13, 18}, {f[3].line, f[3].column, f[3].end_column})
  end)

  it("are sorted by line and column", function()
    local f = found([[
local tether = require "tether"
local function handler(ctx, t)
  t[tether.with_cancel(ctx)] = tether.go(b, tether.without_cancel(ctx))
  tether.go(function() a(ctx) end)
end
]])
    -- The right-hand side is analysed first, so the raw order differs.
    assert.same({"3:5 W103", "3:45 W102", "4:26 W101"}, f)
  end)

  it("report a syntax error as E011 at its position", function()
    local f = lint.check_source("local x = = 1\n", "bad.lua")
    assert.same({{
      code = "E011", line = 1, column = 11, end_column = 11, file = "bad.lua",
      message = "expected expression near '='",
    }}, f)
    f = lint.check_source("local a = 1\nlocal s = 'open\n", "bad.lua")
    assert.same({"unfinished string", 2, 11},
      {f[1].message, f[1].line, f[1].column})
  end)

  it("report an unreadable file as E010", function()
    local f = lint.check_file("/nonexistent/tether/x.lua")
    assert.equal(1, #f)
    assert.equal("E010", f[1].code)
    assert.equal("/nonexistent/tether/x.lua", f[1].file)
  end)

  it("read attributes at the very end of UTF-8 source", function()
    assert.same({}, found("local tether = require 'tether' -- é\n"
      .. "local function h(ctx)\n"
      .. "  local c, cancel <close> = tether.with_timeout(ctx, 1)\n"
      .. "  return c\n"
      .. "end\n"
      .. "local last <close>"))
  end)

  it("count columns in characters on UTF-8 lines", function()
    assert.same({"3:48 W101"}, found([[
local tether = require "tether"
local function handler(ctx)
  local s = "héllo"; tether.go(function() f(s, ctx) end)
end
]]))
  end)
end)

describe("tether.lint suppression", function()
  local function snippet(comment)
    return ([[
local tether = require "tether"
local function handler(ctx)
  tether.go(worker, ctx, tether.without_cancel(ctx)) %s
end
]]):format(comment)
  end

  it("finds both codes without a comment", function()
    assert.same({"3:21 W101", "3:26 W102"}, found(snippet("")))
  end)

  it("ignores every code with a bare ignore", function()
    assert.same({}, found(snippet("-- tether-lint: ignore")))
  end)

  it("ignores the listed code only", function()
    assert.same({"3:26 W102"}, found(snippet("-- tether-lint: ignore W101")))
    assert.same({"3:21 W101"}, found(snippet("--tether-lint:ignore W102")))
  end)

  it("takes several codes separated by commas or spaces", function()
    assert.same({}, found(snippet("-- tether-lint: ignore W101,W102")))
    assert.same({}, found(snippet("-- tether-lint: ignore W102, W101")))
    assert.same({}, found(snippet("-- tether-lint: ignore W101 W102")))
  end)

  it("allows a reason after the codes", function()
    assert.same({"3:26 W102"}, found(snippet(
      "-- tether-lint: ignore W101 the audit must outlive the request")))
  end)

  it("applies to its own line only", function()
    local src = [[
local tether = require "tether"
local function handler(ctx)
  -- tether-lint: ignore
  tether.go(worker, ctx)
  tether.go(worker, ctx) -- tether-lint: ignore W101
end
]]
    assert.same({"4:21 W101"}, found(src))
  end)

  it("needs the exact directive", function()
    assert.same({"3:21 W101", "3:26 W102"},
      found(snippet("-- tether-lint: ignored")))
    assert.same({"3:21 W101", "3:26 W102"},
      found(snippet("-- lint: ignore W101")))
  end)

  it("filters codes with the ignore and only options", function()
    local src = snippet("")
    assert.same({"3:26 W102"}, found(src, {ignore = {"W101"}}))
    assert.same({"3:21 W101"}, found(src, {only = {"W101"}}))
    assert.same({}, found(src, {ignore = {"W101", "W102"}}))
  end)
end)

describe("tether-lint command", function()
  local dir

  before_each(function()
    dir = tmpdir()
    write(dir .. "/clean.lua", [[
local tether = require "tether"
local function handler(ctx)
  local d, cancel = tether.with_timeout(tether.without_cancel(ctx), 5)
  tether.go(function() work(d); cancel() end)
end
return handler
]])
    write(dir .. "/leak.lua", [[
local tether = require "tether"
local function handler(ctx)
  tether.go(function() work(ctx) end)
  local c = tether.with_timeout(ctx, 1)
  return c
end
return handler
]])
    write(dir .. "/detach.lua", [[
local tether = require "tether"
return function(ctx) tether.go(audit, tether.without_cancel(ctx)) end
]])
    write(dir .. "/broken.lua", "local function f(\n  return 1\nend\n")
  end)

  after_each(function()
    rmdir(dir)
  end)

  it("exits 0 and prints the summary for a clean file", function()
    local out, status = run(LINT .. " " .. quote(dir .. "/clean.lua"))
    assert.equal("Total: 0 warnings in 1 file\n", out)
    assert.equal(0, status)
  end)

  it("exits 1 and prints findings in luacheck's shape", function()
    local leak, detach = dir .. "/leak.lua", dir .. "/detach.lua"
    local out, status = run(LINT .. " " .. quote(leak) .. " "
      .. quote(detach))
    assert.equal(
      leak .. ":3:29: (W101) context 'ctx' (a request context) is captured "
      .. "by work spawned with tether.go; detach it with "
      .. "tether.without_cancel and give it its own timeout\n"
      .. leak .. ":4:13: (W103) the cancel function returned by "
      .. "tether.with_timeout is discarded; call it when the work ends\n"
      .. detach .. ":2:39: (W102) this context is detached with "
      .. "tether.without_cancel but has no timeout or deadline; bound it "
      .. "with tether.with_timeout or tether.with_deadline before running "
      .. "work\n"
      .. "Total: 3 warnings in 2 files\n", out)
    assert.equal(1, status)
  end)

  it("exits 2 on a syntax error and prints its position", function()
    local broken = dir .. "/broken.lua"
    local out, status = run(LINT .. " " .. quote(broken) .. " "
      .. quote(dir .. "/clean.lua"))
    assert.equal(broken .. ":2:3: (E011) expected argument near 'return'\n"
      .. "Total: 0 warnings / 1 error in 2 files\n", out)
    assert.equal(2, status)
  end)

  it("exits 2 on a file it cannot read", function()
    local missing = dir .. "/missing.lua"
    local out, status = run(LINT .. " " .. quote(missing))
    assert.equal(missing .. ":1:1: (E010) cannot read file: " .. missing
      .. ": No such file or directory\n"
      .. "Total: 0 warnings / 1 error in 1 file\n", out)
    assert.equal(2, status)
  end)

  it("recurses into directories for *.lua files only", function()
    os.remove(dir .. "/broken.lua")
    assert(os.execute("mkdir -p " .. quote(dir .. "/sub/deeper") .. " "
      .. quote(dir .. "/.hidden")))
    write(dir .. "/sub/deeper/more.lua", read(dir .. "/leak.lua"))
    write(dir .. "/sub/notes.txt", read(dir .. "/leak.lua"))
    write(dir .. "/.hidden/skip.lua", read(dir .. "/leak.lua"))
    assert.same({
      dir .. "/clean.lua", dir .. "/detach.lua", dir .. "/leak.lua",
      dir .. "/sub/deeper/more.lua",
    }, lint.expand_paths({dir}))
    local out, status = run(LINT .. " " .. quote(dir))
    assert.truthy(out:find(dir .. "/sub/deeper/more.lua:3:29: (W101)", 1,
      true))
    assert.truthy(out:find("\nTotal: 5 warnings in 4 files\n$"))
    assert.equal(1, status)
  end)

  it("reads the standard input for -", function()
    local out, status = run(LINT .. " - < " .. quote(dir .. "/leak.lua"))
    assert.truthy(out:find("^stdin:3:29: %(W101%) "))
    assert.truthy(out:find("\nTotal: 2 warnings in 1 file\n$"))
    assert.equal(1, status)
  end)

  it("filters codes with --ignore and --only", function()
    local leak = quote(dir .. "/leak.lua")
    local out, status = run(LINT .. " --ignore W101,W103 " .. leak)
    assert.equal("Total: 0 warnings in 1 file\n", out)
    assert.equal(0, status)
    out, status = run(LINT .. " --only=W103 " .. leak)
    assert.equal(dir .. "/leak.lua:4:13: (W103) the cancel function "
      .. "returned by tether.with_timeout is discarded; call it when the "
      .. "work ends\nTotal: 1 warning in 1 file\n", out)
    assert.equal(1, status)
  end)

  it("prints JSON that parses back", function()
    local json = require "dkjson"
    local leak, broken = dir .. "/leak.lua", dir .. "/broken.lua"
    local out, status = run(LINT .. " --formatter json " .. quote(leak)
      .. " " .. quote(broken))
    assert.equal(2, status)
    local doc = json.decode(out)
    assert.same({warnings = 2, errors = 1, files = 2}, doc.summary)
    assert.same({
      code = "W101", file = leak, line = 3, column = 29, end_column = 31,
      message = "context 'ctx' (a request context) is captured by work "
        .. "spawned with tether.go; detach it with tether.without_cancel "
        .. "and give it its own timeout",
    }, doc.findings[1])
    assert.same({"W101", "W103", "E011"}, {doc.findings[1].code,
      doc.findings[2].code, doc.findings[3].code})
    assert.same({broken, 2, 3}, {doc.findings[3].file, doc.findings[3].line,
      doc.findings[3].column})
  end)

  it("escapes strings in JSON", function()
    local json = require "dkjson"
    local text = "q\"b\\s\n\t\1é"
    assert.same({findings = {}, s = text},
      json.decode(lint.json({findings = {}, s = text})))
    assert.equal("[]", lint.json({}))
  end)

  it("prints help and exits 0", function()
    local out, status = run(LINT .. " --help")
    assert.equal(lint.usage, out)
    assert.truthy(out:find("Usage: tether-lint [options] FILE|DIR...", 1,
      true))
    assert.equal(0, status)
  end)

  it("exits 3 on a bad command line", function()
    local out, status = run(LINT .. " --only W999 x.lua")
    assert.equal("tether-lint: unknown code 'W999'\n"
      .. "Try 'tether-lint --help' for more information.\n", out)
    assert.equal(3, status)
    out, status = run(LINT)
    assert.equal("tether-lint: no files given\n"
      .. "Try 'tether-lint --help' for more information.\n", out)
    assert.equal(3, status)
    out, status = run(LINT .. " --formatter xml x.lua")
    assert.equal("tether-lint: unknown formatter 'xml'\n"
      .. "Try 'tether-lint --help' for more information.\n", out)
    assert.equal(3, status)
  end)

  it("runs in process through lint.main", function()
    local out = assert(io.tmpfile())
    local status = lint.main({"--formatter", "json", dir .. "/clean.lua"},
      out, out)
    out:seek("set")
    local doc = require("dkjson").decode(out:read("a"))
    out:close()
    assert.equal(0, status)
    assert.same({warnings = 0, errors = 0, files = 1}, doc.summary)
  end)
end)

describe("the repository's own code", function()
  -- Lints every *.lua file under lua/ and examples/ as they are when the
  -- spec runs, other than corpus files kept for the linter's own tests.
  local function repo_files()
    local files = {}
    for _, dir in ipairs({"lua", "examples"}) do
      local f = io.open(dir, "rb")
      if f then
        f:close()
        for _, file in ipairs(lint.expand_paths({dir})) do
          if not file:find("^spec/lint/") then
            files[#files + 1] = file
          end
        end
      end
    end
    return files
  end

  it("has no findings and no parse errors", function()
    local files = repo_files()
    assert.truthy(#files >= 2)
    local problems = {}
    for _, file in ipairs(files) do
      for _, f in ipairs(lint.check_file(file)) do
        problems[#problems + 1] = lint.format_finding(f)
      end
    end
    assert.same({}, problems)
  end)

  it("passes the command line too", function()
    local out, status = run(LINT .. " lua examples")
    assert.truthy(out:find("^Total: 0 warnings in %d+ files?\n$"))
    assert.equal(0, status)
  end)

  it("includes an example that prints findings in the CLI format", function()
    local out, status = run("lua5.4 examples/18-lint.lua")
    assert.equal(0, status)
    local name = "handlers/order.lua"
    assert.equal("== the handler as written\n"
      .. name .. ":6:17: (W101) context 'ctx' (a request context) is "
      .. "captured by work spawned with tether.go; detach it with "
      .. "tether.without_cancel and give it its own timeout\n"
      .. name .. ":10:26: (W102) context 'actx' is detached with "
      .. "tether.without_cancel but has no timeout or deadline; bound it "
      .. "with tether.with_timeout or tether.with_deadline before running "
      .. "work\n"
      .. name .. ":12:16: (W103) the cancel function returned by "
      .. "tether.with_timeout is discarded; call it when the work ends\n"
      .. "Total: 3 warnings in 1 file\n"
      .. "\n"
      .. "== the handler fixed\n"
      .. "Total: 0 warnings in 1 file\n", out)
  end)
end)

describe("docs/lint.md", function()
  local doc = read("docs/lint.md")

  it("documents every rule with its code, name and messages", function()
    for code, rule in pairs(lint.rules) do
      assert.truthy(doc:find("\n### " .. code .. " " .. rule.name .. "\n",
        1, true), code)
    end
    for _, message in ipairs({
      "is captured by work spawned with tether.go; detach it with "
        .. "tether.without_cancel and give it its own timeout",
      "is detached with tether.without_cancel but has no timeout or "
        .. "deadline; bound it with tether.with_timeout or "
        .. "tether.with_deadline before running work",
      "is discarded; call it when the work ends",
      "is never used; call it when the work ends",
      "is not called on all paths (this return leaks it)",
    }) do
      assert.truthy(doc:find(message, 1, true), message)
    end
  end)

  it("documents the error codes and the suppression comment", function()
    for code in pairs(lint.errors) do
      assert.truthy(doc:find("| " .. code .. " |", 1, true), code)
    end
    assert.truthy(doc:find("-- tether-lint: ignore W101", 1, true))
  end)
end)

describe("docs/migration.md", function()
  -- The guide marks each example with an HTML comment naming a file:
  -- `<!-- lint: before.lua -->` before a ```lua block, and
  -- `<!-- lint-output: before.lua -->` before a ```text block holding what
  -- tether-lint prints for it.
  local doc = read("docs/migration.md")

  local function blocks(kind)
    local out, order = {}, {}
    local pattern = "<!%-%- " .. kind .. ": ([%w%-%._]+) %-%->\n```%w+\n"
      .. "(.-)```"
    for name, body in doc:gmatch(pattern) do
      assert.is_nil(out[name], "duplicate block " .. name)
      out[name] = body
      order[#order + 1] = name
    end
    return out, order
  end

  local sources, names = blocks("lint")
  local outputs = blocks("lint%-output")

  it("has a before and an after version", function()
    assert.truthy(sources["before.lua"])
    assert.truthy(sources["after.lua"])
    assert.equal("before.lua", names[1])
    assert.equal("after.lua", names[#names])
  end)

  it("prints the findings of every version", function()
    for _, name in ipairs(names) do
      local findings = lint.check_source(sources[name], name)
      local report = {
        files = {{file = name, findings = findings}},
        warnings = #findings, errors = 0,
      }
      for _, f in ipairs(findings) do
        assert.equal("W", f.code:sub(1, 1), lint.format_finding(f))
      end
      assert.equal(outputs[name], lint.format(report), name)
    end
    local count = 0
    for _ in pairs(outputs) do
      count = count + 1
    end
    assert.equal(#names, count)
  end)

  it("has findings before and none after", function()
    assert.truthy(#lint.check_source(sources["before.lua"]) >= 2)
    assert.same({}, lint.check_source(sources["after.lua"]))
    assert.equal("Total: 0 warnings in 1 file\n", outputs["after.lua"])
  end)

  it("uses the pool API of the design", function()
    local after = sources["after.lua"]
    for _, word in ipairs({"tether.pool{", "name =", "workers =", "queue =",
        "timeout =", "retry =", "attempts =", "backoff =", "factor =",
        "max_backoff =", "jitter =", ":submit(ctx, {name =",
        ":dead_letters()", ":drain("}) do
      assert.truthy(after:find(word, 1, true), word)
    end
    assert.truthy(sources["before.lua"]:find("tether.sleep(", 1, true))
  end)
end)

describe("tether-lint on hostile input", function()
  local dir

  before_each(function()
    dir = tmpdir()
    write(dir .. "/leak.lua", [[
local tether = require "tether"
local function handler(ctx)
  tether.go(function() work(ctx) end)
end
return handler
]])
  end)

  after_each(function()
    rmdir(dir)
  end)

  local LEAK_LINE = ":3:29: (W101) context 'ctx' (a request context) is "
    .. "captured by work spawned with tether.go; detach it with "
    .. "tether.without_cancel and give it its own timeout\n"

  it("makes a file nested 100k deep that file's error and goes on",
      function()
    local deep = dir .. "/deep.lua"
    write(deep, "return " .. ("{"):rep(100000) .. ("}"):rep(100000) .. "\n")
    local out, status = run(LINT .. " " .. quote(dir))
    assert.equal(2, status)
    assert.falsy(out:find("traceback", 1, true))
    local first, rest = out:match("^([^\n]*\n)(.*)$")
    assert.truthy(first:find("^" .. deep:gsub("%p", "%%%0")
      .. ":1:1: %(E011%) Lua cannot load this file: [^\n]+\n$"))
    assert.equal(dir .. "/leak.lua" .. LEAK_LINE
      .. "Total: 1 warning / 1 error in 2 files\n", rest)
  end)

  it("reports what Lua refuses to load as a syntax error", function()
    -- luacheck's parser takes both; Lua's does not.
    local nested = "local x = " .. ("("):rep(300) .. "1" .. (")"):rep(300)
      .. "\nreturn x\n"
    local f = lint.check_source(nested, "nested.lua")
    assert.equal(1, #f)
    assert.same({"E011", "nested.lua", 1, 1},
      {f[1].code, f[1].file, f[1].line, f[1].column})
    assert.truthy(f[1].message:find("^Lua cannot load this file: "))
    f = lint.check_source("local x <const> = 1\n\nx = 2\n", "const.lua")
    assert.same({{
      code = "E011", file = "const.lua", line = 3, column = 1,
      end_column = 1, message = "attempt to assign to const variable 'x'",
    }}, f)
    f = lint.check_source("goto done\n", "goto.lua")
    assert.equal("E011", f[1].code)
    assert.truthy(f[1].message:find("no visible label 'done'", 1, true))
    -- A first line starting with '#' is skipped, as lua5.4 does.
    assert.same({}, lint.check_source("#!/usr/bin/env lua5.4\nreturn 1\n"))
    write(dir .. "/const.lua", "local c <const> = 1\nc = 2\n")
    local out, status = run(LINT .. " - < " .. quote(dir .. "/const.lua"))
    assert.equal("stdin:2:1: (E011) attempt to assign to const variable "
      .. "'c'\nTotal: 0 warnings / 1 error in 1 file\n", out)
    assert.equal(2, status)
  end)

  it("visits each real file once through symbolic links", function()
    assert(os.execute("ln -s . " .. quote(dir .. "/loop")))
    assert.same({dir .. "/leak.lua"}, lint.expand_paths({dir}))
    -- Two loops, a link to a file, and paths named twice.
    assert(os.execute("mkdir -p " .. quote(dir .. "/sub") .. " && ln -s .. "
      .. quote(dir .. "/sub/up") .. " && ln -s leak.lua "
      .. quote(dir .. "/zz-link.lua")))
    write(dir .. "/sub/other.lua", "return 1\n")
    local want = {dir .. "/leak.lua", dir .. "/sub/other.lua"}
    assert.same(want, lint.expand_paths({dir}))
    assert.same(want, lint.expand_paths({dir, dir .. "/sub",
      dir .. "/zz-link.lua", dir .. "/loop/leak.lua"}))
    local out, status = run(LINT .. " " .. quote(dir))
    assert.equal(dir .. "/leak.lua" .. LEAK_LINE
      .. "Total: 1 warning in 2 files\n", out)
    assert.equal(1, status)
    -- The same without LuaFileSystem, through find(1).
    local saved_loaded, saved_preload = package.loaded.lfs,
      package.preload.lfs
    package.loaded.lfs = nil
    package.preload.lfs = function() error("no lfs here") end
    local ok, files = pcall(lint.expand_paths, {dir, dir .. "/zz-link.lua"})
    package.loaded.lfs, package.preload.lfs = saved_loaded, saved_preload
    assert(ok, files)
    assert.same(want, files)
  end)

  it("makes a failure of the analysis that file's error and goes on",
      function()
    local rules = require "tether.lint.rules"
    local check = rules.check
    write(dir .. "/boom.lua", "return 1\n")
    rules.check = function(A)
      if A.file:find("boom%.lua$") then
        error("analysis exploded\nwith a second line")
      end
      return check(A)
    end
    local ok, report = pcall(lint.check_paths, {dir})
    rules.check = check
    assert(ok, report)
    assert.equal(1, report.errors)
    assert.equal(1, report.warnings)
    local boom = report.files[1].findings
    assert.equal(1, #boom)
    assert.equal("E012", boom[1].code)
    assert.truthy(boom[1].message:find("^cannot analyse this file: .*"
      .. "analysis exploded$"))
    assert.equal("W101", report.files[2].findings[1].code)
  end)

  it("refuses to encode a table that contains itself", function()
    local t = {a = {}}
    t.a.back = t
    assert.has_error(function() lint.json(t) end,
      "tether.lint.json: the table contains itself (at value.a.back)")
    local list = {}
    list[1] = {list}
    assert.has_error(function() lint.json(list) end,
      "tether.lint.json: the table contains itself (at value[1][1])")
    local ok, err = pcall(lint.json, _G)
    assert.falsy(ok)
    assert.truthy(tostring(err):find("^tether%.lint%.json: the table "
      .. "contains itself %(at value%.[%w_.]+%)$"), err)
    -- Shared, but not cyclic, is fine.
    local shared = {1}
    assert.equal('[\n  [\n    1\n  ],\n  [\n    1\n  ]\n]',
      lint.json({shared, shared}))
  end)

  it("keeps the keys of a table that is not a sequence", function()
    local json = require "dkjson"
    assert.same({["1"] = "a", ["2"] = "b", x = "c"},
      json.decode(lint.json({"a", "b", x = "c"})))
    assert.same({["1"] = "a", ["3"] = "c"},
      json.decode(lint.json({[1] = "a", [3] = "c"})))
    assert.equal('{\n  "1": "a",\n  "x": {\n    "true": 2.5\n  }\n}',
      lint.json({"a", x = {[true] = 2.5}}))
    assert.same({"a", "b"}, json.decode(lint.json({"a", "b"})))
    assert.has_error(function() lint.json({[1] = 1, ["1"] = 2}) end,
      "tether.lint.json: two keys are both named '1' (at value)")
    assert.has_error(function() lint.json({x = {[{}] = 1}}) end,
      "tether.lint.json: a key of type table cannot be a JSON name "
        .. "(at value.x)")
  end)
end)
