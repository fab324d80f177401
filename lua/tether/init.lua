--- tether: Go-style contexts with partial cancellation, and detached work
-- on real threads, for Lua 5.4.
--
-- The C module `tether.core` does the work; this file is the face users
-- `require "tether"`.  It re-exports the core's functions and adds the
-- Lua-level sugar (option tables, helpers) over them.

local core = require "tether.core"

local tether = {}
for k, v in pairs(core) do tether[k] = v end
tether.core = core

return tether
