-- A real Prometheus server (Debian's prometheus package) as a spec
-- fixture (TOOLCHAIN.md section 11): its own temporary config and data
-- directory, bound to a free port on 127.0.0.1, scraping one target
-- every second; stopped by its pid.
local socket = require "socket"
local http = require "socket.http"
local json = require "dkjson"

local M = {}
M.__index = M

local function free_port()
  local s = assert(socket.bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return tonumber(port)
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

-- M.start starts a server that scrapes http://127.0.0.1:<target>/metrics.
function M.start(target)
  local dir = assert(io.popen("mktemp -d"):read("l"))
  local port = free_port()
  local cfg = assert(io.open(dir .. "/prometheus.yml", "w"))
  cfg:write(([[
global: { scrape_interval: 1s, evaluation_interval: 1s }
scrape_configs:
  - job_name: tether
    static_configs: [ { targets: ['127.0.0.1:%d'] } ]
]]):format(target))
  cfg:close()
  assert(os.execute(("prometheus --config.file=%s/prometheus.yml "
    .. "--storage.tsdb.path=%s/data --web.listen-address=127.0.0.1:%d "
    .. ">%s/log 2>&1 & echo $! >%s/pid"):format(dir, dir, port, dir, dir)))
  local pid = tonumber(read_file(dir .. "/pid"))
  assert(pid, "prometheus did not start")
  return setmetatable({dir = dir, port = port, pid = pid}, M)
end

-- M:get fetches a path of the server's HTTP API: body, status.
function M:get(path)
  http.TIMEOUT = 5
  local body, code = http.request(("http://127.0.0.1:%d%s")
                                  :format(self.port, path))
  return body, code
end

-- M:query runs an instant query and returns the decoded answer.
function M:query(q)
  local enc = q:gsub("[^%w%-_%.~]", function(c)
    return ("%%%02X"):format(c:byte())
  end)
  local body, code = self:get("/api/v1/query?query=" .. enc)
  if code ~= 200 or not body then return nil end
  return json.decode(body)
end

-- M:alive tells whether the process still runs (a zombie waiting for
-- its reaper has ended).
function M:alive()
  local stat = read_file(("/proc/%d/stat"):format(self.pid))
  return stat ~= nil and stat:match("^%d+ %b() (%a)") ~= "Z"
end

function M:log()
  return read_file(self.dir .. "/log") or ""
end

-- M:stop stops the server by its pid (waiting at most 10 s for it to
-- end) and removes its directory.
function M:stop()
  os.execute(("kill %d 2>/dev/null"):format(self.pid))
  local deadline = socket.gettime() + 10
  while self:alive() and socket.gettime() < deadline do socket.sleep(0.05) end
  if self:alive() then
    os.execute(("kill -9 %d 2>/dev/null"):format(self.pid))
  end
  os.execute(("rm -rf '%s'"):format(self.dir))
end

return M
