--- tether: Go-style contexts with partial cancellation, and detached work
-- on real threads, for Lua 5.4.
--
-- The C module `tether.core` does the work; this file is the face users
-- `require "tether"`.  It re-exports the core's functions and adds the
-- Lua-level sugar (option tables, helpers) over them.

local core = require "tether.core"

local tether = {}
-- Test hooks (names starting with "_test_") stay on tether.core only.
for k, v in pairs(core) do
  if not tostring(k):match("^_test_") then tether[k] = v end
end
tether.core = core

return tether
