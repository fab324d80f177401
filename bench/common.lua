-- common.lua: helpers shared by the Lua benchmarks (loaded with dofile).
--
-- Each benchmark prints one line "<impl>.<metric> <value>", the format
-- bench/run.sh collects.  The unit is in the metric's suffix: _ns (ns per
-- operation), _us (microseconds), _ms (milliseconds), _per_s (operations
-- per second), _kib (KiB), _calls (a count).

local M = {}

-- The module and its C core are found from the repository's root, where
-- run.sh starts every benchmark; BENCH_BUILD names another build folder.
package.path = "./lua/?.lua;./lua/?/init.lua;" .. package.path
package.cpath = (os.getenv("BENCH_BUILD") or "./build") .. "/?.so;"
                .. package.cpath

-- M.filter keeps only the benchmarks whose name contains it (the first
-- command-line argument).
M.filter = arg and arg[1] or ""

-- M.report prints one result line.
function M.report(impl, metric, value)
  io.write(string.format("%s.%s %.6g\n", impl, metric, value))
  io.flush()
end

-- M.missing records a measurement that cannot be made, and why.
function M.missing(impl, metric, why)
  io.write(string.format("%s.%s missing %s\n", impl, metric, why))
  io.flush()
end

-- M.needs wraps a benchmark that needs some of tether's functions: while
-- the module lacks one, the benchmark's metrics are recorded as not built.
-- It takes and returns an entry of M.run's list.
function M.needs(tether, names, entry)
  for _, name in ipairs(names) do
    if tether[name] == nil then
      return {entry[1], entry[2], function()
        for _, m in ipairs(entry[2]) do M.missing("lua", m, "not built") end
      end, explicit = entry.explicit}
    end
  end
  return entry
end

-- M.median returns the median of the numbers in 't' (sorted in place).
function M.median(t)
  table.sort(t)
  return t[(#t + 1) // 2]
end

-- M.run runs the benchmarks of 'list' whose name contains the filter and
-- fails if none does.  Each entry is {name, metrics, fn [, explicit =
-- true]}: 'metrics' lists the metric names it reports, and an 'explicit'
-- benchmark runs only when the filter is given.  With the argument
-- "--list", it prints one line "name metric,metric..." per benchmark that
-- runs by default, for run.sh, which runs each in a process of its own.
function M.run(list)
  if M.filter == "--list" then
    for _, b in ipairs(list) do
      if not b.explicit then
        print(b[1] .. " " .. table.concat(b[2], ","))
      end
    end
    return
  end
  local ran = 0
  for _, b in ipairs(list) do
    local match = b[1]:find(M.filter, 1, true)
    if match and (M.filter ~= "" or not b.explicit) then
      collectgarbage()
      b[3]()
      ran = ran + 1
    end
  end
  if ran == 0 then
    io.stderr:write("no benchmark matches '", M.filter, "'\n")
    os.exit(1)
  end
end

-- M.warm makes each of a pool's 'n' workers run one task, so that every
-- worker has its Lua state before anything is timed: each task reports on
-- a channel and then holds its worker until a gate context is canceled.
function M.warm(tether, pool, n)
  local bg = tether.background()
  local ready = tether.chan(n)
  local gate, open = tether.with_cancel(bg)
  local hs = {}
  for i = 1, n do
    hs[i] = assert(pool:submit(bg, "warm", function(_, r, g)
      r:send(true)
      g:wait()
    end, ready, gate))
  end
  for _ = 1, n do ready:recv() end
  open()
  for i = 1, n do
    local _, err = hs[i]:wait()
    assert(err == nil, tostring(err))
  end
end

-- M.rss_kib reads the resident set size of this process in KiB.
function M.rss_kib()
  for line in io.lines("/proc/self/status") do
    local kib = line:match("^VmRSS:%s+(%d+)%s+kB")
    if kib then return tonumber(kib) end
  end
  error("VmRSS not found in /proc/self/status")
end

return M
