--- tether.worker: a process that drains a durable store (DESIGN section
-- 11).
--
-- `worker.run(opts)` makes a pool and drains the store into it again and
-- again: each `pool:drain_store` claims what the pool has room for, runs
-- it and acknowledges it; between rounds that found nothing the worker
-- waits `poll` seconds.  It runs until its context ends (or, with
-- `until_empty`, until the store holds nothing more for it), then drains
-- its pool.  Only functions of the modules in `allow` run: anything else
-- in the store becomes a dead letter with that reason.
--
-- `worker.main(args [, ctx])` reads the command line of
-- `tether worker --store URL [--pool NAME] [--workers N] [--require MOD]...`
-- and runs; `bin/tether worker` is a thin wrapper over it.
local tether = require "tether"

local M = {}

local known = {
  store = true, pool = true, workers = true, queue = true, allow = true,
  ctx = true, lease = true, poll = true, until_empty = true, name = true,
  max_deliveries = true, quiet = true,
}

local function add(total, rep)
  for k, v in pairs(rep) do total[k] = (total[k] or 0) + v end
end

--- M.run(opts) drains a store until `opts.ctx` ends (or, with
-- `until_empty`, until the store is empty for this worker).  Options:
-- `store` (a URL or a tether.Store), `pool` (drain only this pool
-- name), `workers` (default 4), `queue` (default 2 × workers), `allow`
-- (a list of module names; required: with none, nothing runs), `ctx`,
-- `lease` and `max_deliveries` (for a store opened from a URL), `poll`
-- (seconds between empty rounds, default 0.2), `until_empty`, `name`
-- (the pool's name, default "worker").  Returns a report {claimed,
-- completed, failed, refused, rounds}, or nil and an error when the
-- store cannot be opened or fails.
function M.run(opts)
  assert(type(opts) == "table", "worker.run: options table expected")
  for k in pairs(opts) do
    if not known[k] then
      error(("worker.run: unknown option '%s'"):format(tostring(k)), 2)
    end
  end
  local store = opts.store
  if type(store) == "string" then
    local err
    store, err = tether.store.open(store, {
      lease = opts.lease, max_deliveries = opts.max_deliveries })
    if not store then return nil, err end
  elseif tether.type(store) ~= "store" then
    error("worker.run: 'store' must be a URL or a tether.Store", 2)
  end
  local allow = opts.allow or {}
  local workers = opts.workers or 4
  local pool = tether.pool {
    name = opts.name or "worker", workers = workers,
    queue = opts.queue or workers * 2, quiet = opts.quiet,
  }
  local ctx, poll = opts.ctx, opts.poll or 0.2
  local total = { claimed = 0, completed = 0, failed = 0, refused = 0,
                  rounds = 0 }
  local result, failure = total, nil
  while true do
    local ok, rep = pool:drain_store(store, ctx, { pool = opts.pool,
                                                   allow = allow })
    total.rounds = total.rounds + 1
    if not ok then
      -- The context ended: a normal end.  Anything else is a failure.
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
  pool:drain()
  return result, failure
end

local usage = "usage: tether worker --store URL [--pool NAME] "
  .. "[--workers N] [--require MOD]..."

--- M.parse(args) reads a worker's command line (a list of strings) into
-- options for M.run; nil and a message when it is wrong.
function M.parse(args)
  local o, i = { allow = {} }, 1
  local allow = o.allow
  while i <= #args do
    local a, v = args[i], args[i + 1]
    if a == "--store" and v then o.store = v
    elseif a == "--pool" and v then o.pool = v
    elseif a == "--workers" and v then
      o.workers = math.tointeger(tonumber(v))
      if not o.workers or o.workers < 1 then
        return nil, "--workers needs a positive integer\n" .. usage
      end
    elseif a == "--require" and v then allow[#allow + 1] = v
    elseif a == "--lease" and v then o.lease = tonumber(v)
    elseif a == "--until-empty" then o.until_empty = true; i = i - 1
    else
      return nil, ("unknown or incomplete option '%s'\n%s"):format(a, usage)
    end
    i = i + 2
  end
  if not o.store then return nil, "--store is required\n" .. usage end
  if #allow == 0 then
    return nil, "at least one --require MOD is needed: only the functions "
      .. "of those modules run\n" .. usage
  end
  for _, m in ipairs(allow) do
    if not package.searchpath(m, package.path)
       and not package.searchpath(m, package.cpath) then
      return nil, ("cannot find module '%s' (--require)"):format(m)
    end
  end
  return o
end

--- M.main(args [, ctx]) parses the command line and runs; it returns the
-- report, or nil and a message.
function M.main(args, ctx)
  local o, err = M.parse(args)
  if not o then return nil, err end
  o.ctx = ctx
  return M.run(o)
end

return M
