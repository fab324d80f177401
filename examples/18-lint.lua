-- Scenario 18: the linter flags work spawned from a handler that captures
-- the request context without detaching it, with file:line:column.
--
-- Run it with `make examples`, or after `eval "$(make -s env)"`.
-- It needs luacheck's parser (Debian package lua-check) but not the tether
-- C module: the linter reads source text and never runs it.

local lint = require "tether.lint"

-- An order handler with the three mistakes the linter knows. It is kept
-- in a string, so the repository's own lint run does not see it as code.
local BAD = [==[
local tether = require "tether"

local function handle_order(ctx, order)
  -- The confirmation mail dies with the request.
  tether.go(function()
    mailer.send(ctx, order.email, "confirmation")
  end)
  -- The audit outlives the request, but nothing bounds it.
  local actx = tether.without_cancel(ctx)
  tether.go(audit.write, actx, "order", order.id)
  -- The stock check has a timeout whose cancel function is dropped.
  local sctx = tether.with_timeout(ctx, 2)
  return stock.reserve(sctx, order.items)
end

return handle_order
]==]

-- The same handler fixed: detached work gets its own bound, and every
-- cancel function is called.
local FIXED = [==[
local tether = require "tether"

local function handle_order(ctx, order)
  local mctx, mcancel = tether.with_timeout(tether.without_cancel(ctx), 30)
  tether.go(function()
    mailer.send(mctx, order.email, "confirmation")
    mcancel()
  end)
  local actx, acancel = tether.with_timeout(tether.without_cancel(ctx), 5)
  tether.go(audit.write, actx, "order", order.id, acancel)
  local sctx, scancel = tether.with_timeout(ctx, 2)
  local ok, err = stock.reserve(sctx, order.items)
  scancel()
  return ok, err
end

return handle_order
]==]

-- Lints one source and prints what `tether-lint` would print for it.
local function show(title, src, name)
  print(title)
  local findings = lint.check_source(src, name)
  io.write(lint.format({
    files = {{file = name, findings = findings}},
    warnings = #findings, errors = 0,
  }))
  return #findings
end

local bad = show("== the handler as written", BAD, "handlers/order.lua")
print()
local fixed = show("== the handler fixed", FIXED, "handlers/order.lua")
assert(bad == 3 and fixed == 0, "unexpected findings")
