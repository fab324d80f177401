-- luahttp_server.lua: the lua-http peer of the HTTP benchmarks
-- (bench/http.sh), one process on cqueues: GET /hello answers "hello",
-- GET /sleep sleeps 1 ms first.  lua-http's files sit under the 5.1
-- tree (TOOLCHAIN.md section 10).  Usage: lua5.4 bench/luahttp_server.lua
-- PORT
package.path = "/usr/share/lua/5.1/?.lua;/usr/share/lua/5.1/?/init.lua;"
               .. package.path
local cqueues = require "cqueues"
local server = require "http.server"
local headers = require "http.headers"

local port = assert(tonumber(arg[1]), "usage: luahttp_server.lua PORT")
local s = assert(server.listen {
  host = "127.0.0.1", port = port, reuseaddr = true,
  onstream = function(_, st)
    local req = assert(st:get_headers())
    local path = req:get(":path")
    local body = "hello\n"
    if path == "/sleep" then
      cqueues.sleep(0.001)
      body = "slept\n"
    end
    local h = headers.new()
    h:append(":status", "200")
    h:append("content-type", "text/plain")
    assert(st:write_headers(h, false))
    assert(st:write_chunk(body, true))
  end,
  -- A client that goes away mid-response (wrk stopping) is no error of
  -- the server's.
  onerror = function() end,
})
assert(s:listen())
io.write("127.0.0.1:", port, "\n")
io.flush()
assert(s:loop())
