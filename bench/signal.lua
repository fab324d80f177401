-- signal.lua: how fast signals reach a script through the Lua API.
--
--   ctrl_c   SIGINT to a lua5.4 process whose main state is blocked in
--            tether.sleep, to the moment the call has raised
--            "interrupted!".  lua.c's own handler, which tether chains
--            to, serves one Ctrl-C per process, so each round is a fresh
--            lua5.4 process (this file, run as "child").
--   sigctx   SIGUSR1 to the moment ctx:wait() of a signal context
--            returns in the main state; many rounds in one process.
--
-- The signal is sent by a pool op (luv's uv.kill, the process's own
-- pid) once the main state has blocked; the op stamps tether.now() just
-- before the kill, the main state stamps it again when its call is back.
-- Run by run.sh, or by itself: lua5.4 bench/signal.lua [name].
local B = dofile("bench/common.lua")
local tether = require "tether"

local bg = tether.background()
local ROUNDS = 21

-- signaler starts an op that waits 'settle' seconds (the main state is
-- parked by then), stamps the time, sends 'sig' to this process, and
-- sends the stamp on the channel it returns.
local function signaler(pool, sig, settle)
  local stamp = tether.chan(1)
  assert(pool:submit(bg, "signal", function(_, out, s, wait)
    local t, uv = require "tether", require "luv"
    t.sleep(wait)
    local t0 = t.now()
    uv.kill(uv.os_getpid(), s)
    out:send(t0)
  end, stamp, sig, settle))
  return stamp
end

-- The child of one ctrl_c round: it prints the latency in ms.
local function ctrl_c_child()
  local pool = tether.pool { name = "signal", workers = 1 }
  local stamp = signaler(pool, "sigint", 0.05)
  local ok, err = pcall(tether.sleep, 10)
  local t1 = tether.now()
  assert(not ok and tostring(err):find("interrupted!", 1, true),
         "the sleep was not interrupted: " .. tostring(err))
  print(string.format("%.6f", (t1 - stamp:recv()) * 1e3))
  assert(pool:drain())
end

local function ctrl_c()
  local ms = {}
  for r = 1, ROUNDS do
    local p = assert(io.popen("lua5.4 bench/signal.lua child 2>&1"))
    local out = p:read("a")
    p:close()
    ms[r] = tonumber(out:match("^([%d.]+)\n"))
    if ms[r] == nil then
      io.stderr:write("ctrl_c: the child said: ", out, "\n")
      os.exit(1)
    end
  end
  B.report("lua", "ctrl_c_wake_ms", B.median(ms))
end

local function sigctx()
  local pool = tether.pool { name = "signal", workers = 1 }
  local ms = {}
  for r = 1, ROUNDS do
    local ctx, stop = tether.signal_context(bg, "USR1")
    local stamp = signaler(pool, "sigusr1", 0.02)
    assert(ctx:wait(10), "the signal context was not canceled")
    local t1 = tether.now()
    ms[r] = (t1 - stamp:recv()) * 1e3
    stop()
  end
  assert(pool:drain())
  B.report("lua", "sigctx_wake_ms", B.median(ms))
end

if B.filter == "child" then
  ctrl_c_child()
  return
end

B.run {
  B.needs(tether, {"signal_context"},
          {"ctrl_c", {"ctrl_c_wake_ms"}, ctrl_c}),
  B.needs(tether, {"signal_context"},
          {"sigctx", {"sigctx_wake_ms"}, sigctx}),
}
