-- obs.lua: the cost of observability on closure tasks through the Lua
-- API -- the shape of runtime.lua's closure2 (20,000 tasks on a pool of 2
-- workers whose queue holds them all) with nothing observed, with the
-- pool's metrics, with metrics and a log line per op outcome at level
-- info (none is written: every op ends well), and with metrics and a
-- span per op attempt (always sampled, exported as OTLP JSON to
-- /dev/null: the exporter's serializing is in the figure, no disk).
-- bench_core.c's obs measures the same on the seed pool in C.
local B = dofile("bench/common.lua")
local tether = require "tether"

local now = tether.now
local bg = tether.background()

local modes = {
  {"obs_none", {metrics = false, quiet = true}},
  {"obs_metrics", {quiet = true}},
  {"obs_logs", {}},
  {"obs_trace", {}, trace = true},
}

-- round runs the tasks once in 'mode' and returns tasks per second, up to
-- the end of the drain and, with tracing, of the export of every span,
-- and the CPU time of the process per task in µs (os.clock: every
-- thread), which depends less on what else the machine runs.
local function round(mode, n, fn)
  local opts = {name = "obs", workers = 2, queue = n}
  for k, v in pairs(mode[2]) do opts[k] = v end
  assert(tether.trace.configure(mode.trace and {
    file = "/dev/null", sampler = "always_on", queue_size = 1 << 18,
    schedule_delay = 0.2} or {}))
  local p = tether.pool(opts)
  B.warm(tether, p, 2)
  collectgarbage()
  local t0, c0 = now(), os.clock()
  for i = 1, n do assert(p:submit(bg, "task", fn, i)) end
  assert(p:drain())
  if mode.trace then assert(tether.trace.flush()) end
  local rate = n / (now() - t0)
  local cpu = (os.clock() - c0) / n * 1e6
  assert(p:stats().completed == n + 2, "tasks were lost")
  return rate, cpu
end

-- The modes run in turn, round after round, so that each sees the same
-- conditions of a shared machine; medians of 15 rounds.
local function obs()
  local n, rates, cpus = 10000, {}, {}
  local fn = function(_, i) return i + 1 end
  tether.log.configure{level = "info"}
  round(modes[4], n // 10, fn)
  for _, m in ipairs(modes) do rates[m[1]], cpus[m[1]] = {}, {} end
  for _ = 1, 15 do
    for _, m in ipairs(modes) do
      local rate, cpu = round(m, n, fn)
      table.insert(rates[m[1]], rate)
      table.insert(cpus[m[1]], cpu)
    end
  end
  assert(tether.trace.stats().dropped == 0, "spans were dropped")
  assert(tether.trace.configure{})
  for _, m in ipairs(modes) do
    B.report("lua", m[1] .. "_per_s", B.median(rates[m[1]]))
  end
  for _, m in ipairs(modes) do
    B.report("lua", m[1] .. "_cpu_us", B.median(cpus[m[1]]))
  end
end

B.run {
  B.needs(tether, {"pool", "metrics", "trace"},
          {"obs", {"obs_none_per_s", "obs_metrics_per_s", "obs_logs_per_s",
                   "obs_trace_per_s", "obs_none_cpu_us",
                   "obs_metrics_cpu_us", "obs_logs_cpu_us",
                   "obs_trace_cpu_us"}, obs}),
}
