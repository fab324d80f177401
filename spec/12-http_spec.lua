-- HTTP: request contexts that end when the client hangs up (scenario 4),
-- the request and response API, bad input, refusals, shutdown and TLS,
-- against real clients (curl, and luasocket for raw bytes) on 127.0.0.1.
-- Each case checks what the client received and what the handlers'
-- contexts saw; latencies belong to `make bench`.
local tether = require "tether"
local socket = require "socket"
local check_invariant = require("spec.support.accounting").check
local scale = require "spec.support.scale"

local bg = tether.background()

-- Child processes run without the sanitizer runtime that `make check`
-- preloads into this one (curl hangs with ASan's preloaded).
local CURL = "env -u LD_PRELOAD curl"

-- {===================================================================
-- Clients
-- ====================================================================

local function port_of(srv)
  return tonumber(srv:addr():match(":(%d+)$"))
end

local function connect(srv)
  local c = assert(socket.connect("127.0.0.1", port_of(srv)))
  c:settimeout(10)
  return c
end

-- parse splits a response into status, headers (lower-case names) and
-- body.
local function parse(resp)
  local head, body = resp:match("^(.-)\r\n\r\n(.*)$")
  assert(head, "not an HTTP response: " .. resp:sub(1, 80))
  local h = {}
  for k, v in head:gmatch("\r\n([^:\r]+):%s*([^\r]*)") do h[k:lower()] = v end
  return tonumber(head:match("^HTTP/1%.%d (%d+)")), h, body
end

-- raw sends bytes on a new connection and returns everything the server
-- sends until it closes the connection (at most 10 s).
local function raw(srv, bytes)
  local c = connect(srv)
  c:send(bytes)
  local data, _, partial = c:receive("*a")
  c:close()
  return data or partial
end

-- read_one reads one response with a Content-Length from a kept-alive
-- connection.
local function read_one(c)
  local lines = {}
  while true do
    local l = assert(c:receive("*l"))
    if l == "" then break end
    lines[#lines + 1] = l
  end
  local resp = table.concat(lines, "\r\n") .. "\r\n\r\n"
  local len = tonumber(resp:match("[Cc]ontent%-[Ll]ength:%s*(%d+)")) or 0
  if len > 0 then resp = resp .. assert(c:receive(len)) end
  return parse(resp)
end

-- curl runs curl with 'args' and returns its output and exit status.
local function curl(args)
  local p = io.popen(CURL .. " -s " .. args .. " 2>/dev/null; echo \"#rc=$?\"")
  local out = p:read("a")
  p:close()
  local body, rc = out:match("^(.*)#rc=(%d+)\n$")
  return body, tonumber(rc)
end

local function url(srv, path)
  return "'http://" .. srv:addr() .. path .. "'"
end

-- eventually polls 'cond' for at most 10 s.
local function eventually(cond, what)
  local deadline = tether.now() + 10
  while not cond() do
    assert(tether.now() < deadline, "timed out waiting for " .. what)
    tether.sleep(0.005)
  end
end

-- idle waits until the server has no request left in flight.
local function idle(srv)
  eventually(function()
    local s = srv:stats()
    return s.active == 0 and s.suspended == 0 and s.handlers == 0
  end, "the server to be idle")
end

-- run_lua runs a Lua program in a fresh lua5.4 process with the module
-- on its path and returns what it wrote on stdout, then on stderr.
local function run_lua(src)
  local f, e = os.tmpname(), os.tmpname()
  local h = assert(io.open(f, "w"))
  h:write('package.path = "./lua/?.lua;./lua/?/init.lua;" .. package.path\n',
          'package.cpath = "./build/?.so;" .. package.cpath\n', src)
  h:close()
  local p = io.popen("lua5.4 " .. f .. " 2>" .. e)
  local out = p:read("a")
  p:close()
  h = assert(io.open(e))
  local err = h:read("a")
  h:close()
  os.remove(f)
  os.remove(e)
  return out, err
end

-- }===================================================================

describe("tether.http", function()
  local audits
  before_each(function()
    audits = tether.pool { name = "audit", workers = 2 }
  end)
  after_each(function()
    assert(audits:drain(tether.with_timeout(bg, 10)))
    -- Drained pools and closed servers are freed now, so that their
    -- threads are joined before the process ends.
    audits = nil
    collectgarbage()
    collectgarbage()
  end)

  -- {=================================================================
  -- Scenario 4
  -- ==================================================================

  -- The audit runs detached: its context keeps the request's values but
  -- not its cancellation.
  local function audit(ctx, shape, out)
    tether.sleep(0.02)
    out:send { shape = shape, request_id = ctx:value("request_id"),
               err = ctx:err() }
  end

  it("scenario 4 (a): a handler answers at once and audits detached; "
     .. "the request context ends, the audit completes", function()
    local seen, audited = tether.chan(4), tether.chan(4)
    local srv = tether.http.server {
      handler = function(ctx, req, res)
        res:send("ok\n")
        assert(audits:submit(ctx, "audit", audit, "fast", audited))
        seen:send { id = req.id, ctx = ctx, err = ctx:err() }
      end,
    }
    local body, rc = curl(url(srv, "/fast"))
    assert.equal(0, rc)
    assert.equal("ok\n", body)
    local s = seen:recv()
    assert.is_nil(s.err)                 -- live while the handler ran
    assert.is_true(s.ctx:wait(10))       -- over once it returned
    assert.equal(tether.canceled, s.ctx:err())
    assert.equal(tether.canceled, s.ctx:cause())
    assert.equal(s.id, s.ctx:value("request_id"))
    local a = audited:recv(tether.with_timeout(bg, 10))
    assert.equal("fast", a.shape)
    assert.equal(s.id, a.request_id)
    assert.is_nil(a.err)
    srv:close()
    assert(audits:drain(tether.with_timeout(bg, 10)))
    local st = audits:stats()
    assert.equal(1, st.completed)
    check_invariant(st)
  end)

  it("scenario 4 (b): curl --max-time 0.1 hangs up on a slow handler; "
     .. "its context is canceled with client_gone, the audit completes",
     function()
    local seen, audited = tether.chan(4), tether.chan(4)
    local srv = tether.http.server {
      handler = function(ctx, req, res)
        assert(audits:submit(ctx, "audit", audit, "slow", audited))
        local done = ctx:wait(10)
        seen:send { id = req.id, done = done, err = ctx:err(),
                    cause = ctx:cause(),
                    gone = ctx:cause() == tether.http.client_gone }
        res:send("too late\n")
      end,
    }
    local body, rc = curl("--max-time 0.1 " .. url(srv, "/slow"))
    assert.equal(28, rc)                 -- curl's "operation timed out"
    assert.equal("", body)
    local s = seen:recv(tether.with_timeout(bg, 10))
    assert.is_true(s.done)
    assert.equal(tether.canceled, s.err)
    assert.equal(tether.http.client_gone, s.cause)
    assert.is_true(s.gone)               -- the same sentinel in the worker
    assert.equal("client_gone", s.cause.code)
    assert.equal("client gone", tostring(s.cause))
    local a = audited:recv(tether.with_timeout(bg, 10))
    assert.equal("slow", a.shape)
    assert.equal(s.id, a.request_id)
    assert.is_nil(a.err)
    idle(srv)
    local st = srv:stats()
    assert.equal(1, st.client_gone)
    assert.equal(1, st.dispatched)
    srv:close()
  end)

  it("many concurrent hang-ups leave no suspended request behind",
     function()
    local n = scale.n(40, 8)
    local seen = tether.chan(n)
    local srv = tether.http.server {
      pool = { workers = 4, queue = n },
      handler = function(ctx)
        ctx:wait(10)
        seen:send(ctx:cause() == tether.http.client_gone)
      end,
    }
    -- n clients send their requests; four handlers run, the others wait
    -- in the pool's queue; then every client hangs up at once.
    local clients = {}
    for i = 1, n do
      clients[i] = connect(srv)
      clients[i]:send("GET /" .. i .. " HTTP/1.1\r\nHost: t\r\n\r\n")
    end
    eventually(function() return srv:stats().suspended == n end,
               n .. " suspended requests")
    for i = 1, n do clients[i]:close() end
    for _ = 1, n do
      assert.is_true(seen:recv(tether.with_timeout(bg, 10)))
    end
    idle(srv)
    local st = srv:stats()
    assert.equal(n, st.requests)
    assert.equal(n, st.client_gone)
    assert.equal(0, st.suspended)
    srv:close()
  end)

  it("concurrent curl hang-ups: every request the server saw ends with "
     .. "client_gone", function()
    local n = scale.n(20, 4)
    local seen = tether.chan(n)
    local srv = tether.http.server {
      pool = { workers = 4, queue = n },
      handler = function(ctx)
        ctx:wait(10)
        seen:send(ctx:cause() == tether.http.client_gone)
      end,
    }
    assert(os.execute(("for i in $(seq %d); do %s -s --max-time 0.5 "
      .. "%s >/dev/null & done; wait"):format(n, CURL, url(srv, "/"))))
    idle(srv)
    local st = srv:stats()
    -- A curl that gave up before it connected sent nothing at all.
    assert.is_true(st.requests > 0)
    assert.equal(st.requests, st.dispatched)
    assert.equal(st.requests, st.client_gone)
    assert.equal(st.dispatched, seen:len())
    for _ = 1, st.dispatched do assert.is_true(seen:recv()) end
    assert.equal(0, st.suspended)
    srv:close()
  end)

  -- }=================================================================

  -- {=================================================================
  -- Requests and responses
  -- ==================================================================

  it("gives the handler the request, and sends its status, headers and "
     .. "body", function()
    local seen = tether.chan(4)
    local srv = tether.http.server {
      handler = function(ctx, req, res)
        seen:send(req)
        res:status(201):header("X-Reply", "yes")
        res:send("made " .. req.body)
      end,
    }
    local c = connect(srv)
    c:send("POST /things%20x?a=1&b=two&c&a=3 HTTP/1.1\r\nHost: t\r\n"
      .. "X-Mixed-Case: A\r\nX-Dup: 1\r\nX-Dup: 2\r\n"
      .. "Content-Length: 5\r\n\r\nhello")
    local status, h, body = read_one(c)
    assert.equal(201, status)
    assert.equal("yes", h["x-reply"])
    assert.equal("made hello", body)
    local req = seen:recv()
    assert.equal("POST", req.method)
    assert.equal("/things x", req.path)
    assert.same({ a = "1", b = "two", c = "" }, req.query)
    assert.equal("A", req.headers["x-mixed-case"])
    assert.equal("1, 2", req.headers["x-dup"])
    assert.equal("t", req.headers.host)
    assert.is_nil(req.headers["X-Mixed-Case"])
    assert.equal("hello", req.body)
    assert.matches("^127%.0%.0%.1:%d+$", req.remote)
    assert.matches("^%x+%-%d+$", req.id)
    -- Keep-alive: a second request on the same connection, then HEAD.
    c:send("GET /again HTTP/1.1\r\nHost: t\r\n\r\n")
    status, h, body = read_one(c)
    assert.equal(201, status)
    assert.equal("made ", body)
    assert.equal("yes", h["x-reply"])
    local req2 = seen:recv()
    assert.equal(req.remote, req2.remote)
    assert.are_not.equal(req.id, req2.id)
    c:send("HEAD /again HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    local rest = c:receive("*a")
    c:close()
    status, h, body = parse(rest)
    assert.equal(201, status)
    assert.equal("5", h["content-length"])
    assert.equal("", body)
    srv:close()
  end)

  it("a closed server that is collected leaves no thread behind",
     function()
    local function serve_once()
      local srv = tether.http.server {
        handler = function(ctx, _, res) res:send("x") end,
      }
      assert.equal("x", (curl(url(srv, "/"))))
      srv:close()
      return srv:stats().requests
    end
    -- The first round starts the engine's own threads (timer, executor),
    -- which stay.
    serve_once()
    collectgarbage()
    collectgarbage()
    local before = tether.threads()
    assert.equal(1, serve_once())
    eventually(function()
      collectgarbage()
      return tether.threads() <= before
    end, "the server's threads to end")
  end)

  it("answers 200 with an empty body when the handler sends nothing",
     function()
    local srv = tether.http.server {
      handler = function(ctx, _, res) res:header("X-Only", "1") end,
    }
    local status, h, body = parse(raw(srv,
      "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"))
    assert.equal(200, status)
    assert.equal("0", h["content-length"])
    assert.equal("1", h["x-only"])
    assert.equal("", body)
    srv:close()
  end)

  it("streams a chunked response with res:write and res:finish",
     function()
    local srv = tether.http.server {
      handler = function(ctx, _, res)
        res:header("Content-Type", "text/plain")
        for i = 1, 3 do assert(res:write("part " .. i .. "\n")) end
        assert(res:finish())
      end,
    }
    local body, rc = curl("-i " .. url(srv, "/"))
    assert.equal(0, rc)
    assert.matches("Transfer%-Encoding: chunked", body)
    assert.matches("\r\n\r\npart 1\npart 2\npart 3\n$", body)
    srv:close()
  end)

  it("refuses CR and LF in header values, and misuse of res", function()
    local seen = tether.chan(1)
    local srv = tether.http.server {
      handler = function(ctx, _, res)
        local r = {}
        r.crlf = select(2, pcall(function()
          res:header("X-Evil", "a\r\nSet-Cookie: x=1") end))
        r.name = select(2, pcall(function() res:header("Bad Name", "v") end))
        r.status = select(2, pcall(function() res:status(99) end))
        r.length = select(2, pcall(function()
          res:header("Content-Length", "9") end))
        res:send("ok")
        r.again = select(2, pcall(function() res:send("twice") end))
        r.late_status = select(2, pcall(function() res:status(500) end))
        r.late_header = select(2, pcall(function()
          res:header("X-Late", "1") end))
        seen:send(r)
      end,
    }
    local status, h, body = parse(raw(srv,
      "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"))
    assert.equal(200, status)
    assert.equal("ok", body)
    assert.is_nil(h["x-evil"])
    assert.is_nil(h["set-cookie"])
    local r = seen:recv()
    assert.matches("bad argument #2 to 'header' %(CR, LF or NUL in a "
      .. "header value%)", r.crlf)
    assert.matches("bad argument #1 to 'header' %(invalid header name "
      .. "'Bad Name'%)", r.name)
    assert.matches("bad argument #1 to 'status' %(status code 200..599 "
      .. "expected%)", r.status)
    assert.matches("header set by the server", r.length)
    assert.matches("http: send after the response was sent", r.again)
    assert.matches("http: status after the response was sent",
                   r.late_status)
    assert.matches("http: header after the response was sent",
                   r.late_header)
    srv:close()
  end)

  it("routes by method and path: 404, 405 with Allow, HEAD by GET",
     function()
    local srv = tether.http.server {
      routes = {
        ["GET /a"] = function(ctx, _, res) res:send("get a") end,
        ["POST /a"] = function(ctx, _, res) res:send("post a") end,
        ["/any"] = function(ctx, req, res) res:send(req.method) end,
      },
    }
    assert.equal("get a", (curl(url(srv, "/a"))))
    assert.equal("post a", (curl("-X POST " .. url(srv, "/a"))))
    assert.equal("DELETE", (curl("-X DELETE " .. url(srv, "/any"))))
    local status = parse(raw(srv, "GET /nope HTTP/1.1\r\nHost: t\r\n"
      .. "Connection: close\r\n\r\n"))
    assert.equal(404, status)
    local h
    status, h = parse(raw(srv, "PUT /a HTTP/1.1\r\nHost: t\r\n"
      .. "Content-Length: 0\r\nConnection: close\r\n\r\n"))
    assert.equal(405, status)
    assert.truthy(h.allow:find("GET", 1, true))
    assert.truthy(h.allow:find("POST", 1, true))
    status, h = parse(raw(srv, "HEAD /a HTTP/1.1\r\nHost: t\r\n"
      .. "Connection: close\r\n\r\n"))
    assert.equal(200, status)
    assert.equal("5", h["content-length"])
    srv:close()
  end)

  it("answers a handler error with 500 and the request id alone; the log "
     .. "line keeps Authorization and Cookie out", function()
    local resp, log = run_lua([[
      local tether = require "tether"
      local srv = tether.http.server {
        handler = function(ctx, req, res)
          error("refused " .. req.headers.authorization .. " / "
                .. req.headers.cookie)
        end,
      }
      local p = io.popen("env -u LD_PRELOAD curl -s -i "
        .. "-H 'Authorization: Bearer s3cr3t-t0ken'"
        .. " -H 'Cookie: session=abcdef123456; theme=dark'"
        .. " http://" .. srv:addr() .. "/boom")
      io.write(p:read("a"))
      p:close()
      srv:close()
    ]])
    local status, h, body = parse(resp)
    assert.equal(500, status)
    local id = body:match("^(%x+%-%d+)\n$")
    assert.truthy(id, body)
    assert.equal("text/plain; charset=utf-8", h["content-type"])
    local line = log:match('({"ts":[^\n]*"http handler failed"[^\n]*})')
    assert(line, log)
    local rec = require("dkjson").decode(line)
    assert.equal("error", rec.level)
    assert.equal(id, rec.request_id)
    assert.equal("GET", rec.method)
    assert.equal("/boom", rec.path)
    assert.equal(500, rec.status)
    assert.matches("refused", rec.error)
    assert.is_nil(log:find("s3cr3t-t0ken", 1, true))
    assert.is_nil(log:find("abcdef123456", 1, true))
    assert.matches("%[redacted%]", rec.error)
  end)

  -- }=================================================================

  -- {=================================================================
  -- Request contexts
  -- ==================================================================

  it("ends the request context with deadline_exceeded after "
     .. "request_timeout", function()
    local seen = tether.chan(1)
    local srv = tether.http.server {
      request_timeout = 0.05,
      handler = function(ctx, _, res)
        ctx:wait(10)
        seen:send { err = ctx:err(), deadline = ctx:deadline() }
        res:send("late")
      end,
    }
    assert.equal("late", (curl(url(srv, "/"))))
    local s = seen:recv()
    assert.equal(tether.deadline_exceeded, s.err)
    assert.is_number(s.deadline)
    srv:close()
  end)

  it("close() stops at once and cancels in-flight requests with its "
     .. "cause", function()
    local started, seen = tether.chan(1), tether.chan(1)
    local srv = tether.http.server {
      handler = function(ctx, _, res)
        started:send(true)
        ctx:wait(10)
        seen:send { cause = ctx:cause(), sent = { res:send("x") } }
      end,
    }
    local c = connect(srv)
    c:send("GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    started:recv()
    srv:close("maintenance")
    local s = seen:recv(tether.with_timeout(bg, 10))
    assert.equal("maintenance", s.cause)
    assert.is_nil(s.sent[1])
    assert.equal("closed", s.sent[2].code)
    local data, _, partial = c:receive("*a")
    assert.equal("", data or partial)    -- closed with no answer
    c:close()
    local _, rc = curl(url(srv, "/"))
    assert.equal(7, rc)                  -- curl: could not connect
  end)

  it("shutdown(ctx) stops accepting and drains in-flight requests",
     function()
    local started = tether.chan(1)
    local srv = tether.http.server {
      handler = function(ctx, _, res)
        started:send(true)
        tether.sleep(0.1)
        res:send("drained " .. tostring(ctx:err()))
      end,
    }
    local p = io.popen(CURL .. " -s -i " .. url(srv, "/"))
    started:recv(tether.with_timeout(bg, 10))
    assert.is_true(srv:shutdown(tether.with_timeout(bg, 10)))
    local status, h, body = parse(p:read("a"))
    p:close()
    assert.equal(200, status)
    assert.equal("drained nil", body)
    assert.equal("close", h.connection)
    local _, rc = curl(url(srv, "/"))
    assert.equal(7, rc)
  end)

  it("shutdown(ctx) serves a request that arrived before it, even if "
     .. "its body was still on its way", function()
    local srv = tether.http.server {
      handler = function(ctx, req, res) res:send("got " .. req.body) end,
    }
    local c = connect(srv)
    c:send("POST /orders HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n"
           .. "Expect: 100-continue\r\n\r\n")
    -- The server has the request: it asks for the body.
    assert.equal("HTTP/1.1 100 Continue", c:receive("*l"))
    assert.equal("", c:receive("*l"))
    c:send("half-")
    -- A context already done: shutdown stops accepting and returns.
    local done, cancel = tether.with_cancel(bg)
    cancel()
    local ok, err = srv:shutdown(done)
    assert.is_nil(ok)
    assert.equal(tether.canceled, err)
    local _, rc = curl(url(srv, "/"))
    assert.equal(7, rc)                  -- refused
    c:send("rest!")
    local data, _, partial = c:receive("*a")
    c:close()
    local status, h, body = parse(data or partial)
    assert.equal(200, status)
    assert.equal("got half-rest!", body)
    assert.equal("close", h.connection)
    assert.is_true(srv:shutdown(tether.with_timeout(bg, 10)))
  end)

  it("shutdown(ctx) returns the context's error when it ends first",
     function()
    local started, gate = tether.chan(1), tether.chan(1)
    local srv = tether.http.server {
      handler = function(ctx)
        started:send(true)
        gate:recv(tether.with_timeout(bg, 10))
      end,
    }
    local p = io.popen(CURL .. " -s " .. url(srv, "/"))
    started:recv()
    local ok, err = srv:shutdown(tether.with_timeout(bg, 0.05))
    assert.is_nil(ok)
    assert.equal(tether.deadline_exceeded, err)
    gate:send(true)
    idle(srv)
    srv:close()
    p:close()
  end)

  it("cancels request contexts when the 'shutdown' context ends",
     function()
    local root, stop = tether.with_cancel_cause(bg)
    local started, seen = tether.chan(1), tether.chan(1)
    local srv = tether.http.server {
      shutdown = root,
      handler = function(ctx)
        started:send(true)
        ctx:wait(10)
        seen:send(ctx:cause())
      end,
    }
    local p = io.popen(CURL .. " -s " .. url(srv, "/"))
    started:recv()
    stop("deploy")
    assert.equal("deploy", seen:recv(tether.with_timeout(bg, 10)))
    p:close()
    eventually(function() return select(2, curl(url(srv, "/"))) == 7 end,
               "the server to close")
  end)

  -- }=================================================================

  -- {=================================================================
  -- Bad input and refusals
  -- ==================================================================

  describe("bad requests over a raw socket", function()
    local srv, calls
    before_each(function()
      calls = tether.chan(64)
      srv = tether.http.server {
        max_body = 1024, idle_timeout = 1,
        handler = function(ctx, req, res)
          calls:send(req.path)
          res:send("handled " .. #req.body)
        end,
      }
    end)
    after_each(function()
      srv:close()
      assert.equal(0, calls:len(), "a bad request reached a handler")
    end)

    it("closes a truncated request line after the idle timeout",
       function()
      local t0 = tether.now()
      assert.equal("", raw(srv, "GET /trunc"))
      assert.is_true(tether.now() - t0 >= 0.9)
      assert.equal(0, srv:stats().dispatched)
    end)

    it("answers a 100 KB header with an error and closes", function()
      local resp = raw(srv, "GET / HTTP/1.1\r\nHost: t\r\nX-Big: "
        .. ("a"):rep(100 * 1024) .. "\r\n\r\n")
      local status = parse(resp)
      assert.is_true(status == 431 or status == 413, tostring(status))
    end)

    it("answers a malformed header and a request without Host with 400",
       function()
      assert.equal(400, (parse(raw(srv, "GET / HTTP/1.1\r\nHost: t\r\n"
        .. "Bad Header\r\n\r\n"))))
      assert.equal(400, (parse(raw(srv, "GET / HTTP/1.1\r\n\r\n"))))
      assert.equal(505, (parse(raw(srv, "GET / HTTP/9.1\r\nHost: t\r\n"
        .. "\r\n"))))
    end)

    it("answers a malformed Content-Length with 400", function()
      local status = parse(raw(srv, "POST / HTTP/1.1\r\nHost: t\r\n"
        .. "Content-Length: ten\r\n\r\n0123456789"))
      assert.equal(400, status)
    end)

    it("answers Content-Length with Transfer-Encoding with 400",
       function()
      local status = parse(raw(srv, "POST / HTTP/1.1\r\nHost: t\r\n"
        .. "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        .. "5\r\nhello\r\n0\r\n\r\n"))
      assert.equal(400, status)
    end)

    it("never dispatches a body shorter than its Content-Length",
       function()
      local c = connect(srv)
      c:send("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n"
        .. "only ten b")
      c:shutdown("send")
      local data, _, partial = c:receive("*a")
      c:close()
      assert.equal("", data or partial)
      eventually(function() return srv:stats().active == 0 end,
                 "the request to end")
      assert.equal(0, srv:stats().dispatched)
    end)

    it("answers a body over max_body with 413, declared or chunked",
       function()
      local status = parse(raw(srv, "POST / HTTP/1.1\r\nHost: t\r\n"
        .. "Content-Length: 2000\r\nConnection: close\r\n\r\n"))
      assert.equal(413, status)
      local chunk = ("x"):rep(600)
      status = parse(raw(srv, "POST / HTTP/1.1\r\nHost: t\r\n"
        .. "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        .. "258\r\n" .. chunk .. "\r\n258\r\n" .. chunk .. "\r\n0\r\n\r\n"))
      assert.equal(413, status)
      -- At the limit, the handler runs.
      local _, body
      status, _, body = parse(raw(srv, "POST /ok HTTP/1.1\r\nHost: t\r\n"
        .. "Content-Length: 1024\r\nConnection: close\r\n\r\n"
        .. ("y"):rep(1024)))
      assert.equal(200, status)
      assert.equal("handled 1024", body)
      assert.equal("/ok", calls:recv())
    end)
  end)

  it("answers 503 with Retry-After when the pool is full", function()
    local started, gate = tether.chan(2), tether.chan(2)
    local pool = tether.pool { name = "tiny", workers = 1, queue = 1 }
    local srv = tether.http.server {
      pool = pool,
      handler = function(ctx, req, res)
        started:send(req.path)
        gate:recv(tether.with_timeout(bg, 10))
        res:send("served " .. req.path)
      end,
    }
    local c1, c2 = connect(srv), connect(srv)
    c1:send("GET /1 HTTP/1.1\r\nHost: t\r\n\r\n")
    assert.equal("/1", started:recv())
    c2:send("GET /2 HTTP/1.1\r\nHost: t\r\n\r\n")   -- queued behind /1
    eventually(function() return srv:stats().suspended == 2 end,
               "two requests in flight")
    local status, h = parse(raw(srv,
      "GET /3 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"))
    assert.equal(503, status)
    assert.equal("1", h["retry-after"])
    assert.equal(1, srv:stats().rejected)
    gate:send(true)
    gate:send(true)
    local _, body
    status, _, body = read_one(c1)
    assert.equal(200, status)
    assert.equal("served /1", body)
    status, _, body = read_one(c2)
    assert.equal(200, status)
    assert.equal("served /2", body)
    c1:close()
    c2:close()
    srv:close()
    assert(pool:drain(tether.with_timeout(bg, 10)))
    local st = pool:stats()
    assert.equal(2, st.completed)
    assert.equal(1, st.rejected)
    check_invariant(st)
  end)

  it("answers 503 beyond max_inflight requests waiting for a response",
     function()
    local started, gate = tether.chan(1), tether.chan(1)
    local srv = tether.http.server {
      max_inflight = 1,
      handler = function(ctx)
        started:send(true)
        gate:recv(tether.with_timeout(bg, 10))
      end,
    }
    local c = connect(srv)
    c:send("GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    started:recv()
    local status, h = parse(raw(srv,
      "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"))
    assert.equal(503, status)
    assert.equal("1", h["retry-after"])
    gate:send(true)
    assert.equal(200, (read_one(c)))
    c:close()
    srv:close()
  end)

  -- }=================================================================

  -- {=================================================================
  -- Options and TLS
  -- ==================================================================

  it("binds loopback by default, port 0 picks a free port, and options "
     .. "are strict", function()
    local function h() end
    local srv = tether.http.server { handler = h }
    assert.matches("^127%.0%.0%.1:%d+$", srv:addr())
    assert.is_true(port_of(srv) > 0)
    assert.equal("tether.http", "tether." .. "http")
    assert.has_error(function() tether.http.server { handlr = h } end,
      "bad argument #1 to 'server' (unknown option 'handlr'; did you mean "
      .. "'handler'?)")
    assert.has_error(function() tether.http.server {} end,
      "bad argument #1 to 'server' (a 'handler' or 'routes' is needed)")
    assert.has_error(function()
      tether.http.server { handler = h, routes = { ["/"] = h } }
    end, "bad argument #1 to 'server' ('handler' and 'routes' exclude each "
      .. "other)")
    assert.has_error(function()
      tether.http.server { handler = h, pool = { worker = 2 } }
    end, "bad argument #1 to 'server' (field 'pool' unknown option "
      .. "'worker'; did you mean 'workers'?)")
    assert.has_error(function()
      tether.http.server { handler = h, addr = "nowhere" }
    end, "bad argument #1 to 'server' (bad address 'nowhere' (expected "
      .. "'HOST:PORT'))")
    assert.has_error(function()
      tether.http.server { handler = h, tls = { cert = "c.pem" } }
    end, "bad argument #1 to 'server' (field 'tls' needs both 'cert' and "
      .. "'key')")
    assert.has_error(function()
      tether.http.server { handler = h, routes = nil, max_body = -1 }
    end, "bad argument #1 to 'server' (field 'max_body' must be between 1 "
      .. "and 1073741824)")
    assert.has_error(function()
      tether.http.server { handler = h, max_body = 10.5 }
    end, "bad argument #1 to 'server' (field 'max_body' must be an "
      .. "integer, got number)")
    assert.has_error(function()
      tether.http.server { handler = h, max_body = math.huge }
    end, "bad argument #1 to 'server' (field 'max_body' must be an "
      .. "integer, got number)")
    local ok, err = pcall(tether.http.server,
                          { handler = h, addr = srv:addr() })
    assert.is_false(ok)
    assert.matches("cannot serve on '127%.0%.0%.1:%d+'", err)
    srv:close()
  end)

  it("serves HTTPS with a self-signed certificate (tls = {cert, key})",
     function()
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. dir))
    assert(os.execute(("env -u LD_PRELOAD openssl req -x509 -newkey "
      .. "rsa:2048 -nodes -days 1 -subj /CN=localhost -keyout %s/key.pem "
      .. "-out %s/cert.pem "
      .. ">/dev/null 2>&1"):format(dir, dir)))
    local seen = tether.chan(1)
    local srv = tether.http.server {
      tls = { cert = dir .. "/cert.pem", key = dir .. "/key.pem" },
      routes = {
        ["/s"] = function(ctx, req, res) res:send("secret " .. req.path) end,
        ["/slow"] = function(ctx)
          ctx:wait(10)
          seen:send(ctx:cause() == tether.http.client_gone)
        end,
      },
    }
    local body, rc = curl("-k 'https://" .. srv:addr() .. "/s'")
    assert.equal(0, rc)
    assert.equal("secret /s", body)
    -- A hang-up is seen through TLS too.
    rc = select(2, curl("-k --max-time 1 'https://" .. srv:addr() .. "/slow'"))
    assert.equal(28, rc)
    assert.is_true(seen:recv(tether.with_timeout(bg, 10)))
    -- Plain HTTP to a TLS server gets no answer.
    rc = select(2, curl("--max-time 5 " .. url(srv, "/s")))
    assert.are_not.equal(0, rc)
    srv:close()
    os.execute("rm -rf " .. dir)
  end)

  -- }=================================================================
end)
