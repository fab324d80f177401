--- tether.worker: a process that drains a durable store (DESIGN section
-- 11), and the `tether worker` command.
--
-- `worker.run(opts)` makes a pool and drains the store into it again and
-- again: each `pool:drain_store` claims what the pool has room for, runs
-- it and acknowledges it; between rounds that found nothing the worker
-- waits `poll` seconds.  It runs until its context ends (or, with
-- `until_empty`, until the store holds nothing more for it), then lets
-- the ops it claimed finish (for at most `drain` seconds).  Only
-- functions of the modules in `allow` run: anything else in the store
-- becomes a dead letter with that reason.
--
-- `tether worker --store URL --require MOD... [options]` (bin/tether,
-- through tether.run) is `worker.command`: it runs `worker.run` under
-- tether.run_context() until SIGINT or SIGTERM.  `worker.main(args [,
-- ctx])` reads the same command line and runs, for scripts.
local tether = require "tether"
local cli = require "tether.cli"

local M = {}

local known = {
  store = true, pool = true, workers = true, queue = true, allow = true,
  ctx = true, lease = true, poll = true, until_empty = true, name = true,
  max_deliveries = true, quiet = true, drain = true,
}

local function add(total, rep)
  for k, v in pairs(rep) do
    if k == "claimed" or k == "refused" then total[k] = total[k] + v end
  end
end

