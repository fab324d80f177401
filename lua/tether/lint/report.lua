-- tether.lint.report: a report as text, the way the command prints it.
--
-- A report is `{files = {{file, findings}, ...}, warnings = n, errors =
-- n}`. The "default" format gives one line per finding in luacheck's
-- shape, then a summary line; the "json" format gives one document,
-- `{"findings": [...], "summary": {"warnings", "errors", "files"}}`.

local json = require "tether.lint.json"

local report = {}

-- report.format_finding(f) -> "path:line:col: (Wnnn) message"
function report.format_finding(f)
  return ("%s:%d:%d: (%s) %s"):format(f.file, f.line, f.column, f.code,
    f.message)
end

-- "1 file", "2 files".
local function plural(n, word)
  return ("%d %s%s"):format(n, word, n == 1 and "" or "s")
end

-- report.summary(r) -> "Total: 3 warnings in 2 files"
function report.summary(r)
  local errors = r.errors > 0
    and (" / " .. plural(r.errors, "error")) or ""
  return ("Total: %s%s in %s"):format(plural(r.warnings, "warning"),
    errors, plural(#r.files, "file"))
end

-- report.format(r [, formatter]) -> text
--
-- Renders report `r` with `formatter`, "default" or "json"; raises on any
-- other name.
function report.format(r, formatter)
  formatter = formatter or "default"
  local lines = {}
  if formatter == "json" then
    local all = {}
    for _, entry in ipairs(r.files) do
      table.move(entry.findings, 1, #entry.findings, #all + 1, all)
    end
    return json.encode({
      findings = all,
      summary = {
        warnings = r.warnings, errors = r.errors, files = #r.files,
      },
    }) .. "\n"
  elseif formatter ~= "default" then
    error("unknown formatter '" .. tostring(formatter) .. "'", 2)
  end
  for _, entry in ipairs(r.files) do
    for _, f in ipairs(entry.findings) do
      lines[#lines + 1] = report.format_finding(f)
    end
  end
  lines[#lines + 1] = report.summary(r)
  return table.concat(lines, "\n") .. "\n"
end

return report
