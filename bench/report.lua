-- report.lua: turns the result lines of the benchmark runs into the
-- markdown table of bench/README.md.
--
-- Usage (from the repository's root, as run.sh calls it):
--   lua5.4 bench/report.lua RESULTS MACHINE_FILE [README]
-- RESULTS holds lines "<run> <impl>.<metric> <value>" (impl: c, lua, go,
-- luv), or "<run> <impl>.<metric> missing <why>" for a measurement that
-- could not be made.  MACHINE_FILE holds lines "key: value" (date, cpus,
-- cpu, command, notes).  The table goes to stdout; with README, the part
-- of that file between the markers
--   <!-- results:begin --> and <!-- results:end -->
-- is replaced by the table and the machine's description.

local results_path, machine_path, readme_path = arg[1], arg[2], arg[3]
assert(results_path and machine_path, "usage: report.lua RESULTS MACHINE "
       .. "[README]")

-- {====================================================================
-- Reading the runs
-- =====================================================================

local runs = {}      -- key -> list of values, one per run
local missing = {}   -- key -> why it was not measured
local nruns = 0

for line in io.lines(results_path) do
  local run, key, rest = line:match("^(%d+)%s+(%S+)%s+(.*)$")
  if run then
    nruns = math.max(nruns, tonumber(run))
    local why = rest:match("^missing%s+(.*)$")
    local v = tonumber(rest)
    if why then
      missing[key] = why
    elseif v and v == v then
      runs[key] = runs[key] or {}
      table.insert(runs[key], v)
    end
  end
end

local machine = {}
for line in io.lines(machine_path) do
  local k, v = line:match("^(%w+):%s*(.*)$")
  if k then machine[k] = v end
end

-- median returns the median of the numbers in 't', leaving 't' as it is.
local function median(t)
  local s = {}
  for i, v in ipairs(t) do s[i] = v end
  table.sort(s)
  local n = #s
  if n % 2 == 1 then return s[(n + 1) // 2] end
  return (s[n // 2] + s[n // 2 + 1]) / 2
end

-- value returns the median of a key's runs, or nil.
local function value(key)
  local t = runs[key]
  if t and #t > 0 then return median(t) end
  return nil
end

-- }====================================================================


-- {====================================================================
-- Formatting
-- =====================================================================

-- sig formats a number with three significant digits, without a
-- scientific exponent.
local function sig(x)
  local a = math.abs(x)
  if a >= 100 then return string.format("%.0f", x) end
  if a >= 10 then return string.format("%.1f", x) end
  if a >= 1 then return string.format("%.2f", x) end
  return string.format("%.3g", x)
end

-- fmt formats a value by the unit in its metric's suffix.
local function fmt(key, x)
  if key:match("_ns$") then
    if x >= 1e6 then return sig(x / 1e6) .. " ms" end
    if x >= 1e3 then return sig(x / 1e3) .. " µs" end
    return sig(x) .. " ns"
  elseif key:match("_us$") then
    if x >= 1e3 then return sig(x / 1e3) .. " ms" end
    return sig(x) .. " µs"
  elseif key:match("_ms$") then
    return sig(x) .. " ms"
  elseif key:match("_per_s$") then
    if x >= 1e6 then return sig(x / 1e6) .. " M/s" end
    if x >= 1e3 then return sig(x / 1e3) .. " k/s" end
    return sig(x) .. " /s"
  elseif key:match("_kib$") then
    return sig(x) .. " KiB"
  elseif key:match("_calls$") then
    return string.format("%d", math.floor(x + 0.5))
  end
  return sig(x)
end

-- cost returns what a figure costs against its base figure, as a
-- fraction (negative when it is better): how much slower a rate is, or
-- how much more a time is; nil when one is missing.
local function cost(key, base_key)
  local x, b = value(key), value(base_key)
  if not x or not b or b == 0 then return nil end
  if key:match("_per_s$") then return 1 - x / b end
  return x / b - 1
end

-- cell formats the median of 'key', followed by its ratio to the peer's
-- median when there is one: tether ÷ peer; or, with 'base_key', by what
-- it costs against that rate of the same program.
local function cell(key, peer_key, peer_name, base_key)
  local x = value(key)
  if not x then
    return missing[key] and ("n/a (" .. missing[key] .. ")") or "n/a"
  end
  local s = fmt(key, x)
  local c = base_key and cost(key, base_key)
  if c then
    s = s .. string.format(" (cost %+.1f%%)", c * 100)
  end
  local p = peer_key and value(peer_key)
  if p and p ~= 0 then
    s = s .. string.format(" (%s× %s)", sig(x / p), peer_name)
  end
  if #runs[key] < nruns and missing[key] then
    s = s .. string.format(" [%d of %d runs; the others %s]", #runs[key],
                           nruns, missing[key])
  end
  return s
end

-- }====================================================================


-- {====================================================================
-- The rows
-- =====================================================================

-- Each row names its metric, its peer (and the peer's metric when it
-- differs: one Go shape is the peer of several of tether's), the peer's
-- label in the ratios, whether it has no C ('noc') or no Lua ('nolua')
-- figure, and its goals: who must compare how with the peer (or with a
-- bound, or equal a count).  A goal is better when lower (times, memory)
-- unless it says 'higher' (rates).  The goals are those of the issue on
-- the fast path where it set one for the row, else the benchmarks' first
-- ones.
local rows = {
  {shape = "with_cancel + cancel", metric = "with_cancel_ns",
   peer = "go", peer_label = "Go `context.WithCancel`",
   goals = {{impl = "c", factor = 0.7}, {impl = "lua", factor = 3}}},
  {shape = "with_timeout + cancel", metric = "with_timeout_ns",
   peer = "go", peer_label = "Go `context.WithTimeout`",
   goals = {{impl = "c", factor = 0.7}}},
  {shape = "with_timeout(without_cancel(p)) + cancel (detached)",
   metric = "detach_bound_ns", peer = "go",
   peer_label = "Go, `WithoutCancel` written for 1.19",
   goals = {{impl = "c", factor = 0.8}}},
  {shape = "value lookup through 10 layers", metric = "value10_ns",
   peer = "go", peer_label = "Go `ctx.Value`",
   goal = {impl = "c", peer = true}},
  {shape = "cancel propagation to 10,000 children (flat)",
   metric = "prop_flat_us", peer = "go", peer_label = "Go",
   goal = {impl = "c", peer = true}},
  {shape = "cancel propagation to 10,000 descendants (100 chains of "
     .. "depth 100)", metric = "prop_chain_us", peer = "go",
   peer_label = "Go", goal = {impl = "c", peer = true}},
  {shape = "seed pool (5 workers, queue 20, non-blocking submit, retry "
     .. "on full), no-op tasks", metric = "pool_tasks_per_s", peer = "go",
   peer_label = "Go, the same pool (goroutines + buffered channel)",
   goals = {{impl = "c", factor = 0.25, higher = true}}},
  {shape = "singleflight, 1,000 callers already waiting on one key (fn "
     .. "returns only after the last has joined): wall time per burst, "
     .. "each caller a thread (C) or a pool task (Lua)",
   metric = "sf_wall_ms", peer = "go",
   peer_label = "Go x/sync `singleflight`"},
  {shape = "singleflight, the same: calls of fn", metric = "sf_calls",
   peer = "go", peer_label = "Go x/sync `singleflight`", noratio = true,
   goals = {{impl = "c", equal = 1}, {impl = "lua", equal = 1}}},
  {shape = "singleflight, 1,000 callbacks (C): the same burst with "
     .. "`tt_flight_call_async` from one thread, first join → last "
     .. "callback", metric = "sf_async_wall_ms", peer = "go",
   peer_metric = "sf_wall_ms", nolua = true,
   peer_label = "Go x/sync `singleflight` (goroutines)",
   goals = {{impl = "c", factor = 10}}},
  {shape = "singleflight, 1,000 callbacks (C), each caller on a context "
     .. "that can be canceled (watched until the result comes)",
   metric = "sf_async_ctx_wall_ms", peer = "go", peer_metric = "sf_wall_ms",
   nolua = true, peer_label = "Go x/sync `singleflight` (goroutines)"},
  {shape = "errgroup with 2 no-op tasks + wait", metric = "group2_ns",
   peer = "go", peer_label = "Go x/sync `errgroup.WithContext`",
   goals = {{impl = "c", factor = 10}}},
  {shape = "closure tasks/s, 2 workers", metric = "closure2_per_s",
   peer = "luv", peer_label = "luv `uv.new_work`, 2 threads",
   noc = true, goals = {{impl = "lua", factor = 1.5, higher = true}}},
  {shape = "round trip of one no-op task", metric = "roundtrip_us",
   peer = "luv", peer_label = "luv `uv.new_work` + `uv.run`",
   noc = true, goals = {{impl = "lua", factor = 0.7}}},
  {shape = "tasks/s of a closure with a 100-element table upvalue, "
     .. "2 workers", metric = "upvalue100_per_s", peer = "luv",
   peer_label = "luv, the 100 elements as arguments", noc = true,
   goals = {{impl = "lua", factor = 1, higher = true}}},
  {shape = "new worker state (pool of 1 + first task, minus a reused "
     .. "worker's round trip)", metric = "newstate_us", noc = true,
   goal = {impl = "lua", bound = 100, unit = "µs"}},
  {shape = "RSS per idle worker (50 workers that each ran a task)",
   metric = "rss_worker_kib", peer = "luv",
   peer_label = "luv, 50 pool threads", noc = true,
   goal = {impl = "lua", bound = 64, unit = "KiB"}},
  {shape = "interrupt `while true do end`: shutdown cancel → handle "
     .. "resolved", metric = "interrupt_cancel_us", noc = true,
   goal = {impl = "lua", bound = 50, unit = "µs"}},
  {shape = "interrupt `while true do end`: op deadline → handle "
     .. "resolved", metric = "interrupt_timeout_us", noc = true,
   goal = {impl = "lua", bound = 50, unit = "µs"}},
  {shape = "Ctrl-C: SIGINT → a blocked `tether.sleep` raises "
     .. "`interrupted!`", metric = "ctrl_c_wake_ms", noc = true,
   goal = {impl = "lua", bound = 10, unit = "ms"}},
  {shape = "SIGUSR1 → its `signal_context` done, `ctx:wait()` back",
   metric = "sigctx_wake_ms", noc = true},
  {shape = "batches: 10,000 no-op closure tasks, 2 workers, `pool:submit` "
     .. "in a loop", metric = "batch_loop_per_s", noc = true},
  {shape = "the same with one `pool:submit_many`",
   metric = "batch_many_per_s", vs = "batch_loop_per_s", noc = true},
  {shape = "the same with one `tether.map` (waits for the results)",
   metric = "batch_map_per_s", vs = "batch_loop_per_s", noc = true},
  {shape = "observability off: seed pool (C), closure tasks on 2 workers "
     .. "(Lua)", metric = "obs_none_per_s"},
  {shape = "the same with metrics", metric = "obs_metrics_per_s",
   base = "obs_none_per_s", goal = {cost = 5}},
  {shape = "the same with metrics + a log line per op outcome (level "
     .. "info)", metric = "obs_logs_per_s", base = "obs_none_per_s",
   goal = {cost = 5}},
  {shape = "the same with metrics + a span per attempt (always sampled, "
     .. "exported as OTLP JSON)", metric = "obs_trace_per_s",
   base = "obs_none_per_s", goal = {cost = 15}},
  {shape = "CPU time per task, observability off (the same programs)",
   metric = "obs_none_cpu_us"},
  {shape = "CPU time per task with metrics", metric = "obs_metrics_cpu_us",
   base = "obs_none_cpu_us"},
  {shape = "CPU time per task with metrics + log lines (info)",
   metric = "obs_logs_cpu_us", base = "obs_none_cpu_us"},
  {shape = "CPU time per task with metrics + spans",
   metric = "obs_trace_cpu_us", base = "obs_none_cpu_us"},
}

-- one_goal says whether the goal 'g' of a row is met in this run.
local function one_goal(row, g)
  if g.cost then
    -- Both programs: the C seed pool and the Lua closure tasks.
    local want = string.format("cost ≤ %d%% (C and Lua)", g.cost)
    local ok = true
    for _, impl in ipairs {"c", "lua"} do
      local c = cost(impl .. "." .. row.metric, impl .. "." .. row.base)
      if c == nil then return want .. ": n/a" end
      ok = ok and c <= g.cost / 100
    end
    return want .. ": " .. (ok and "**met**" or "**missed**")
  end
  local x = value(g.impl .. "." .. row.metric)
  local who = g.impl == "c" and "C" or "Lua"
  local peer_name = row.peer == "go" and "Go" or "luv"
  local want, ok
  if g.equal then
    want = string.format("%s = %g", who, g.equal)
    ok = x and x == g.equal
  elseif g.bound then
    want = string.format("%s ≤ %d %s", who, g.bound, g.unit)
    ok = x and x <= g.bound
  else
    local p = value(row.peer .. "." .. (row.peer_metric or row.metric))
    local f = g.factor or 1
    local rel = g.higher and "≥" or "≤"
    want = f == 1 and string.format("%s %s %s", who, rel, peer_name)
           or string.format("%s %s %g× %s", who, rel, f, peer_name)
    if x and p then
      if g.higher then ok = x >= f * p else ok = x <= f * p end
    end
  end
  if ok == nil then return want .. ": n/a" end
  return want .. ": " .. (ok and "**met**" or "**missed**")
end

-- goal_cell says whether each of a row's goals is met in this run.
local function goal_cell(row)
  local goals = row.goals or (row.goal and {row.goal})
  if not goals then return "—" end
  local cells = {}
  for i, g in ipairs(goals) do cells[i] = one_goal(row, g) end
  return table.concat(cells, "; ")
end

local out = {}
local function put(s) out[#out + 1] = s end

put("| shape | tether (C API) | tether (Lua API) | peer | goal |")
put("|---|---|---|---|---|")
for _, row in ipairs(rows) do
  local pmetric = row.peer_metric or row.metric
  local pk = row.peer and not row.noratio and (row.peer .. "." .. pmetric)
             or nil
  local pname = row.peer == "go" and "Go" or "luv"
  local cb = row.base and ("c." .. row.base)
  local lb = row.base and ("lua." .. row.base)
  local c = row.noc and "—" or cell("c." .. row.metric, pk, pname, cb)
  local l = row.nolua and "—" or cell("lua." .. row.metric, pk, pname, lb)
  local x, v = value("lua." .. row.metric), row.vs and value("lua." .. row.vs)
  if x and v and v ~= 0 then
    -- A rate against another way of doing the same in the same run.
    l = l .. string.format(" (%s× the loop)", sig(x / v))
  end
  local p = "—"
  if row.peer then
    p = cell(row.peer .. "." .. pmetric) .. ", " .. row.peer_label
  end
  put(string.format("| %s | %s | %s | %s | %s |", row.shape, c, l, p,
                    goal_cell(row)))
end
local table_md = table.concat(out, "\n")

-- {====================================================================
-- The HTTP table (bench/http.sh): tether.http against nginx with
-- lua-nginx-module and lua-http, same handlers, same run
-- =====================================================================

local http_rows = {
  {shape = "\"hello\": requests/s", metric = "http_hello_per_s",
   goals = {{"nginx", 0.5}, {"luahttp", 3}}, higher = true},
  {shape = "\"hello\": p99 latency", metric = "http_hello_p99_ms"},
  {shape = "\"hello\" with metrics = false, in turn with the next two "
     .. "(2 s rounds): requests/s", metric = "http_hello_bare_per_s"},
  {shape = "\"hello\" with the server's HTTP metrics (the default)",
   metric = "http_hello_metrics_per_s", base = "http_hello_bare_per_s",
   cost = 5},
  {shape = "\"hello\" with metrics and a server span per request (always "
     .. "sampled, OTLP JSON to /dev/null)",
   metric = "http_hello_traced_per_s", base = "http_hello_bare_per_s",
   cost = 15},
  {shape = "CPU time of the server per \"hello\", metrics = false",
   metric = "http_hello_bare_cpu_us"},
  {shape = "the same with the server's HTTP metrics",
   metric = "http_hello_metrics_cpu_us", base = "http_hello_bare_cpu_us"},
  {shape = "the same with metrics and a server span per request",
   metric = "http_hello_traced_cpu_us", base = "http_hello_bare_cpu_us"},
  {shape = "handler that sleeps 1 ms (on its context): requests/s",
   metric = "http_sleep_per_s", goals = {{"nginx", 1}, {"luahttp", 3}},
   higher = true},
  {shape = "handler that sleeps 1 ms: p99 latency",
   metric = "http_sleep_p99_ms"},
  {shape = "client hang-up → the handler's context done: median",
   metric = "http_hangup_p50_us", bound = 1000, bound_label = "≤ 1 ms"},
  {shape = "client hang-up → the handler's context done: p99",
   metric = "http_hangup_p99_us"},
}
local http_peer_names = {nginx = "nginx", luahttp = "lua-http"}

-- http_cell formats tether's median with its ratios to both peers.
local function http_cell(metric)
  local key = "tether." .. metric
  local x = value(key)
  if not x then
    return missing[key] and ("n/a (" .. missing[key] .. ")") or "n/a"
  end
  local parts = {}
  for _, peer in ipairs {"nginx", "luahttp"} do
    local p = value(peer .. "." .. metric)
    if p and p ~= 0 then
      parts[#parts + 1] = string.format("%s× %s", sig(x / p),
                                        http_peer_names[peer])
    end
  end
  local s = fmt(key, x)
  if #parts > 0 then s = s .. " (" .. table.concat(parts, ", ") .. ")" end
  return s
end

local function http_goal(row)
  local x = value("tether." .. row.metric)
  if row.cost then
    local c = cost("tether." .. row.metric, "tether." .. row.base)
    local want = string.format("cost ≤ %d%%", row.cost)
    if c == nil then return want .. ": n/a" end
    return want .. ": " .. (c <= row.cost / 100 and "**met**"
                            or "**missed**")
  end
  if row.bound then
    local want = row.bound_label
    if not x then return want .. ": n/a" end
    return want .. ": " .. (x <= row.bound and "**met**" or "**missed**")
  end
  if not row.goals then return "—" end
  local parts = {}
  for _, g in ipairs(row.goals) do
    local p = value(g[1] .. "." .. row.metric)
    local want = string.format("≥ %g× %s", g[2], http_peer_names[g[1]])
    if x and p then
      parts[#parts + 1] = want .. ": "
        .. (x >= g[2] * p and "**met**" or "**missed**")
    else
      parts[#parts + 1] = want .. ": n/a"
    end
  end
  return table.concat(parts, "; ")
end

local have_http = false
for k in pairs(runs) do
  if k:match("%.http_") then have_http = true end
end
for k in pairs(missing) do
  if k:match("%.http_") then have_http = true end
end
if have_http then
  local h = {}
  h[#h + 1] = "| HTTP (wrk -t2 -c50 -d5s, 127.0.0.1) | tether.http | "
    .. "nginx + lua-nginx-module | lua-http | goal |"
  h[#h + 1] = "|---|---|---|---|---|"
  for _, row in ipairs(http_rows) do
    local function peer(impl)
      local k = impl .. "." .. row.metric
      if row.metric:match("hangup") or row.base
         or row.metric:match("_bare_") or row.metric:match("_cpu_") then
        return "—"
      end
      return cell(k)
    end
    local mine = row.base and cell("tether." .. row.metric, nil, nil,
                                   "tether." .. row.base)
                 or http_cell(row.metric)
    h[#h + 1] = string.format("| %s | %s | %s | %s | %s |", row.shape,
                              mine, peer("nginx"), peer("luahttp"),
                              http_goal(row))
  end
  table_md = table_md .. "\n\n" .. table.concat(h, "\n")
end

-- }====================================================================

-- }====================================================================


-- {====================================================================
-- Output
-- =====================================================================

print(table_md)

if readme_path then
  local f = assert(io.open(readme_path, "r"))
  local text = f:read("a")
  f:close()
  local lines = {
    "<!-- results:begin -->",
    string.format("Measured on %s with `%s`, on a machine with %s CPUs "
                  .. "(%s), %s; each figure is the median of %d runs.",
                  machine.date or "?", machine.command or "make bench",
                  machine.cpus or "?", machine.cpu or "?",
                  machine.os or "Linux", nruns),
    "Ratios are tether ÷ peer in the same run: below 1 is faster for "
      .. "times and memory, above 1 is faster for rates.",
    "",
    table_md,
    "",
  }
  if machine.notes and machine.notes ~= "" then
    lines[#lines + 1] = machine.notes
    lines[#lines + 1] = ""
  end
  lines[#lines + 1] = "<!-- results:end -->"
  local section = table.concat(lines, "\n")
  local b = text:find("<!-- results:begin -->", 1, true)
  local _, e = text:find("<!-- results:end -->", 1, true)
  assert(b and e, readme_path .. " has no results markers")
  text = text:sub(1, b - 1) .. section .. text:sub(e + 1)
  f = assert(io.open(readme_path, "w"))
  f:write(text)
  f:close()
end

-- }====================================================================
