-- luacheck's configuration for `make lint` (luacheck 1.1 run by Lua 5.4:
-- see tools/lint.sh). Every exception below carries its reason.

std = "lua54"

-- 80 columns, in Lua as in C.
max_line_length = 80

ignore = {
  -- An unused argument whose name ends in "ctx": an op, a group task, a
  -- saga step or a loader receives its context first, and a function that
  -- does not need it still names it, so that its signature reads as the
  -- API's (tether-lint's convention too: such a name is a context).
  "212/.*ctx",
}

-- The specs run under busted, which provides describe, it, assert, ...
files["spec"] = {std = "+busted"}

-- Inline exceptions, on the line they concern:
-- - `x = nil  -- luacheck: ignore 311` in the specs drops the last
--   reference to what x held before a collection (the value assigned is
--   unused by design).
-- - `-- luacheck: globals NAME` or `read globals NAME` where a worker
--   state's global, or a global the spec is about, is used on purpose.
-- Globals of a worker state are otherwise written _G.NAME.
