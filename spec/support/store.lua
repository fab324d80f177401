-- Helpers of the durable store specs: scratch directories, a Redis
-- server of the spec's own (127.0.0.1, a free port, a temporary
-- directory, appendonly yes; stopped by its pid), child lua5.4 processes
-- started in the background and killed by pid, and the ops modules the
-- drainers run.  Every wait here is bounded: a failure fails instead of
-- hanging.
local assert = require "luassert"

local M = {}

local root = assert(io.popen("pwd")):read("l")
M.root = root

local function sh(cmd)
  local p = assert(io.popen(cmd .. " 2>&1"))
  local out = p:read("a")
  local ok, _, code = p:close()
  return out, ok, code
end
M.sh = sh

local function quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
M.quote = quote

--- M.tmpdir() makes a scratch directory and returns its path.
function M.tmpdir()
  return (sh("mktemp -d /tmp/tether-store-XXXXXX"):gsub("%s+$", ""))
end

function M.rmdir(d)
  if d and d:match("^/tmp/tether%-store%-") then sh("rm -rf " .. quote(d)) end
end

function M.write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

function M.read(path)
  local f = io.open(path)
  if not f then return "" end
  local s = f:read("a")
  f:close()
  return s
end

--- M.alive(pid) tells whether a process still runs (a zombie has ended).
function M.alive(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return false end
  local s = f:read("a")
  f:close()
  local state = s:match("%) (%a)")
  return state ~= nil and state ~= "Z" and state ~= "X"
end

--- M.wait_gone(pid, secs) waits (bounded) for a process to end.
function M.wait_gone(pid, secs)
  local tether = require "tether"
  local deadline = tether.now() + (secs or 10)
  while M.alive(pid) do
    if tether.now() > deadline then return false end
    tether.sleep(0.02)
  end
  return true
end

--- M.kill(pid [, sig]) signals one process by its pid.
function M.kill(pid, sig)
  sh(("kill -%s %d"):format(sig or "TERM", pid))
end

-- The environment of child processes: the module of this build (also
-- when busted runs a sanitized one: children run the plain build) and
-- the directory of the spec's ops modules.
local function child_env(dir)
  return ("LUA_PATH_5_4=%s LUA_CPATH_5_4=%s ASAN_OPTIONS= LD_PRELOAD= "):format(
    quote(dir .. "/?.lua;" .. root .. "/lua/?.lua;" .. root
          .. "/lua/?/init.lua;;"),
    quote(root .. "/build/?.so;;"))
end

--- M.spawn(dir, script, args) starts `lua5.4 script args...` in the
-- background (its output in script.out) and returns its pid.
function M.spawn(dir, script, args)
  local cmd = ("cd %s && %s exec lua5.4 %s %s >%s 2>&1 & echo $!"):format(
    quote(dir), child_env(dir), quote(script), args or "",
    quote(script .. "." .. os.time() .. math.random(1e9) .. ".out"))
  local pid = tonumber((sh("sh -c " .. quote(cmd))))
  assert(pid, "could not start " .. script)
  return pid
end

--- M.spawn_cli(dir, args) starts `bin/tether ARGS...` (a list of
-- strings) in the background like M.spawn, and returns its pid.
function M.spawn_cli(dir, args)
  local q = {}
  for k, a in ipairs(args) do q[k] = quote(a) end
  local cmd = ("cd %s && %s exec lua5.4 %s %s >%s 2>&1 & echo $!"):format(
    quote(dir), child_env(dir), quote(root .. "/bin/tether"),
    table.concat(q, " "),
    quote(dir .. "/cli." .. os.time() .. math.random(1e9) .. ".out"))
  local pid = tonumber((sh("sh -c " .. quote(cmd))))
  assert(pid, "could not start bin/tether")
  return pid
end

-- A bin/tether process whose output (stdout and stderr together) the
-- spec reads line by line (M.cli).
local Cli = {}
Cli.__index = Cli

--- M.cli(dir, args [, limit]) starts `bin/tether ARGS...` (a list of
-- strings) in 'dir' with the spec's modules, under `timeout -s KILL
-- limit` (60 s by default), so that every read of its output ends.  A
-- `tether worker` tells its pid in its first line; Cli:expect reads it.
function M.cli(dir, args, limit)
  local q = {}
  for k, a in ipairs(args) do q[k] = quote(a) end
  local cmd = ("cd %s && %s timeout -s KILL %d lua5.4 %s %s 2>&1; "
    .. "echo \"status $?\""):format(quote(dir), child_env(dir),
    limit or 60, quote(root .. "/bin/tether"), table.concat(q, " "))
  return setmetatable({ p = assert(io.popen(cmd)), lines = {} }, Cli)
end

--- Cli:expect(pattern) reads lines until one matches 'pattern' and
-- returns it with its captures, or nil once the process has ended.
function Cli:expect(pattern)
  while not self.status do
    local line = self.p:read("l")
    local st = line and line:match("^status (%d+)$")
    if line == nil or st then
      self.status = tonumber(st) or -1
      break
    end
    self.lines[#self.lines + 1] = line
    local pid = line:match("^tether worker (%d+): ")
    if pid then self.pid = tonumber(pid) end
    if line:match(pattern) then return line, line:match(pattern) end
  end
  return nil
end

--- Cli:finish() reads to the end and returns the exit status and the
-- whole output.
function Cli:finish()
  self:expect("^\0$")  -- no line matches: read them all
  self.p:close()
  return self.status, table.concat(self.lines, "\n")
end

--- M.count(text, pattern) counts the lines of 'text' that match.
function M.count(text, pattern)
  local n = 0
  for line in text:gmatch("[^\n]+") do
    if line:match(pattern) then n = n + 1 end
  end
  return n
end

--- M.run(dir, script, args, secs) runs a child to its end (bounded) and
-- returns its output and whether it succeeded.
function M.run(dir, script, args, secs)
  local cmd = ("cd %s && %s timeout -k 5 %d lua5.4 %s %s"):format(
    quote(dir), child_env(dir), secs or 120, quote(script), args or "")
  local out, ok = sh(cmd)
  return out, ok
end

-- {==================================================================
-- Redis
-- ===================================================================

local function port_free(port)
  local out = sh("ss -Hltn 'sport = :" .. port .. "'")
  return not out:find(":" .. port, 1, true)
end

--- M.redis() starts a redis-server of its own and returns {url, port,
-- pid, dir, stop = function}.  redis-server comes with the Debian
-- package the Makefile installs.
function M.redis(extra)
  local tether = require "tether"
  local dir = M.tmpdir()
  for _ = 1, 20 do
    local port = math.random(20000, 59000)
    if port_free(port) then
      local cmd = ("redis-server --port %d --bind 127.0.0.1 --dir %s "
        .. "--appendonly yes --appendfsync everysec --save '' %s "
        .. ">%s/redis.log 2>&1 & echo $!"):format(port, quote(dir),
        extra or "", quote(dir))
      local pid = tonumber((sh("sh -c " .. quote(cmd))))
      local deadline = tether.now() + 10
      while M.alive(pid) and tether.now() < deadline do
        if sh("redis-cli -p " .. port .. " ping"):find("PONG") then
          local r = { port = port, pid = pid, dir = dir,
                      url = ("redis://127.0.0.1:%d/0"):format(port) }
          function r.cli(args)
            return sh("redis-cli -p " .. port .. " " .. args)
          end
          function r.stop()
            M.kill(pid, "TERM")
            M.wait_gone(pid, 10)
            M.rmdir(dir)
          end
          return r
        end
        tether.sleep(0.05)
      end
      M.kill(pid, "KILL")
    end
  end
  error("could not start redis-server (is the redis-server package "
        .. "installed?)")
end

-- }==================================================================

-- {==================================================================
-- Ops modules for drainers
-- ===================================================================

-- The module the specs' drainers run: each op appends one line to a log
-- file of its directory: "<tag> <deliveries> <pid> <tenant> <id>".
M.opsmod = [[
local M = {}
local dir = os.getenv("STORE_SPEC_DIR") or "%s"
local pid = (io.open("/proc/self/stat"):read("a"):match("^(%%d+)"))
local function log(ctx, tag)
  local f = assert(io.open(dir .. "/done.log", "a"))
  f:write(("%%s %%s %%s %%s %%s\n"):format(tag,
    tostring(ctx:value("tether.deliveries")), pid,
    tostring(ctx:value("tenant")), tostring(ctx:value("tether.store_id"))))
  f:close()
end
function M.record(ctx, tag, pause)
  if pause and pause > 0 then require("tether").sleep(pause) end
  log(ctx, tag)
  return tag
end
function M.fail(ctx, tag) error("always fails: " .. tostring(tag)) end
function M.echo(ctx, ...) log(ctx, "echo"); return ... end
function M.hang(ctx, tag)
  log(ctx, "start-" .. tostring(tag))
  require("tether").sleep(60, ctx)
end
function M.slow(ctx, tag, pause)
  io.stdout:write(("start %%s\n"):format(tag))  -- one write: one line
  io.stdout:flush()
  require("tether").sleep(pause)
  log(ctx, tag)
end
return M
]]

--- M.setup_dir() makes a directory holding the ops module 'storeops'
-- and puts it on package.path; returns the directory.
function M.setup_dir()
  local dir = M.tmpdir()
  M.write(dir .. "/storeops.lua", M.opsmod:format(dir))
  if not package.path:find(dir, 1, true) then
    package.path = dir .. "/?.lua;" .. package.path
  end
  return dir
end

--- M.done(dir) reads the log of completed ops: a list of {tag,
-- deliveries, pid, tenant, id}.
function M.done(dir)
  local list = {}
  for line in M.read(dir .. "/done.log"):gmatch("[^\n]+") do
    local t, d, p, ten, id = line:match("^(%S+) (%S+) (%S+) (%S+) (%S+)$")
    list[#list + 1] = { tag = t, deliveries = tonumber(d), pid = p,
                        tenant = ten, id = id }
  end
  return list
end

-- }==================================================================

return M
