-- Scenario 25: the admin page.  Four pools under a mixed workload (steady
-- mail, thumbnails that often fail and end as dead letters, billing with
-- tenant quotas, slow reports that back up), and the admin page that
-- shows them live: counts and rates, in-flight ops with their ages,
-- recent failures, dead letters with Retry and Drop, Drain.
--
--   TETHER_ADMIN_TOKEN=... bin/tether run examples/25-admin.lua 600
--   lua5.4 examples/25-admin.lua          (what `make examples` runs: 3 s)
--
-- The first argument is how long to keep the workload going and the page
-- up (seconds); Ctrl-C ends it sooner.  The page has its own threads, so
-- it answers however busy the pools are.  Its actions need the token:
-- TETHER_ADMIN_TOKEN, or else one made up for this run and printed.
local tether = require "tether"
local http = require "socket.http"
local ltn12 = require "ltn12"

local seconds = tonumber((...)) or 3
local root, stop_all = tether.with_cancel(tether.run_context())

local token = os.getenv("TETHER_ADMIN_TOKEN")
local made_up = token == nil or token == ""
if made_up then
  local f = assert(io.open("/dev/urandom", "rb"))
  token = f:read(16):gsub(".", function(c)
    return ("%02x"):format(c:byte())
  end)
  f:close()
end

local mail = tether.pool { name = "mail", workers = 4, queue = 200,
                           shutdown = root, quiet = true }
local thumbnails = tether.pool { name = "thumbnails", workers = 3,
                                 queue = 100, shutdown = root, quiet = true,
                                 retry = { attempts = 2, backoff = 0.2 } }
local billing = tether.pool { name = "billing", workers = 2, queue = 100,
                              tenant_key = "tenant",
                              quotas = { default = 8, acme = 3 },
                              shutdown = root, quiet = true }
local reports = tether.pool { name = "reports", workers = 2, queue = 12,
                              timeout = 20, shutdown = root, quiet = true }

local srv = tether.admin.serve { token = token,
                                 addr = os.getenv("ADMIN_ADDR") }
print(("admin page: http://%s/"):format(srv:addr()))
if made_up then print("token (made up for this run): " .. token) end
io.stdout:flush()

-- An op: works for 'secs' (or until its context ends), then fails with
-- 'why' if there is one.
local function work(ctx, secs, why)
  if not require("tether").sleep(secs, ctx) then return nil end
  if why then error(why, 0) end
  return true
end

local files = { "IMG_4821.HEIC", "scan-0007.tiff", "avatar.png",
                "banner@2x.webp", "receipt-1188.pdf" }
local tenants = { "acme", "acme", "globex", "initech", "umbrella" }
local deadline, tick = tether.now() + seconds, 0
while tether.now() < deadline and not root:err() do
  tick = tick + 1
  if math.random() < 0.6 then
    mail:submit(root, "send-welcome-email", work, 0.05 + math.random() * 0.3)
  end
  if tick % 2 == 0 then
    local file = files[math.random(#files)]
    thumbnails:submit(root, "thumbnail " .. file, work,
                      0.05 + math.random() * 0.25,
                      math.random() < 0.3 and ("convert: " .. file ..
                        ": no decode delegate for this image format") or nil)
  end
  if tick % 2 == 1 then
    local tenant = tenants[math.random(#tenants)]
    billing:submit(tether.with_value(root, "tenant", tenant),
                   "charge-invoice", work, 0.05 + math.random() * 0.2)
  end
  if tick % 15 == 1 then
    reports:submit(root, "monthly-report", work, 2 + math.random() * 4)
  end
  tether.sleep(0.05, root)
end

-- What the page shows is what /api/state holds; and an action is a POST
-- with the token, as the page's Retry button sends it.
local base = "http://" .. srv:addr()
local body, code = http.request(base .. "/api/state")
assert(code == 200, "GET /api/state: " .. tostring(code))
for _, name in ipairs { "mail", "thumbnails", "billing", "reports" } do
  assert(body:find('"name":"' .. name .. '"', 1, true), name)
end
thumbnails:wait_idle(root)
local dead = thumbnails:dead_letters()
print(("%d pools on the page; thumbnails holds %d dead letters"):format(4,
      #dead))
if #dead > 0 then
  local out = {}
  local _, st = http.request {
    url = ("%s/api/pools/%d/dead/%d/retry"):format(base, thumbnails:id(),
                                                    dead[1].id),
    method = "POST", sink = ltn12.sink.table(out),
    headers = { Authorization = "Bearer " .. token,
                ["Content-Length"] = "0" },
  }
  assert(st == 200, "retry: " .. tostring(st))
  print(("retried dead letter #%d from the page's API: %s"):format(
    dead[1].id, table.concat(out):match('"op":%d+') or "?"))
end

stop_all()   -- the workload's ops end at once
srv:close()
