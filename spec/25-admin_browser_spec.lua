-- Scenario 25 in a real browser: headless Chromium, driven by
-- playwright-core (tools/browser/admin-check.js, run here as a child
-- process), loads the admin page of pools this spec runs, and the spec
-- checks what the browser saw against what the pools did:
-- - the page loads with no console error, no script error and no
--   Content-Security-Policy violation, and shows each pool;
-- - in-flight ops show ages that grow, and the count drops when the spec
--   ends one;
-- - a pool named <script>... and a failure whose message is
--   <img src=x onerror=alert(1)> are shown as text: no dialog, nothing
--   injected;
-- - Retry on a dead letter, with the token typed into the page, puts it
--   back in the queue and the page shows it; the same POST without the
--   token gets 401, one from another origin 403 (with Node's client, a
--   form of a page on another origin, and that page's fetch);
-- - Drain, confirmed, closes the pool.
local tether = require "tether"
local A = require "spec.support.admin"
local eventually = require "spec.support.eventually"
local check_invariant = require("spec.support.accounting").check

local bg = tether.background()
local json = A.json
local TOKEN = ("browser-%08x%08x"):format(math.random(0, 0x7fffffff),
                                          math.random(0, 0x7fffffff))
local XSS_NAME = '<script>alert("pool")</script>'
local XSS_ERROR = "<img src=x onerror=alert(1)>"
local XSS_OP = "<svg onload=alert(2)>"
local XSS_TENANT = "<b onmouseover=alert(3)>t</b>"
local PLAYWRIGHT = "tools/browser/node_modules/playwright-core/package.json"

-- run_browser runs the node script with 'cfg' and answers its "release"
-- requests with 'on_release'; it returns the decoded result and the
-- script's stderr.
local function run_browser(cfg, on_release)
  local errf = os.tmpname()
  local cmd = ("env -u LD_PRELOAD timeout -s KILL 150 node "
    .. "tools/browser/admin-check.js %s 2>%s"):format(
    A.shq(json.encode(cfg)), errf)
  local p = assert(io.popen(cmd))
  local result, lines = nil, {}
  for line in p:lines() do
    lines[#lines + 1] = line
    if line == "release" then
      on_release()
    elseif line:sub(1, 7) == "RESULT " then
      result = json.decode(line:sub(8), 1, json.null)
    end
  end
  p:close()
  local f = io.open(errf)
  local err = f and f:read("a") or ""
  if f then f:close() end
  os.remove(errf)
  assert(result, "no result from the browser script:\n"
         .. table.concat(lines, "\n") .. "\n" .. err)
  local all = table.concat(lines, "\n") .. "\n" .. err
  -- A failure message shows the end, where the browser stopped.
  return result, #all > 6000 and ("..." .. all:sub(-6000)) or all
end

describe("the admin page in a real browser (scenario 25)", function()
  local pools, gates, servers = {}, {}, {}

  after_each(function()
    for _, g in ipairs(gates) do pcall(g.close, g) end
    for _, s in ipairs(servers) do s:close() end
    for _, p in ipairs(pools) do
      assert(p:drain(tether.with_timeout(bg, 10)))
    end
    pools, gates, servers = {}, {}, {}
    collectgarbage()
    collectgarbage()
  end)

  it("shows pools live, renders what users control as text, and acts "
     .. "only with the token, from its own origin", function()
    assert(io.open(PLAYWRIGHT), "playwright-core is missing: make "
           .. "browser-deps installs it")
    local work_gate, mail_gate = tether.chan(10), tether.chan(10)
    gates = { work_gate, mail_gate }
    local work = tether.pool { name = "work", workers = 3, quiet = true }
    local xss = tether.pool { name = XSS_NAME, workers = 1, quiet = true,
                              tenant_key = "tenant" }
    local mail = tether.pool { name = "mail", workers = 1, quiet = true }
    pools = { work, xss, mail }
    for _ = 1, 3 do assert(work:submit(bg, "render", A.blocked, work_gate)) end
    local tctx = tether.with_value(bg, "tenant", XSS_TENANT)
    for _ = 1, 2 do assert(xss:submit(tctx, XSS_OP, A.fail, XSS_ERROR)) end
    for i = 1, 3 do
      assert(mail:submit(bg, "send-mail", A.fail, "smtp: 421 try later " .. i))
    end
    eventually(function()
      return work:stats().inflight == 3 and xss:stats().dead == 2
        and mail:stats().dead == 3
    end, "the workload in place")
    -- The mail pool's one worker is busy: a retried op waits in its queue.
    assert(mail:submit(bg, "hold", A.blocked, mail_gate))
    eventually(function() return mail:stats().inflight == 1 end, "busy")
    local dead = {}
    for _, d in ipairs(mail:dead_letters()) do table.insert(dead, 1, d.id) end

    local srv = tether.admin.serve { token = TOKEN,
                                     pools = { work, xss, mail } }
    local url = "http://" .. srv:addr() .. "/"
    local action = ("%sapi/pools/%d/dead/%d/retry"):format(url, mail:id(),
                                                         dead[2])
    -- A page of another origin that tries to act on the admin.
    local evil_html = ([[<!doctype html><html><body>
<form method="post" action="%s"><button id="go">win a prize</button></form>
</body></html>]]):format(action)
    local evil = tether.http.server {
      routes = { ["GET /evil"] = function(_, _, res)
        res:header("Content-Type", "text/html; charset=utf-8")
        res:send(evil_html)
      end },
    }
    servers = { srv, evil }
    local logs = A.capture_log()
    local r, text = run_browser({
      url = url, token = TOKEN, evil = "http://" .. evil:addr() .. "/evil",
      pools = { work = work:id(), xss = xss:id(), mail = mail:id() },
      xssName = XSS_NAME, xssError = XSS_ERROR, mailDead = dead,
    }, function() assert(work_gate:send(true)) end)
    local audit = logs()
    assert.equal(json.null, r.error or json.null, text)
    assert.same({ "load", "xss pool", "in flight", "retry", "refusals",
                  "drain", "done" }, r.steps)

    -- Loads clean: no console error, script error, CSP report or dialog.
    assert.same({}, r.consoleErrors, text)
    assert.same({}, r.pageErrors, text)
    assert.same({}, r.csp, text)
    assert.same({}, r.dialogs, text)
    assert.same({ "work", XSS_NAME, "mail" }, r.poolNames)

    -- What users control is text: the page still has its one script, no
    -- image, no element with an event attribute, no injected <b>.
    for _, k in ipairs { "injectedAtLoad", "injectedAfterXss",
                         "injectedAtEnd" } do
      assert.same({ scripts = 1, imgs = 0, svgOnload = 0, injectedBold = 0,
                    onAttributes = 0, xssRan = false }, r[k], k)
    end
    assert.equal(XSS_NAME, r.xssDetailName)
    assert.equal(XSS_ERROR, r.xssLastFailure)
    assert.matches("failing", r.xssRowClass)
    assert.equal(2, #r.xssFailures)
    for _, row in ipairs(r.xssFailures) do
      assert.equal(XSS_OP, row[3])
      assert.matches(XSS_ERROR, row[4], 1, true)
      assert.equal(XSS_TENANT, row[6])
    end
    assert.equal(2, #r.xssDead)
    assert.equal(XSS_OP, r.xssDead[1][3])

    -- In flight: the same three ops, older at the second look; one fewer
    -- once the spec ended one.
    assert.equal(3, #r.agesBefore)
    local before = {}
    for _, o in ipairs(r.agesBefore) do before[o.id] = o.age end
    for _, o in ipairs(r.agesAfter) do
      assert.is_true(o.age > before[o.id], "age of op " .. o.id)
    end
    assert.equal("3", r.inflightCountBefore)
    assert.equal("2", r.inflightCountAfter)
    assert.equal(2, #r.agesReleased)

    -- Retry with the token: back in the queue, on the page and in the
    -- pool.  The token lives in sessionStorage, never in the HTML.
    for _, disabled in ipairs(r.retryButtonsBeforeUnlock) do
      assert.is_true(disabled)
    end
    assert.is_false(r.tokenInHtml)
    assert.equal(TOKEN, r.tokenInStorage)
    assert.equal("0", r.queuedBefore)
    assert.equal("1", r.queuedAfter)
    assert.equal("3", r.deadCountBefore)
    assert.equal("2", r.deadCountAfter)
    assert.matches("Dead letter #" .. dead[1] .. " is queued again as op #",
                   r.toast, 1, true)
    assert.same({ dead[2], dead[3] }, r.deadLeft)
    local s = mail:stats()
    assert.equal(2, s.dead_held)
    assert.equal(1, s.queued)
    assert.equal(5, s.submitted)
    check_invariant(s, "mail after the page's retry")

    -- Refused: no token (401), a foreign Origin even with the token
    -- (403), another origin's form (403) and fetch (no preflight grant).
    assert.equal(401, r.noToken)
    assert.equal(403, r.foreignOrigin)
    assert.equal(403, r.evilForm)
    assert.equal("blocked", r.evilFetch)
    local left = {}
    for _, d in ipairs(mail:dead_letters()) do left[d.id] = true end
    assert.is_true(left[dead[2]], "the refused retries changed nothing")

    -- Drain, confirmed in the page, closes the pool to new work.
    assert.matches("Close \u{201c}work\u{201d} to new work?",
                   r.drainQuestion, 1, true)
    assert.equal("draining", r.drainStatus)
    local _, err = work:submit(bg, "late", A.ok)
    assert.equal("closed", err.code)

    -- Each action has its audit line.
    local lines = {}
    for _, l in ipairs(audit) do
      if l.msg == "admin action" or l.msg == "admin action refused" then
        lines[#lines + 1] = ("%s %s %s"):format(l.action, l.status,
                                                l.result)
      end
    end
    assert.same({ "retry 200 ok", "retry 401 unauthorized",
                  "retry 403 foreign_origin", "retry 403 foreign_origin",
                  "drain 200 ok" }, lines)
  end)
end)
