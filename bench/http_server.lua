-- http_server.lua: the tether.http server of the HTTP benchmarks
-- (bench/http.sh): GET /hello answers "hello", GET /sleep sleeps 1 ms on
-- its request context first.  It prints its address, then serves until
-- it is killed.  Usage: lua5.4 bench/http_server.lua [workers]
dofile("bench/common.lua")  -- the module's paths
local tether = require "tether"

local workers = tonumber(arg[1]) or 16
local srv = tether.http.server {
  pool = { name = "bench", workers = workers, queue = 1024 },
  routes = {
    ["GET /hello"] = function(ctx, req, res) res:send("hello\n") end,
    ["GET /sleep"] = function(ctx, req, res)
      tether.sleep(0.001, ctx)
      res:send("slept\n")
    end,
  },
}
io.write(srv:addr(), "\n")
io.flush()
tether.sleep(1e6)
