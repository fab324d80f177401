--- tether.run: the `tether` command line (bin/tether).
--
--   tether run [options] script.lua [args...]
--   tether worker --store URL --require MOD... [options]
--   tether --version
--
-- `tether run` runs a Lua script with its arguments in `...` (and in the
-- global `arg`, as lua5.4 does) under a root context from
-- tether.run_context(), which SIGINT and SIGTERM cancel.  On such a
-- signal the script ends its own work, then every pool of the process
-- drains together, all within --drain seconds; what is still queued then
-- goes to the --store if there is one (named ops), the rest is abandoned
-- (one log line per op), a summary goes to stderr, and the process exits
-- with 130 (SIGINT) or 143 (SIGTERM).  A second signal ends it at once.
-- On a terminal, stderr shows one live progress line for all pools.
--
-- `tether worker` (lua/tether/worker.lua) drains a durable store in a
-- process of its own.
--
-- Commands and their options are tables (M.commands): a new command or
-- option is one more entry, parsed, checked and documented by the same
-- code.
local tether = require "tether"

local M = {}

local cli = require "tether.cli"

M.VERSION = require("tether.core")._VERSION

-- address checks the form of --admin's HOST:PORT (the server checks the
-- rest when it binds).
local function address(v)
  if v:match("^[%w%.%-]*:%d+$") or v:match("^%[[%x:%.]+%]:%d+$") then
    return v
  end
  return nil, "HOST:PORT (such as 127.0.0.1:9090)"
end

local seconds = cli.seconds

