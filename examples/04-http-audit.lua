-- Scenario 4: audit after the response.  An HTTP handler's context is
-- its request's: it ends when the handler returns, or earlier when the
-- client hangs up.  Work that must outlive the request is detached by
-- submitting it to a pool, and completes either way.
--
--   (a) GET /fast answers at once, submits its audit and returns: the
--       request context ends (canceled), the audit goes on and completes;
--   (b) GET /slow submits its audit and waits on its context; the client
--       (curl --max-time 0.1) hangs up; the request context is canceled
--       with tether.http.client_gone, and the audit still completes.
--
-- The server listens on a free port of 127.0.0.1, runs both shapes with
-- curl (or a plain socket client when curl is missing), and stops.
--
-- Run as a service, it serves until its run context ends:
--
--   bin/tether run examples/04-http-audit.lua --serve
--
-- After the two shapes it keeps serving (POST /orders answers at once and
-- audits the order detached) until SIGINT or SIGTERM ends
-- tether.run_context().  Then it shuts the server down as Go's Shutdown
-- does: no new connection is accepted, requests in flight complete (and
-- their audits), and `tether run` drains the pools and exits with 130 or
-- 143.
local tether = require "tether"

local serve = select(1, ...) == "--serve"
if serve then io.stdout:setvbuf("line") end

local audits = tether.pool { name = "audit", workers = 2 }
local seen = tether.chan(8)      -- what each handler's context saw
local audited = tether.chan(8)   -- each audit, once it completed

-- audit runs detached: its context keeps the request's values (the
-- request id) but not its cancellation.  Audits of the two shapes report
-- to 'out'; those of orders say so on stdout.
local function audit(ctx, shape, out)
  tether.sleep(0.05)   -- the audit's own work, after the response
  if out then
    out:send { shape = shape, request_id = ctx:value("request_id"),
               err = ctx:err() }
  else
    print(("audit of %s request %s completed"):format(shape,
                                                      ctx:value("request_id")))
  end
end

local srv = tether.http.server {
  pool = { name = "handlers", workers = 4 },
  routes = {
    ["GET /fast"] = function(ctx, req, res)
      res:send("ok\n")
      assert(audits:submit(ctx, "audit", audit, "fast", audited))
      seen:send { shape = "fast", id = req.id, ctx = ctx }
    end,
    ["GET /slow"] = function(ctx, req, res)
      assert(audits:submit(ctx, "audit", audit, "slow", audited))
      ctx:wait(10)       -- ends when the client hangs up
      seen:send { shape = "slow", id = req.id, ctx = ctx,
                  at = tether.now() }
      res:send("too late\n")
    end,
    ["POST /orders"] = function(ctx, req, res)
      res:send(("order of %d bytes accepted\n"):format(#req.body))
      assert(audits:submit(ctx, "audit", audit, "order"))
    end,
  },
}
local base = "http://" .. srv:addr()
print("serving on " .. base)

-- get fetches a path with curl, or over a plain socket when curl is
-- missing, giving up after 'max_time' seconds; it returns the body (nil
-- if the client gave up).
local have_curl = os.execute("command -v curl >/dev/null 2>&1")
local function get(path, max_time)
  if have_curl then
    local p = io.popen(("curl -s --max-time %g %s%s"):format(max_time, base,
                                                             path))
    local body = p:read("a")
    local ok = p:close()
    return ok and body or nil
  end
  local socket = require "socket"
  local c = assert(socket.connect("127.0.0.1", tonumber(srv:addr():match(
    ":(%d+)$"))))
  c:settimeout(max_time)
  c:send("GET " .. path .. " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
  local resp = c:receive("*a")
  c:close()
  return resp and resp:match("\r\n\r\n(.*)$") or nil
end

-- (a) answer at once, audit detached.
local body = get("/fast", 5)
local a = seen:recv()
assert(a.ctx:wait(5), "the request context did not end")
print(("(a) GET /fast -> %s; request %s: its context after the handler "
  .. "returned: %s"):format(body and body:gsub("\n$", "") or "nothing",
  a.id, tostring(a.ctx:err())))
assert(body == "ok\n" and a.ctx:err() == tether.canceled)

-- (b) a slow handler whose client hangs up after 0.1 s.
local t0 = tether.now()
body = get("/slow", 0.1)
local b = seen:recv()
print(("(b) GET /slow -> %s; request %s: its context: %s, cause: %s "
  .. "(%.0f ms after the request was sent)"):format(
  body == nil and "the client gave up" or body, b.id,
  tostring(b.ctx:err()), tostring(b.ctx:cause()), (b.at - t0) * 1000))
assert(body == nil and b.ctx:cause() == tether.http.client_gone)

-- Both audits complete, with their request ids and live contexts.
local done = {}
for _ = 1, 2 do
  local r = audited:recv()
  done[r.shape] = r
  print(("audit of the %s request %s completed (its context: %s)"):format(
    r.shape, r.request_id, r.err == nil and "live" or tostring(r.err)))
end
assert(done.fast.request_id == a.id and done.slow.request_id == b.id)
assert(done.fast.err == nil and done.slow.err == nil)

if serve then
  -- Serve until SIGINT or SIGTERM; then stop accepting and let the
  -- requests in flight complete (within 20 s).
  local ctx = tether.run_context()
  print(("serving on %s until SIGINT or SIGTERM"):format(base))
  ctx:wait()
  print(("%s: shutting down: no new connections, requests in flight "
         .. "complete"):format(tostring(ctx:cause())))
  assert(srv:shutdown(tether.with_timeout(tether.background(), 20)))
else
  srv:close()
end
assert(audits:drain())
local st = audits:stats()
print(("audit completed: %d of %d submitted"):format(st.completed,
                                                     st.submitted))
assert(st.completed == st.submitted and (serve or st.completed == 2))
