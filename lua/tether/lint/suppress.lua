-- tether.lint.suppress: suppression comments and the filters of the
-- options.
--
-- A comment `-- tether-lint: ignore [CODE...]` hides the findings of its
-- own line (all of them, or those of the codes listed); opts.ignore and
-- opts.only drop codes everywhere. Errors (E0xx) never reach these
-- filters: the analysis of a file with an error stops before them.

local suppress = {}

-- Reads `-- tether-lint: ignore [CODE...]` comments into a map from line
-- to true (every code) or a set of codes. Codes are separated by commas or
-- spaces; the first word that is not a code ends the list, so a reason may
-- follow.
local function suppressions(comments)
  local by_line = {}
  for _, comment in ipairs(comments) do
    local rest = comment.contents:match("^%s*tether%-lint:%s*ignore(.*)$")
    if rest and (rest == "" or rest:match("^[%s,]")) then
      local codes
      for word in rest:gmatch("[^%s,]+") do
        if not word:match("^[WE]%d%d%d$") then
          break
        end
        codes = codes or {}
        codes[word] = true
      end
      by_line[comment.line] = codes or true
    end
  end
  return by_line
end

-- The set of the codes in `list`, or nil for no list.
local function code_set(list)
  if not list then
    return nil
  end
  local set = {}
  for _, code in ipairs(list) do
    set[code] = true
  end
  return set
end

-- Orders findings by line, column, then code.
local function finding_order(a, b)
  if a.line ~= b.line then
    return a.line < b.line
  elseif a.column ~= b.column then
    return a.column < b.column
  end
  return a.code < b.code
end

-- Keeps one finding per code and position, drops the suppressed and
-- filtered ones, and sorts the rest by position.
local function finish(findings, by_line, opts)
  local ignore, only = code_set(opts.ignore), code_set(opts.only)
  local seen, out = {}, {}
  for _, f in ipairs(findings) do
    local key = f.code .. ":" .. f.line .. ":" .. f.column
    local rule = by_line[f.line]
    if not seen[key]
        and not (rule == true or (rule and rule[f.code]))
        and not (ignore and ignore[f.code])
        and not (only and not only[f.code]) then
      seen[key] = true
      out[#out + 1] = f
    end
  end
  table.sort(out, finding_order)
  return out
end

-- suppress.apply(findings, comments, opts) -> findings
--
-- Keeps one finding per code and position, drops those hidden by the
-- `comments` of the file (luacheck's list) or by opts.ignore and
-- opts.only, and sorts the rest by position.
function suppress.apply(findings, comments, opts)
  return finish(findings, suppressions(comments), opts)
end

return suppress
