-- tether.lint: a linter for partial-cancellation bugs in code using tether.
--
-- It reads Lua source with luacheck's parser and reports three rules
-- (tether.lint.rules has them, docs/lint.md explains each):
--
--   W101  leaked context: spawned work captures a context that is not
--         detached, so the work dies when the request ends.
--   W102  unbounded detach: a context from without_cancel runs work with no
--         timeout or deadline wrapped around it.
--   W103  lost cancel: a cancel function is dropped, or a return can be
--         reached before it is used.
--
-- The analysis follows simple local data flow only. When it cannot tell
-- where a value comes from (a table field, a global, the result of an
-- unknown call) it stays silent: a missed finding costs less than a false
-- one that teaches people to ignore the tool.
--
-- This module is pure Lua and never loads the tether C module, so it works
-- on a machine where the engine is not built. Its parts:
--
--   tether.lint.source    reading source into a syntax tree, or an error
--   tether.lint.scope     scope resolution
--   tether.lint.api       what the analysis knows of tether's API
--   tether.lint.flow      the data flow of contexts and cancel functions
--   tether.lint.rules     the rules and their checks
--   tether.lint.suppress  suppression comments and code filters
--   tether.lint.check     linting a source, a file, files and directories
--   tether.lint.walk      the files under directories
--   tether.lint.report    reports as text
--   tether.lint.json      the JSON encoder of reports
--   tether.lint.cli       the command line (bin/tether-lint)

local rules = require "tether.lint.rules"
local check = require "tether.lint.check"
local walk = require "tether.lint.walk"
local report = require "tether.lint.report"
local json = require "tether.lint.json"
local cli = require "tether.lint.cli"

local lint = {}

lint.version = "1.0"

-- lint.rules, lint.errors: the codes of warnings and of errors, each with
-- its `name` (and, for warnings, a `summary`).
lint.rules = rules.warnings
lint.errors = rules.errors

-- lint.check_source(src [, filename [, opts]]) -> findings
--
-- Lints the Lua source `src`. `filename` (default "stdin") is copied into
-- each finding. `opts.ignore` and `opts.only` are lists of codes. Each
-- finding is `{code, line, column, end_column, message, file}`; they are
-- sorted by line and column. A source that cannot be parsed gives a single
-- finding with code E011 at the error's position (E012 if it cannot be
-- analysed); it never raises.
lint.check_source = check.source

-- lint.check_file(path [, opts]) -> findings
--
-- Lints the file at `path`, like check_source. A file that cannot be read
-- gives a single finding with code E010 at line 1, column 1.
lint.check_file = check.file

-- lint.expand_paths(paths) -> files
--
-- Replaces each directory in `paths` by the *.lua files under it, each
-- real file once.
lint.expand_paths = walk.expand_paths

-- lint.check_paths(paths [, opts]) -> report
--
-- Lints files and directories; "-" stands for the standard input, named
-- "stdin" in findings. The report is `{files = {{file, findings},
-- ...}, warnings = n, errors = n}`.
lint.check_paths = check.paths

-- lint.format_finding(f) -> "path:line:col: (Wnnn) message"
lint.format_finding = report.format_finding

-- lint.summary(report) -> "Total: 3 warnings in 2 files"
lint.summary = report.summary

-- lint.format(report [, formatter]) -> text
--
-- Renders a report as the CLI prints it: "default" (one line per finding,
-- then the summary line) or "json".
lint.format = report.format

-- lint.json(value) -> string
--
-- Encodes a plain Lua value as JSON; raises on a table that contains
-- itself.
lint.json = json.encode

-- lint.usage: the text of tether-lint --help.
lint.usage = cli.usage

-- lint.main(args [, out, err]) -> exit status
--
-- Runs the command line `args` (a list of strings), writing to the files
-- `out` and `err` (default io.stdout and io.stderr).
lint.main = cli.main

return lint