--- M.run(opts) drains a store until `opts.ctx` ends (or, with
-- `until_empty`, until the store is empty for this worker).  Options:
-- `store` (a URL or a tether.Store), `pool` (drain only this pool
-- name), `workers` (default 4), `queue` (default 2 × workers), `allow`
-- (a list of module names; required: with none, nothing runs), `ctx`,
-- `lease` and `max_deliveries` (for a store opened from a URL), `poll`
-- (seconds between empty rounds, default 0.2), `until_empty`, `name`
-- (the pool's name, default "worker"), `drain` (how long the ops it
-- claimed may still run once it stops claiming; default: as long as
-- they take).  Returns a report {claimed, completed, failed, refused,
-- rounds, left, seconds} (`left`: ops still running when the drain time
-- ran out; their records go back to the store when their lease ends;
-- `seconds`: how long that last drain took), or nil and an error when
-- the store cannot be opened or fails.
function M.run(opts)
  if type(opts) ~= "table" then
    error(("bad argument #1 to 'run' (table expected, got %s)"):format(
      type(opts) == "nil" and "no value" or type(opts)), 2)
  end
  for k in pairs(opts) do
    if not known[k] then
      local names = {}
      for name in pairs(known) do names[#names + 1] = name end
      table.sort(names)
      local guess = type(k) == "string" and cli.nearest(names, k)
      error(("bad argument #1 to 'run' (unknown option '%s'%s)"):format(
        tostring(k), guess and ("; did you mean '%s'?"):format(guess)
        or ""), 2)
    end
  end
  local store, owned = opts.store, false
  if type(store) == "string" then
    local err
    store, err = tether.store.open(store, {
      lease = opts.lease, max_deliveries = opts.max_deliveries })
    if not store then return nil, err end
    owned = true
  elseif tether.type(store) ~= "store" then
    error("bad argument #1 to 'run' (field 'store' must be a URL or a "
      .. "tether.Store)", 2)
  end
  local allow = opts.allow or {}
  local workers = opts.workers or 4
  -- The pool's own exit drain gives up at once: the drain below is the
  -- one that waits, and what it leaves is still leased in the store.
  local pool = tether.pool {
    name = opts.name or "worker", workers = workers,
    queue = opts.queue or workers * 2, quiet = opts.quiet,
    overflow = false, exit_timeout = 0,
  }
  local ctx, poll = opts.ctx, opts.poll or 0.2
  local total = { claimed = 0, completed = 0, failed = 0, refused = 0,
                  rounds = 0, left = 0, seconds = 0 }
  local result, failure = total, nil
  while true do
    local ok, rep, part = pool:drain_store(store, ctx, { pool = opts.pool,
                                                         allow = allow })
    total.rounds = total.rounds + 1
    if not ok then
      -- The context ended: a normal end (what it claimed comes third).
      -- Anything else is a failure.
      if part then add(total, part) end
      if not (ctx and ctx:err()) then result, failure = nil, rep end
      break
    end
    add(total, rep)
    if ctx and ctx:err() then break end
    if opts.until_empty then
      local st, err = store:stats(opts.pool)
      if not st then
        result, failure = nil, err
        break
      end
      if st.depth == 0 then break end
    end
    if rep.claimed == 0 then tether.sleep(poll, ctx) end
  end
  -- Claimed ops run to their end (and are acknowledged as they end), for
  -- at most 'drain' seconds.
  local t0 = tether.now()
  if opts.drain then
    pool:drain(tether.with_timeout(tether.background(), opts.drain))
  else
    pool:drain()
  end
  local s = pool:stats()
  total.seconds = tether.now() - t0
  total.completed, total.failed = s.completed, s.failed + s.dead
  total.left = s.queued + s.inflight
  -- A store opened here from a URL is this call's to close.
  if owned then store:close() end
  return result, failure
end

-- {====================================================================
-- tether worker
-- =====================================================================

local seconds = cli.seconds

local function positive(v)
  local n = tonumber(v)
  if n == nil or n ~= n or n <= 0 or n == math.huge then
    return nil, "a positive number of seconds"
  end
  return n
end

local function count(v)
  local n = math.tointeger(tonumber(v))
  if n == nil or n < 1 or n > 4096 then
    return nil, "an integer from 1 to 4096"
  end
  return n
end

local function plural(n, what)
  return ("%d %s%s"):format(n, what, n == 1 and "" or "s")
end

-- The command as tether.run's command table reads it: its options are
-- parsed, checked and documented by the same code as `tether run`'s.
M.command = {
  usage = "tether worker --store URL --require MOD [--require MOD]... "
    .. "[options]",
  summary = "drain a durable store in a process of its own until SIGINT "
    .. "or SIGTERM",
  about = [[
Claims the ops that pools spilled to the store at URL (sqlite:PATH or
redis://[:PASSWORD@]HOST:PORT[/DB][?prefix=NAME]) whenever its own pool
has room, runs them on --workers threads and acknowledges each as it
ends; several workers may drain one store.  Only functions of the
modules given with --require run: each is loaded at start, so that a
typo fails at once, and an op of any other module becomes a dead letter
of the store with that reason.  Without a --require nothing would run,
so at least one is needed.

On SIGINT or SIGTERM (through tether.run_context()) it stops claiming,
lets the ops it claimed finish for up to --drain seconds, prints a
summary on stderr and exits with 130 (SIGINT) or 143 (SIGTERM), as
`tether run` does; an op still running then is abandoned here, and its
record, never acknowledged, goes to another worker once its lease ends,
so nothing is lost (delivery is at least once).  A second signal ends
the process at once.  With --until-empty it ends by itself, with 0, once
the store holds nothing more for it.  It exits 1 when the store fails,
2 on a bad command line.  A line on stderr tells when it starts (with
its pid).]],
  options_title = "Options:",
  options = {
    { name = "store", value = "URL",
      help = "the store to drain (required)" },
    { name = "require", value = "MOD", many = true,
      help = "let the functions of module MOD run (repeat for more)" },
    { name = "pool", value = "NAME",
      help = "drain only the ops of pools named NAME (default: all)" },
    { name = "workers", value = "N", parse = count, default = 4,
      help = "how many ops run at once (default 4)" },
    { name = "drain", value = "SECONDS", parse = seconds, default = 25,
      help = "how long claimed ops may finish after a signal (default "
        .. "25)" },
    { name = "lease", value = "SECONDS", parse = positive,
      help = "how long a claim lasts unless renewed (default 30)" },
    { name = "until-empty",
      help = "end, with status 0, once the store is empty for it" },
    { name = "help", short = "h", help = "show this help and exit" },
  },
}

local function usage_error(err, msg)
  err:write("tether worker: ", msg, "\nTry 'tether worker --help' for "
            .. "more information.\n")
  return 2
end

--- M.check(o) checks parsed command-line options (M.command's) and
-- loads the --require modules; it returns options for M.run, or nil,
-- the message and the exit status (2: the command line, 1: a module
-- that failed to load).
function M.check(o)
  if not o.store then return nil, "--store URL is required", 2 end
  local allow = o.require or {}
  if #allow == 0 then
    return nil, "at least one --require MOD is needed: only the functions "
      .. "of those modules run", 2
  end
  for _, m in ipairs(allow) do
    if package.loaded[m] == nil and package.preload[m] == nil
       and not package.searchpath(m, package.path)
       and not package.searchpath(m, package.cpath) then
      return nil, ("--require %s: module '%s' not found"):format(m, m), 2
    end
    local ok, e = pcall(require, m)
    if not ok then
      return nil, ("--require %s: %s"):format(m, tostring(e)), 1
    end
  end
  return { store = o.store, pool = o.pool, workers = o.workers,
           allow = allow, lease = o.lease, drain = o.drain,
           until_empty = o["until-empty"] or nil }
end

--- M.command.main(cl, out, err) runs `tether worker` (cl: what
-- tether.run's parse returned) and returns its exit status.
function M.command.main(cl, _, err)
  if cl.script ~= nil then
    return usage_error(err, ("unexpected argument '%s'"):format(cl.script))
  end
  local o, msg, status = M.check(cl.options)
  if not o then
    if status == 2 then return usage_error(err, msg) end
    err:write("tether worker: ", msg, "\n")
    return status
  end
  local okopen, store, oerr = pcall(tether.store.open, o.store,
                                    { lease = o.lease })
  if not okopen then
    return usage_error(err, "--store: " .. (tostring(store):gsub(
      "^bad argument #1 to '[^']*' %((.*)%)$", "%1")))
  end
  if not store then
    err:write("tether worker: ", tostring(oerr), "\n")
    return 1
  end
  o.store = store
  local ctx = tether.run_context()
  o.ctx = ctx
  local pid = io.open("/proc/self/stat")
  pid = pid and pid:read("n")
  err:write(("tether worker %s: draining %s (%s) with %s; allowed: %s\n")
    :format(tostring(pid), store:url(),
            o.pool and ("pool " .. o.pool) or "every pool",
            plural(o.workers, "worker"), table.concat(o.allow, ", ")))
  err:flush()
  local rep, ferr = M.run(o)
  local cause = ctx:cause()
  local sig = tether.type(cause) == "error" and cause.code == "signal"
    and cause.signal or nil
  if not rep then
    err:write("tether worker: ", tostring(ferr), "\n")
    return 1
  end
  err:write(("tether worker: %s: claimed %d, completed %d, failed %d, "
    .. "refused %d; drained in %.2f s; %s\n"):format(
    sig and ("SIG" .. sig) or "store empty", rep.claimed, rep.completed,
    rep.failed, rep.refused, rep.seconds,
    rep.left == 0 and "nothing left running"
    or (plural(rep.left, "op") .. " still running, left to their lease")))
  err:flush()
  store:close()
  if sig then return sig == "INT" and 130 or 143 end
  return 0
end

--- M.parse(args) reads a worker's command line (a list of strings) into
-- options for M.run, loading the --require modules; nil and a message
-- when it is wrong.
function M.parse(args)
  local run = require "tether.run"
  local o, i = run.parse_options(M.command.options, args, 1)
  if not o then return nil, i end
  if args[i] ~= nil then
    return nil, ("unexpected argument '%s'"):format(args[i])
  end
  local r, msg = M.check(o)
  return r, msg
end

--- M.main(args [, ctx]) parses the command line and runs; it returns the
-- report, or nil and a message.
function M.main(args, ctx)
  local o, err = M.parse(args)
  if not o then return nil, err end
  o.ctx = ctx
  return M.run(o)
end

-- }====================================================================

return M
