-- tether.lint.cli: the command line of tether-lint.
--
-- cli.main(args) reads the options, lints the paths and prints the report;
-- its result is the exit status. bin/tether-lint is a thin wrapper.

local rules = require "tether.lint.rules"
local check = require "tether.lint.check"
local report = require "tether.lint.report"

local cli = {}

-- The text of --help.
cli.usage = [[
Usage: tether-lint [options] FILE|DIR...

Finds partial-cancellation bugs in Lua code that uses tether. Directories
are searched recursively for *.lua files; "-" reads the standard input.

Options:
  --formatter NAME   output format: default (one line per finding, then a
                     summary) or json
  --ignore CODES     drop these codes (comma-separated, e.g. W101,W103)
  --only CODES       keep only these codes
  -h, --help         print this help and exit

Codes:
  W101  leaked context: spawned work captures a context that is not
        detached
  W102  unbounded detach: a context from without_cancel runs work with no
        timeout
  W103  lost cancel: a cancel function is discarded or not called on all
        paths
  E010  a file could not be read
  E011  a file could not be parsed (or Lua refuses to load it)
  E012  a file could not be analysed

Suppress a finding with a comment on its line:
  -- tether-lint: ignore W101      (or just "ignore" for every code)

Exit status: 0 no findings, 1 warnings, 2 a file could not be read,
parsed or analysed, 3 bad command line.
]]

-- Reads a list of warning codes ("W101,W103"); returns it, or nil and an
-- error.
local function parse_codes(text)
  local list = {}
  for code in text:gmatch("[^%s,]+") do
    if not rules.warnings[code] then
      return nil, "unknown code '" .. code .. "'"
    end
    list[#list + 1] = code
  end
  if #list == 0 then
    return nil, "no codes given"
  end
  return list
end

-- Reads the command line; returns options and paths, or nil and an error.
local function parse_args(args)
  local opts, paths = {formatter = "default"}, {}
  local i = 1
  while i <= #args do
    local a = args[i]
    local name, value = a:match("^(%-%-[%w-]+)=(.*)$")
    name = name or a
    if name == "-h" or name == "--help" then
      opts.help = true
    elseif name == "--formatter" or name == "--ignore" or name == "--only" then
      if not value then
        i = i + 1
        value = args[i]
        if not value then
          return nil, "option " .. name .. " needs a value"
        end
      end
      if name == "--formatter" then
        if value ~= "default" and value ~= "json" then
          return nil, "unknown formatter '" .. value .. "'"
        end
        opts.formatter = value
      else
        local codes, err = parse_codes(value)
        if not codes then
          return nil, err
        end
        opts[name:sub(3)] = codes
      end
    elseif a == "--" then
      table.move(args, i + 1, #args, #paths + 1, paths)
      break
    elseif a:sub(1, 1) == "-" and a ~= "-" then
      return nil, "unknown option '" .. a .. "'"
    else
      paths[#paths + 1] = a
    end
    i = i + 1
  end
  return opts, paths
end

-- cli.main(args [, out, err]) -> exit status
--
-- Runs the command line `args` (a list of strings), writing to the files
-- `out` and `err` (default io.stdout and io.stderr).
function cli.main(args, out, err)
  out, err = out or io.stdout, err or io.stderr
  local opts, paths = parse_args(args)
  if not opts then
    err:write("tether-lint: ", paths, "\n",
      "Try 'tether-lint --help' for more information.\n")
    return 3
  end
  if opts.help then
    out:write(cli.usage)
    return 0
  end
  if #paths == 0 then
    err:write("tether-lint: no files given\n",
      "Try 'tether-lint --help' for more information.\n")
    return 3
  end
  local r = check.paths(paths, opts)
  out:write(report.format(r, opts.formatter))
  if r.errors > 0 then
    return 2
  end
  return r.warnings > 0 and 1 or 0
end

return cli
