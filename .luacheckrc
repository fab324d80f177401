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
