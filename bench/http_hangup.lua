-- http_hangup.lua: the time from a client's hang-up to its handler's
-- request context done, through tether.http (bench/http.sh).  A client
-- on this thread (luasocket) sends a request to a handler that waits on
-- its context; once the handler has started, the client closes its
-- socket; the handler notes tether.now() when its context is done.
-- Prints the median and the 99th percentile over 300 hang-ups.
local B = dofile("bench/common.lua")
local tether = require "tether"
local socket = require "socket"

local n = tonumber(arg[1]) or 300
local started, done = tether.chan(1), tether.chan(1)
local srv = tether.http.server {
  pool = { name = "hangup", workers = 2 },
  handler = function(ctx)
    started:send(true)
    ctx:wait(10)
    done:send { at = tether.now(),
                gone = ctx:cause() == tether.http.client_gone }
  end,
}
local port = tonumber(srv:addr():match(":(%d+)$"))
local lat = {}
for i = 1, n + 20 do
  local c = assert(socket.connect("127.0.0.1", port))
  c:send("GET / HTTP/1.1\r\nHost: b\r\n\r\n")
  assert(started:recv(tether.with_timeout(tether.background(), 10)))
  -- The handler is running and its socket is watched: hang up.
  local t0 = tether.now()
  c:close()
  local d = assert(done:recv(tether.with_timeout(tether.background(), 10)))
  assert(d.gone, "the context did not end with client_gone")
  if i > 20 then lat[#lat + 1] = (d.at - t0) * 1e6 end  -- 20 warm-ups
end
srv:close()
table.sort(lat)
B.report("tether", "http_hangup_p50_us", lat[(#lat + 1) // 2])
B.report("tether", "http_hangup_p99_us", lat[math.ceil(#lat * 0.99)])
