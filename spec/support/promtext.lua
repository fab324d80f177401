-- A reader of the Prometheus text format (0.0.4) for specs, and the
-- checks promtool does not make (TOOLCHAIN.md section 4): cumulative
-- buckets ending in +Inf, _sum and _count beside them, _count equal to
-- the +Inf bucket, no series written twice, HELP and TYPE once per
-- family and before its samples, a family's samples together.
local M = {}

-- parse_labels reads '{a="x",b="y"}' (escapes \\, \" and \n) into a table
-- and a canonical string (sorted pairs).
local function parse_labels(s)
  local labels, keys, i = {}, {}, 2
  while i <= #s and s:sub(i, i) ~= "}" do
    local name, rest = s:match("^([%a_][%w_]*)=\"()", i)
    assert(name, "bad label at: " .. s:sub(i, i + 30))
    local j, buf = rest, {}
    while true do
      local ch = s:sub(j, j)
      assert(ch ~= "", "unterminated label value")
      if ch == "\\" then
        local nx = s:sub(j + 1, j + 1)
        buf[#buf + 1] = nx == "n" and "\n" or nx
        j = j + 2
      elseif ch == '"' then
        break
      else
        buf[#buf + 1] = ch
        j = j + 1
      end
    end
    labels[name] = table.concat(buf)
    keys[#keys + 1] = name
    i = j + 1
    if s:sub(i, i) == "," then i = i + 1 end
  end
  table.sort(keys)
  local canon = {}
  for _, k in ipairs(keys) do
    canon[#canon + 1] = ("%s=%q"):format(k, labels[k])
  end
  return labels, table.concat(canon, ","), i
end

-- M.parse returns {order = {family names}, families = {name = {help,
-- type, samples = {{name, labels, canon, value}}}}}; it raises on a line
-- it cannot read.
function M.parse(text)
  local out = {order = {}, families = {}}
  local current
  local function family(name)
    local f = out.families[name]
    if not f then
      f = {name = name, samples = {}}
      out.families[name] = f
      out.order[#out.order + 1] = name
    end
    return f
  end
  -- The family a sample belongs to: its own name, or without a
  -- histogram's suffix.
  local function owner(name)
    for _, suf in ipairs {"_bucket", "_sum", "_count"} do
      local base = name:sub(1, #name - #suf)
      if name:sub(-#suf) == suf and out.families[base]
         and out.families[base].type == "histogram" then
        return base
      end
    end
    return name
  end
  for line in text:gmatch("([^\n]*)\n") do
    local kind, name, rest = line:match("^# (%u+) ([%a_:][%w_:]*) ?(.*)$")
    if kind == "HELP" or kind == "TYPE" then
      local f = family(name)
      local key = kind:lower()
      assert(f[key] == nil, kind .. " twice for " .. name)
      assert(#f.samples == 0, kind .. " after samples of " .. name)
      f[key] = rest
      current = name
    elseif line ~= "" and not line:match("^#") then
      local sname, after = line:match("^([%a_:][%w_:]*)()")
      assert(sname, "bad sample line: " .. line)
      local labels, canon, i = {}, "", after
      if line:sub(after, after) == "{" then
        labels, canon, i = parse_labels(line:sub(after))
        i = after + i
      end
      local value = line:sub(i):match("^ (%S+)$")
      assert(value, "bad value in: " .. line)
      local v = value == "+Inf" and math.huge or value == "-Inf"
                and -math.huge or value == "NaN" and 0 / 0
                or tonumber(value)
      assert(v, "bad value in: " .. line)
      local fam = owner(sname)
      assert(fam == current, "sample of " .. fam .. " outside its family")
      local f = family(fam)
      f.samples[#f.samples + 1] = {name = sname, labels = labels,
                                   canon = canon, value = v}
    end
  end
  return out
end

-- M.check returns a list of problems (empty when the text is sound).
function M.check(text)
  local problems = {}
  local function bad(msg) problems[#problems + 1] = msg end
  if text:sub(-1) ~= "\n" then bad("no final newline") end
  local ok, p = pcall(M.parse, text)
  if not ok then
    bad(tostring(p))
    return problems
  end
  local seen = {}
  for _, name in ipairs(p.order) do
    local f = p.families[name]
    if not f.type then bad(name .. ": no TYPE") end
    if not f.help then bad(name .. ": no HELP") end
    if f.type == "counter" and not name:match("_total$") then
      bad(name .. ": a counter not ending in _total")
    end
    for _, s in ipairs(f.samples) do
      local key = s.name .. "{" .. s.canon .. "}"
      if seen[key] then bad("series twice: " .. key) end
      seen[key] = true
      if f.type == "counter" and (s.value ~= s.value or s.value < 0) then
        bad("negative counter: " .. key)
      end
    end
    if f.type == "histogram" then
      -- Group by the labels other than le.
      local series = {}
      for _, s in ipairs(f.samples) do
        local l = {}
        for k, v in pairs(s.labels) do
          if k ~= "le" then l[#l + 1] = ("%s=%q"):format(k, v) end
        end
        table.sort(l)
        local id = table.concat(l, ",")
        local h = series[id] or {buckets = {}}
        series[id] = h
        if s.name == name .. "_bucket" then
          h.buckets[#h.buckets + 1] = {le = s.labels.le, value = s.value}
        elseif s.name == name .. "_sum" then
          h.sum = s.value
        elseif s.name == name .. "_count" then
          h.count = s.value
        end
      end
      for id, h in pairs(series) do
        local last_le, last_v = -math.huge, -1
        for _, b in ipairs(h.buckets) do
          local le = b.le == "+Inf" and math.huge or tonumber(b.le)
          if not le or le <= last_le then
            bad(name .. "{" .. id .. "}: buckets out of order")
          end
          if b.value < last_v then
            bad(name .. "{" .. id .. "}: buckets not cumulative")
          end
          last_le, last_v = le or last_le, b.value
        end
        local top = h.buckets[#h.buckets]
        if not top or top.le ~= "+Inf" then
          bad(name .. "{" .. id .. "}: no +Inf bucket last")
        end
        if h.sum == nil then bad(name .. "{" .. id .. "}: no _sum") end
        if h.count == nil then
          bad(name .. "{" .. id .. "}: no _count")
        elseif top and h.count ~= top.value then
          bad(name .. "{" .. id .. "}: _count differs from +Inf")
        end
      end
    end
  end
  return problems
end

-- M.value returns the value of the series 'name' with exactly 'labels'.
function M.value(text, name, labels)
  local p = M.parse(text)
  for _, fname in ipairs(p.order) do
    for _, s in ipairs(p.families[fname].samples) do
      if s.name == name then
        local match = true
        for k, v in pairs(labels) do
          if s.labels[k] ~= v then match = false end
        end
        for k in pairs(s.labels) do
          if labels[k] == nil then match = false end
        end
        if match then return s.value end
      end
    end
  end
  return nil
end

return M
