-- tether.lint.check: linting a source, a file, or files and directories.
--
-- Each file is linted on its own: whatever goes wrong with one (it cannot
-- be read, parsed or analysed) becomes that file's one error finding, and
-- the others are linted all the same.

local source = require "tether.lint.source"
local scope = require "tether.lint.scope"
local flow = require "tether.lint.flow"
local rules = require "tether.lint.rules"
local suppress = require "tether.lint.suppress"
local walk = require "tether.lint.walk"

local check = {}

-- Runs the analysis over the parsed state `A`; returns the raw findings.
local function analyse(A)
  scope.resolve(A)
  flow.attach(A)
  return rules.check(A)
end

-- check.source(src, filename [, opts]) -> findings
--
-- Lints the Lua source `src`. `filename` (default "stdin") is copied into
-- each finding. `opts.ignore` and `opts.only` are lists of codes. Each
-- finding is `{code, line, column, end_column, message, file}`; they are
-- sorted by line and column. A source that cannot be parsed or analysed
-- gives a single error finding (E011, E012) and never raises.
function check.source(src, filename, opts)
  filename = filename or "stdin"
  opts = opts or {}
  local A, err = source.parse(src, filename)
  if not A then
    return {err}
  end
  local ok, findings = pcall(analyse, A)
  if not ok then
    return {source.error_finding("E012", filename, 1, 1, 1,
      "cannot analyse this file: "
        .. tostring(findings):match("^[^\n]*"))}
  end
  return suppress.apply(findings, A.comments, opts)
end

-- check.file(path [, opts]) -> findings
--
-- Lints the file at `path`, like check.source. A file that cannot be read
-- gives a single finding with code E010 at line 1, column 1.
function check.file(path, opts)
  local f, err = io.open(path, "rb")
  local src
  if f then
    src, err = f:read("a")
    f:close()
  end
  if not src then
    return {source.error_finding("E010", path, 1, 1, 1,
      "cannot read file: " .. tostring(err or "read failed"))}
  end
  return check.source(src, path, opts)
end

-- check.paths(paths [, opts]) -> report
--
-- Lints files and directories (see tether.lint.walk); "-" stands for the
-- standard input, named "stdin" in findings. The report is `{files =
-- {{file, findings}, ...}, warnings = n, errors = n}`.
function check.paths(paths, opts)
  local report = {files = {}, warnings = 0, errors = 0}
  for _, file in ipairs(walk.expand_paths(paths)) do
    local findings
    if file == "-" then
      file = "stdin"
      findings = check.source(io.read("a") or "", file, opts)
    else
      findings = check.file(file, opts)
    end
    report.files[#report.files + 1] = {file = file, findings = findings}
    for _, f in ipairs(findings) do
      if f.code:sub(1, 1) == "E" then
        report.errors = report.errors + 1
      else
        report.warnings = report.warnings + 1
      end
    end
  end
  return report
end

return check