-- {====================================================================
-- Commands and options
-- =====================================================================

-- Each option: 'name' (the long form, --name), 'short' (-x, optional),
-- 'value' (the placeholder of its argument; nil for a flag), 'parse'
-- (turns the text into the value, or returns nil and what was expected),
-- 'default', 'help', 'many' (may be given several times: its value is
-- then the list of them).  Parsed options land in a table under their
-- names.  A command with a 'main(cl, out, err)' runs through it; its
-- 'options_title' heads its options in the help.
M.commands = {
  run = {
    usage = "tether run [options] script.lua [args...]",
    summary = "run a script under a root context that SIGINT and SIGTERM "
      .. "cancel, and drain every pool on the signal",
    about = [[
Runs script.lua with its arguments in `...` (and in the global `arg`),
under a root context from tether.run_context() that SIGINT and SIGTERM
cancel.  On such a signal the script ends its own work first (it stops
producing, shuts its servers down; meanwhile every pool still takes and
runs work, so that requests in flight can still hand work to them); once
the script has returned, or --drain seconds have passed, every pool
drains, all together, in what is left of that time.  What is still
queued then goes to the store if --store gave one (named ops with
plain-data arguments), and the rest, queued or running, is abandoned
(one log line per op on stderr); a summary follows, and tether exits
with 130 (SIGINT) or 143 (SIGTERM).  A second signal ends the process at
once.  When the script ends by itself, its pools drain as at any exit
(each for up to its exit_timeout, then the same: queued named ops to the
store, the rest abandoned) and tether exits with 0, or 1 if the script
raised an error.

--store URL opens that durable store (sqlite:PATH or
redis://[:PASSWORD@]HOST:PORT[/DB][?prefix=NAME]) before the script runs
and makes it the process's default overflow store
(tether.store.default): every pool made without an 'overflow' option
(overflow = false opts out) spills to it the named ops that find its
queue full, and puts its queued named ops back in it when a drain runs
out of time.  `tether worker --store URL` runs them later.

On a terminal, stderr shows one live progress line for all pools
(accepted, done, failed, dead, queued, running, rate); piped, nothing
extra is printed.

With --admin HOST:PORT, the admin page of every pool the script makes
is served there, on threads of its own, for as long as the process
lives (docs/admin.md).  Its actions (retry and drop dead letters,
drain a pool) need the token in the environment variable
TETHER_ADMIN_TOKEN, never on the command line; without it the page is
read-only, and an address off loopback is refused.]],
    options = {
      { name = "drain", value = "SECONDS", parse = seconds, default = 25,
        help = "how long pools may drain after a signal (default 25)" },
      { name = "admin", value = "ADDR", parse = address,
        help = "serve the admin page of every pool on ADDR (HOST:PORT)" },
      { name = "progress",
        help = "show the progress line even if stderr is not a terminal" },
      { name = "no-progress", help = "never show the progress line" },
      { name = "store", value = "URL",
        help = "the overflow store of every pool made without one "
          .. "(sqlite:PATH or redis://...): full queues spill to it, and "
          .. "queued named ops go back to it when the drain runs out" },
      { name = "help", short = "h", help = "show this help and exit" },
    },
  },
}

-- `tether worker`: a store's drainer (lua/tether/worker.lua).
M.commands.worker = require("tether.worker").command

-- The options of the command line itself, before any command.
M.global_options = {
  { name = "version", help = "print the version and exit" },
  { name = "help", short = "h", help = "show this help and exit" },
}

local function find_option(options, arg)
  for _, o in ipairs(options) do
    if arg == "--" .. o.name or (o.short and arg == "-" .. o.short) then
      return o
    end
  end
end

-- nearest returns the option name closest to 'word' (edit distance at
-- most 2), for "did you mean".
local function nearest(options, word)
  local names = {}
  for i, o in ipairs(options) do names[i] = o.name end
  return cli.nearest(names, word)
end

--- M.parse_options reads the options at argv[first..] up to the first
-- argument that is not an option (or "--"), and returns the options
-- table and the index of that argument, or nil and a message.
function M.parse_options(options, argv, first)
  local opts, i = {}, first
  for _, o in ipairs(options) do opts[o.name] = o.default end
  while i <= #argv do
    local a = argv[i]
    if a == "--" then return opts, i + 1 end
    if a:sub(1, 1) ~= "-" or a == "-" then break end
    local name, inline = a:match("^(%-%-[^=]+)=(.*)$")
    local o = find_option(options, name or a)
    if o == nil then
      local word = (name or a):gsub("^%-+", "")
      local guess = nearest(options, word)
      return nil, ("unknown option '%s'%s"):format(name or a,
        guess and ("; did you mean '--%s'?"):format(guess) or "")
    end
    if o.value then
      local v = inline
      if v == nil then
        i = i + 1
        v = argv[i]
      end
      if v == nil then
        return nil, ("option '--%s' needs %s"):format(o.name, o.value)
      end
      local parsed, want = v, nil
      if o.parse then parsed, want = o.parse(v) end
      if parsed == nil then
        return nil, ("option '--%s' expects %s, got '%s'"):format(
          o.name, want or o.value, v)
      end
      if o.many then
        -- An option given several times ('many'): the list of values.
        local list = opts[o.name] or {}
        list[#list + 1] = parsed
        parsed = list
      end
      opts[o.name] = parsed
    else
      if inline ~= nil then
        return nil, ("option '--%s' takes no value"):format(o.name)
      end
      opts[o.name] = true
    end
    i = i + 1
  end
  return opts, i
end

--- M.parse reads a whole command line: it returns {command = name,
-- options = {...}, script = path, args = {...}} (command nil for the
-- global options alone), or nil, a message and the command's name (nil
-- for an error before the command).
function M.parse(argv)
  local gopts, i = M.parse_options(M.global_options, argv, 1)
  if gopts == nil then return nil, i end
  local name = argv[i]
  if name == nil then return { options = gopts } end
  local cmd = M.commands[name]
  if cmd == nil then
    return nil, ("unknown command '%s'"):format(name)
  end
  local opts, j = M.parse_options(cmd.options, argv, i + 1)
  if opts == nil then return nil, j, name end
  local r = { command = name, global = gopts, options = opts,
              script = argv[j], args = {} }
  for k = j + 1, #argv do r.args[#r.args + 1] = argv[k] end
  return r
end

-- wrap breaks 'text' into lines of at most 79 columns: the first after
-- 'first' ('indent' columns wide), the others indented as much.
local function wrap(first, indent, text)
  local lines, line, empty = {}, first, true
  for word in text:gmatch("%S+") do
    if not empty and #line + 1 + #word > 79 then
      lines[#lines + 1] = line
      line, empty = (" "):rep(indent), true
    end
    line = line .. (empty and "" or " ") .. word
    empty = false
  end
  lines[#lines + 1] = line
  return table.concat(lines, "\n")
end

local function option_lines(options)
  local lines, width = {}, 0
  local left = {}
  for k, o in ipairs(options) do
    local s = (o.short and ("-%s, "):format(o.short) or "    ")
      .. "--" .. o.name .. (o.value and (" " .. o.value) or "")
    left[k] = s
    width = math.max(width, #s)
  end
  for k, o in ipairs(options) do
    lines[#lines + 1] = wrap(("  %-" .. width .. "s  "):format(left[k]),
                             width + 4, o.help)
  end
  return table.concat(lines, "\n")
end

--- M.help returns the help text of a command, or of the command line.
function M.help(name)
  local cmd = name and M.commands[name]
  if cmd then
    return ("Usage: %s\n\n%s\n\n%s\n%s\n"):format(cmd.usage, cmd.about,
      cmd.options_title or "Options (before the script; everything after "
      .. "it is the script's):", option_lines(cmd.options))
  end
  local names, lines = {}, {}
  for n in pairs(M.commands) do names[#names + 1] = n end
  table.sort(names)
  for _, n in ipairs(names) do
    lines[#lines + 1] = wrap(("  %-8s "):format(n), 11,
                             M.commands[n].summary)
  end
  return ("Usage: tether [--version] [--help] <command> [options] ...\n\n"
    .. "Commands:\n%s\n\nOptions:\n%s\n\n'tether <command> --help' tells "
    .. "more.\n"):format(table.concat(lines, "\n"),
    option_lines(M.global_options))
end

-- }====================================================================


-- {====================================================================
-- tether run
-- =====================================================================

-- progress shows one line on stderr, redrawn in place, with the totals
-- of every pool, until 'stopctx' ends; it runs on an engine thread.
local function progress(stopctx, every)
  local t = require "tether"
  local last_t, last_n = t.now(), nil
  local rate = 0
  repeat
    local s = t.pool_totals()
    local now, n = t.now(), s.completed + s.failed + s.dead
    if last_n and now > last_t then rate = (n - last_n) / (now - last_t) end
    last_t, last_n = now, n
    io.stderr:write(("\r\27[Ktether: %d pool%s  accepted %d  done %d  "
      .. "failed %d  dead %d  queued %d  running %d  %.1f/s"):format(
      s.pools, s.pools == 1 and "" or "s", s.submitted, s.completed,
      s.failed, s.dead, s.queued, s.inflight, rate))
    io.stderr:flush()
  until t.sleep(every, stopctx) == nil
  io.stderr:write("\r\27[K")
  io.stderr:flush()
end

-- watch waits, on an engine thread, for the run context to end.  When a
-- signal ended it, the script ends its own work first ('script_done':
-- it may shut a server down whose handlers still hand work to pools, so
-- the pools stay open meanwhile), for at most the --drain time; then
-- every pool drains in what is left of it.  Then the watcher either ends
-- the process itself or, if the script has ended and the main thread
-- waits for it (it took 'claim' first), hands it the result.
local function watch(ctx, drain, claim, result, show, stop_progress,
                     progress_done, script_done)
  local t = require "tether"
  ctx:wait()
  local cause = ctx:cause()
  if t.type(cause) ~= "error" or cause.code ~= "signal" then return end
  local t0 = t.now()
  local deadline = t0 + drain
  local sig = cause.signal
  if show then
    io.stderr:write(("\r\27[Ktether run: SIG%s: the script ends, then "
      .. "every pool drains, within %g s\n"):format(sig, drain))
  end
  script_done:wait(drain)
  local r = t.drain_all(math.max(0, deadline - t.now()))
  local code = sig == "INT" and 130 or 143
  local line = ("tether run: SIG%s: %d pool%s drained in %.2f s; %s%s\n")
    :format(sig, r.pools, r.pools == 1 and "" or "s", t.now() - t0,
            r.spilled == 0 and ""
            or ("%d queued op%s put back in the store; "):format(
              r.spilled, r.spilled == 1 and "" or "s"),
            r.abandoned == 0 and "nothing abandoned"
            or ("%d op%s abandoned (see the lines above)"):format(
              r.abandoned, r.abandoned == 1 and "" or "s"))
  if claim:try_recv() then
    stop_progress()
    if progress_done then progress_done:wait() end
    io.stderr:write(line)
    io.stderr:flush()
    io.stdout:flush()
    os.exit(code)
  end
  result:send({ code = code, line = line })
end

local function is_tty(fd)
  return os.execute(("[ -t %d ]"):format(fd)) == true
end

local function run(opts, script, args, out, err)
  -- usage reports a bad command line as every other one is reported.
  local function usage(msg)
    err:write("tether run: ", msg, "\nTry 'tether run --help' for more "
              .. "information.\n")
    return 2
  end
  if script == nil then return usage("no script given") end
  local chunk, lerr = loadfile(script)
  if chunk == nil then
    err:write("tether run: ", lerr, "\n")
    return 1
  end
  if opts.store then
    -- The store is the default overflow of every pool the script makes.
    local ok, store, serr = pcall(tether.store.open, opts.store)
    if not ok then
      return usage("option '--store': " .. (tostring(store):gsub(
        "^bad argument #1 to '[^']*' %((.*)%)$", "%1")))
    end
    if not store then
      err:write("tether run: ", tostring(serr), "\n")
      return 1
    end
    tether.store.default(store)
  end
  if opts.admin then
    local ok, srv = pcall(tether.admin.serve, { addr = opts.admin,
                                                name = "tether run" })
    if not ok then
      local why = tostring(srv)
      return usage("option '--admin': " .. opts.admin .. ": "
        .. (why:match("^bad argument #1 to '[^']*' %((.*)%)$") or why))
    end
    -- Kept for the life of the process: the page shows the exit drain.
    M.admin_server = srv
    local t = os.getenv("TETHER_ADMIN_TOKEN")
    err:write(("tether run: admin page at http://%s/%s\n"):format(
      srv:addr(), (t == nil or t == "") and " (read-only: no "
      .. "TETHER_ADMIN_TOKEN)" or ""))
    err:flush()
  end
  local ctx, stop = tether.run_context()
  local claim, result = tether.chan(1), tether.chan(1)
  claim:send(true)
  local show = opts.progress or (not opts["no-progress"] and is_tty(2))
  local pctx, pstop = tether.with_cancel(tether.background())
  local script_done, script_end = tether.with_cancel(tether.background())
  local phandle
  if show then phandle = tether.go(progress, pctx, 0.5) end
  tether.go(watch, ctx, opts.drain, claim, result, show, pstop, phandle,
            script_done)

  -- The script sees the runner's arguments as lua5.4 would show its own.
  _G.arg = { [0] = script }
  for k, v in ipairs(args) do _G.arg[k] = v end
  local ok, e = xpcall(chunk, debug.traceback, table.unpack(args))
  out:flush()
  script_end()

  local function signaled()
    local c = ctx:cause()
    return tether.type(c) == "error" and c.code == "signal"
  end
  -- Without a signal so far, the context is let go: a signal from here on
  -- takes its usual course (and the pools drain as at any exit).
  if not signaled() then stop() end
  if signaled() then
    if claim:try_recv() then
      local r = result:recv()
      pstop()
      if phandle then phandle:wait() end
      err:write(r.line)
      os.exit(r.code, true)
    end
    -- The watcher ends the process; until then, nothing more to do.
    tether.chan(0):recv()
  end
  pstop()
  if phandle then phandle:wait() end
  if not ok then
    err:write("tether run: ", tostring(e), "\n")
    return 1
  end
  return 0
end

--- M.main runs a command line ('argv' as lua5.4's arg table) and returns
-- the exit status; `tether run` ends the process itself on a signal.
function M.main(argv, out, err)
  out, err = out or io.stdout, err or io.stderr
  local cl, perr, cname = M.parse(argv)
  if cl == nil then
    local who = cname and ("tether " .. cname) or "tether"
    err:write(who, ": ", perr, "\nTry '", who, " --help' for more "
              .. "information.\n")
    return 2
  end
  if cl.command == nil then
    if cl.options.version then
      out:write("tether ", M.VERSION, " (", _VERSION, ")\n")
      return 0
    end
    if cl.options.help then
      out:write(M.help())
      return 0
    end
    err:write(M.help())
    return 2
  end
  if cl.options.help then
    out:write(M.help(cl.command))
    return 0
  end
  if cl.command == "run" then
    return run(cl.options, cl.script, cl.args, out, err)
  end
  if M.commands[cl.command].main then
    return M.commands[cl.command].main(cl, out, err)
  end
  return 2
end

-- }====================================================================

return M
