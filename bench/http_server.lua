-- http_server.lua: the tether.http server of the HTTP benchmarks
-- (bench/http.sh): GET /hello answers "hello", GET /sleep sleeps 1 ms on
-- its request context first.  It prints its address, then serves until
-- it is killed.
-- Usage: lua5.4 bench/http_server.lua [workers [mode]]
-- mode: "default" (the server's HTTP metrics are counted, as by default),
-- "bare" (metrics = false), or "traced" (metrics, and a server span per
-- request, always sampled, exported as OTLP JSON lines to /dev/null).
dofile("bench/common.lua")  -- the module's paths
local tether = require "tether"

local workers = tonumber(arg[1]) or 16
local mode = arg[2] or "default"
if mode == "traced" then
  assert(tether.trace.configure { file = "/dev/null", sampler = "always_on",
                                  queue_size = 1 << 16,
                                  schedule_delay = 0.2 })
end
local srv = tether.http.server {
  metrics = mode ~= "bare",
  pool = { name = "bench", workers = workers, queue = 1024 },
  routes = {
    ["GET /hello"] = function(_, _, res) res:send("hello\n") end,
    ["GET /sleep"] = function(ctx, _, res)
      tether.sleep(0.001, ctx)
      res:send("slept\n")
    end,
  },
}
io.write(srv:addr(), "\n")
io.flush()
tether.sleep(1e6)
