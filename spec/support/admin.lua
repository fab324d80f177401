-- Helpers of the admin page's specs: a plain HTTP client (curl, in a
-- child process of its own, as any operator's would be), JSON, and the
-- workloads whose counts the specs know exactly.
local tether = require "tether"
local json = require "dkjson"

local M = {}

-- Child processes run without the sanitizer runtime that `make check`
-- preloads into this one (curl hangs with ASan's preloaded).
local CURL = "env -u LD_PRELOAD curl"

--- M.shq quotes a string for the shell.
function M.shq(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

--- M.request sends one request with curl and returns {status, headers
-- (lower-case names), body}.  'headers' is a table of name = value (a
-- value false leaves curl's own header out).
function M.request(method, url, headers, body)
  local args = { CURL, "-s", "-i", "--max-time", "20", "-X", method }
  for k, v in pairs(headers or {}) do
    args[#args + 1] = "-H " .. M.shq(v == false and (k .. ":")
                                     or (k .. ": " .. v))
  end
  if body then
    args[#args + 1] = "--data-binary " .. M.shq(body)
  elseif method == "POST" then
    args[#args + 1] = "-H 'Content-Length: 0'"
  end
  args[#args + 1] = M.shq(url)
  local p = assert(io.popen(table.concat(args, " ")))
  local out = p:read("a")
  p:close()
  -- A 1xx answer (100 Continue) comes before the real one.
  local head, rest
  repeat
    head, rest = out:match("^(.-)\r\n\r\n(.*)$")
    assert(head, "no HTTP response from curl: " .. out:sub(1, 200))
    out = rest
  until not head:match("^HTTP/%S+ 1%d%d")
  local h = {}
  for k, v in head:gmatch("\r\n([^:\r]+):%s*([^\r]*)") do
    h[k:lower()] = v
  end
  return { status = tonumber(head:match("^HTTP/%S+ (%d+)")), headers = h,
           body = rest }
end

--- M.get_json GETs 'url' and returns the response and its decoded body
-- (asserting that it is JSON).
function M.get_json(url, headers)
  local r = M.request("GET", url, headers)
  local v, _, err = json.decode(r.body, 1, json.null)
  assert(v ~= nil, ("not JSON (%s): %s"):format(tostring(err),
                                                r.body:sub(1, 300)))
  return r, v
end

M.json = json

--- M.base returns "http://ADDR" of a server.
function M.base(srv)
  return "http://" .. srv:addr()
end

--- M.pool_of finds pool 'id' in a state document.
function M.pool_of(state, id)
  for _, p in ipairs(state.pools) do
    if p.id == id then return p end
  end
end

-- Ops of the workloads (they travel to the workers: no upvalues).
function M.blocked(_, gate)
  gate:recv()
  return true
end

function M.fail(_, why)
  error(why, 0)
end

function M.ok()
  return true
end

--- M.sha256_b64 returns the base64 of the SHA-256 of 's', computed by
-- openssl (a second implementation, to check the engine's).
function M.sha256_b64(s)
  local f = os.tmpname()
  local h = assert(io.open(f, "wb"))
  h:write(s)
  h:close()
  local p = assert(io.popen("env -u LD_PRELOAD openssl dgst -sha256 "
                            .. "-binary " .. f .. " | base64 -w0"))
  local out = p:read("a")
  p:close()
  os.remove(f)
  return (out:gsub("%s+$", ""))
end

--- M.capture_log sends the log's records to a channel until the returned
-- function is called, which restores stderr and returns the records.
function M.capture_log()
  local ch = tether.chan(1000)
  assert(tether.log.configure { sink = ch })
  return function()
    assert(tether.log.configure { sink = "stderr" })
    local out = {}
    while true do
      local v, ok = ch:try_recv()
      if not ok then break end
      out[#out + 1] = v
    end
    return out
  end
end

return M
