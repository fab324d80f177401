-- Child processes for the specs of signals, exit and the runner: a Lua
-- script run by lua5.4 (or by bin/tether run) in a process of its own,
-- with the module of this checkout, that the spec reads line by line,
-- sends signals to, and waits for.
--
-- Every wait is bounded: the child runs under `timeout -s KILL LIMIT`, so
-- a child that hangs is killed and every read of its output ends.  The
-- spec synchronises with the child through its output (the child prints
-- "ready" before it blocks), never with sleeps; before a signal is sent,
-- C:blocked() also waits (bounded) until the child's main thread sleeps
-- in the kernel, so that the signal finds the wait parked.
--
-- Under `make check` the children inherit the ASan runtime preloaded into
-- busted (TSan's is not inherited, see tools/check.sh) and use the plain
-- build of the module; leak reports are turned off in them: a process
-- that exits while abandoned ops still run leaves their memory behind by
-- design.
local assert = require "luassert"
local tether = require "tether"

local M = {}

-- M.LIMIT is how long a child may live, in seconds.
M.LIMIT = 30

local ENV = "LUA_PATH_5_4='./lua/?.lua;./lua/?/init.lua;;' "
  .. "LUA_CPATH_5_4='./build/?.so;;' ASAN_OPTIONS=detect_leaks=0 "

-- Every script starts by printing its pid (of the lua5.4 process itself,
-- also under bin/tether) on an unbuffered stdout.
local PRELUDE = 'io.stdout:setvbuf("no"); '
  .. 'do local f = io.open("/proc/self/stat"); print(f:read("n")); '
  .. 'f:close() end\n'

local function quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local C = {}
C.__index = C

--- M.start runs 'src' in a child.  opts.runner (a list of options) runs
-- it with bin/tether run; opts.args are the script's arguments.  With
-- opts.file, the child runs that script file as it is (src is ignored);
-- its pid comes from the shell that becomes it.  With opts.plain, the
-- child runs without the sanitizer runtime that `make check` preloads
-- (a child that starts curl needs that: curl hangs with ASan preloaded);
-- opts.env (name = value) adds to its environment.
function M.start(src, opts)
  opts = opts or {}
  local script, errf = os.tmpname(), os.tmpname()
  local f = assert(io.open(script, "w"))
  f:write(PRELUDE, src or "")
  f:close()
  local args = {}
  for _, a in ipairs(opts.args or {}) do args[#args + 1] = quote(a) end
  local cmd
  local file = opts.file and quote(opts.file) or script
  if opts.runner then
    local runner = {}
    for k, a in ipairs(opts.runner) do runner[k] = quote(a) end
    cmd = "lua5.4 bin/tether run " .. table.concat(runner, " ")
      .. " " .. file
  else
    cmd = "lua5.4 " .. file
  end
  cmd = cmd .. " " .. table.concat(args, " ")
  if opts.plain then cmd = "env -u LD_PRELOAD " .. cmd end
  if opts.file then cmd = "sh -c " .. quote("echo $$; exec " .. cmd) end
  local env = ENV
  for k, v in pairs(opts.env or {}) do
    env = env .. k .. "=" .. quote(v) .. " "
  end
  local p = assert(io.popen(("%stimeout -s KILL %d %s 2>%s; "
    .. "echo \"status $?\""):format(env, M.LIMIT, cmd, errf)))
  local line = p:read("l")
  local child = setmetatable({ p = p, script = script, errf = errf,
                               out = {}, pid = tonumber(line) }, C)
  if child.pid == nil then child:collect(line) end
  return child
end

-- collect reads lines until the status line (the child has ended).
function C:collect(first)
  local line = first
  while line ~= nil do
    local st = line:match("^status (%d+)$")
    if st then
      self.status = tonumber(st)
      break
    end
    self.out[#self.out + 1] = line
    line = self.p:read("l")
  end
  if self.status and not self.ended then
    self.ended = tether.now()
  end
end

--- C:expect reads the child's output until a line equal to 'want' and
-- returns true, or false once the child has ended without it.
function C:expect(want)
  if self.status then return false end
  while true do
    local line = self.p:read("l")
    if line == nil or line:match("^status %d+$") then
      self:collect(line)
      return false
    end
    self.out[#self.out + 1] = line
    if line == want then return true end
  end
end

--- C:expect_match reads the child's output until a line that matches
-- 'pattern' and returns it (with the captures), or nil once the child has
-- ended without it.
function C:expect_match(pattern)
  if self.status then return nil end
  while true do
    local line = self.p:read("l")
    if line == nil or line:match("^status %d+$") then
      self:collect(line)
      return nil
    end
    self.out[#self.out + 1] = line
    if line:match(pattern) then return line, line:match(pattern) end
  end
end

--- C:blocked waits (at most 5 s) until the child's main thread sleeps in
-- a futex wait, and returns whether it does.
function C:blocked()
  local path = ("/proc/%d/task/%d/wchan"):format(self.pid, self.pid)
  local limit = tether.now() + 5
  repeat
    local f = io.open(path)
    local w = f and f:read("a") or ""
    if f then f:close() end
    if w:find("futex", 1, true) then return true end
    tether.sleep(0.002)
  until tether.now() > limit
  return false
end

--- C:signal sends 'sig' ("INT", "TERM", ...) to the child.
function C:signal(sig)
  self.sent = tether.now()
  assert(os.execute(("kill -%s %d"):format(sig, self.pid)))
end

--- C:finish waits for the child to end and returns a table: status (as a
-- shell gives it: 128 + n for a death by signal n), out (stdout lines),
-- stdout and stderr (whole texts), took (seconds from the last signal to
-- the end, when one was sent).
function C:finish()
  if not self.status then self:collect(self.p:read("l")) end
  self.p:close()
  local f = io.open(self.errf)
  local err = f and f:read("a") or ""
  if f then f:close() end
  os.remove(self.script)
  os.remove(self.errf)
  return {
    status = self.status,
    out = self.out,
    stdout = table.concat(self.out, "\n"),
    stderr = err,
    took = self.sent and self.ended and (self.ended - self.sent) or nil,
  }
end

--- M.run runs 'src' to its end and returns what C:finish returns.
function M.run(src, opts)
  return M.start(src, opts):finish()
end

--- M.describe formats a result for an assertion's message.
function M.describe(r)
  return ("status %s, took %s\nstdout:\n%s\nstderr:\n%s"):format(
    tostring(r.status), tostring(r.took), r.stdout, r.stderr)
end

--- M.ctrl_c runs 'setup' then prints "ready" and runs 'call' (a blocking
--- call), sends SIGINT once the script blocks (at once for a 'busy' one),
--- and checks that it ends as lua5.4 ends on Ctrl-C: status 1,
--- "interrupted!", within 2 s, and the line after the call never printed.
--- It returns what C:finish returned.
function M.ctrl_c(setup, call, busy)
  local c = M.start(([[
local tether = require "tether"
local bg = tether.background()
%s
print("ready")
%s
print("after the call")
]]):format(setup, call))
  assert.is_true(c:expect("ready"), "no ready line")
  if not busy then
    assert.is_true(c:blocked(), "the script does not block")
  end
  c:signal("INT")
  local r = c:finish()
  assert.equal(1, r.status, M.describe(r))
  assert.matches("interrupted!", r.stderr, 1, true)
  assert.is_nil(r.stdout:find("after the call", 1, true), M.describe(r))
  assert.is_true(r.took < 2, M.describe(r))
  return r
end

return M
