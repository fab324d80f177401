-- A small HTTP/1.1 server on luasocket for specs: it stands in for the
-- OTLP collector that tether's exporter POSTs to and for the /metrics
-- endpoint a Prometheus server scrapes.  It runs in the spec's own
-- thread: the spec calls serve() in a bounded loop while the other side
-- (an exporter thread, a child process, a Prometheus server) talks to it.
--
-- Each connection carries one request and is closed after the answer
-- ("Connection: close").  Request bodies come by Content-Length or
-- chunked; "Expect: 100-continue" is answered.
local socket = require "socket"

local M = {}
M.__index = M

-- M.listen binds a free port on 127.0.0.1.
function M.listen()
  local s = assert(socket.bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:settimeout(0.05)
  return setmetatable({sock = s, port = tonumber(port)}, M)
end

function M:url(path)
  return ("http://127.0.0.1:%d%s"):format(self.port, path or "")
end

function M:close()
  self.sock:close()
end

local function read_chunked(c)
  local parts = {}
  while true do
    local line = assert(c:receive("*l"))
    local n = tonumber(line:match("^%x+"), 16)
    assert(n, "bad chunk size: " .. line)
    if n == 0 then
      repeat line = assert(c:receive("*l")) until line == ""
      return table.concat(parts)
    end
    parts[#parts + 1] = assert(c:receive(n))
    assert(c:receive("*l"))
  end
end

-- read_request reads one request: {method, path, headers (lower-case
-- names), body}, or nil and the error.
local function read_request(c)
  local line, err = c:receive("*l")
  if not line then return nil, err end
  local method, path = line:match("^(%u+) (%S+) HTTP/1%.%d$")
  if not method then return nil, "bad request line: " .. line end
  local h = {}
  while true do
    local l = assert(c:receive("*l"))
    if l == "" then break end
    local k, v = l:match("^([^:]+):%s*(.-)%s*$")
    if k then h[k:lower()] = v end
  end
  if h.expect and h.expect:lower() == "100-continue" then
    c:send("HTTP/1.1 100 Continue\r\n\r\n")
  end
  local body = ""
  if h["transfer-encoding"] and h["transfer-encoding"]:lower() == "chunked"
  then
    body = read_chunked(c)
  elseif h["content-length"] then
    local n = assert(tonumber(h["content-length"]))
    body = n > 0 and assert(c:receive(n)) or ""
  end
  return {method = method, path = path, headers = h, body = body}
end

-- M:serve accepts connections for at most 'wait' seconds (default
-- 0.05) and answers each request with handler(req) -> status, body,
-- content type.  It returns how many requests it served.
function M:serve(handler, wait)
  local deadline = socket.gettime() + (wait or 0.05)
  local served = 0
  repeat
    self.sock:settimeout(math.max(0, deadline - socket.gettime()))
    local c = self.sock:accept()
    if c then
      c:settimeout(10)
      local req = read_request(c)
      if req then
        local status, body, ctype = handler(req)
        body = body or ""
        c:send(("HTTP/1.1 %d %s\r\nContent-Type: %s\r\n"
                .. "Content-Length: %d\r\nConnection: close\r\n\r\n%s")
               :format(status, status == 200 and "OK" or "Error",
                       ctype or "text/plain", #body, body))
        served = served + 1
      end
      c:close()
    end
  until socket.gettime() >= deadline
  return served
end

-- M:serve_until serves until done() is true or 'timeout' seconds pass;
-- it returns done().
function M:serve_until(handler, done, timeout)
  local deadline = socket.gettime() + timeout
  while not done() and socket.gettime() < deadline do
    self:serve(handler, 0.05)
  end
  return done()
end

return M
