-- tether.lint.json: a small JSON encoder for reports.
--
-- Strings, numbers, booleans, arrays and objects, with the keys of an
-- object in sorted order so that the output is stable. A table whose keys
-- are exactly 1..n is an array (an empty table too); any other table is
-- an object, its number and boolean keys written as strings. Values JSON
-- cannot hold (functions, userdata) are written as null; NaN and the
-- infinities too.
--
-- A table that contains itself cannot be written: encoding one raises an
-- error that names the path to the cycle, as does a key of another type
-- (a table, a function) or two keys that read the same ('1' and 1).

local json = {}

-- The escapes of the characters JSON names.
local NAMED = {
  ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r",
  ["\t"] = "\\t", ["\b"] = "\\b", ["\f"] = "\\f",
}

-- A JSON string for the Lua string `s`.
local function json_string(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    return NAMED[c] or ("\\u%04x"):format(c:byte())
  end) .. '"'
end

-- Raises a JSON encoding error about the value at `path`.
local function fail(path, what)
  error(("tether.lint.json: %s (at %s)"):format(what, path), 0)
end

-- The path of key `k` under `path`, for messages.
local function sub_path(path, k)
  if type(k) == "string" and k:match("^[%a_][%w_]*$") then
    return path .. "." .. k
  end
  return path .. "[" .. (type(k) == "string" and ("%q"):format(k)
    or tostring(k)) .. "]"
end

-- Tells whether the keys of table `t` are exactly 1..n.
local function is_sequence(t)
  local n = 0
  for _ in pairs(t) do
    n = n + 1
  end
  for i = 1, n do
    if t[i] == nil then
      return false
    end
  end
  return true
end

local encode

-- Encodes table `t` as an array or an object. `open` holds the tables
-- being encoded on the way down to `t`.
local function encode_table(t, indent, path, open)
  if open[t] then
    fail(path, "the table contains itself")
  end
  open[t] = true
  local inner = indent .. "  "
  local parts = {}
  if is_sequence(t) then
    for i, v in ipairs(t) do
      parts[i] = inner .. encode(v, inner, sub_path(path, i), open)
    end
    open[t] = nil
    if #parts == 0 then
      return "[]"
    end
    return "[\n" .. table.concat(parts, ",\n") .. "\n" .. indent .. "]"
  end
  local keys, by_name = {}, {}
  for k in pairs(t) do
    local kt = type(k)
    if kt ~= "string" and kt ~= "number" and kt ~= "boolean" then
      fail(path, "a key of type " .. kt .. " cannot be a JSON name")
    end
    local name = tostring(k)
    if by_name[name] ~= nil then
      fail(path, "two keys are both named '" .. name .. "'")
    end
    by_name[name] = k
    keys[#keys + 1] = name
  end
  table.sort(keys)
  for i, name in ipairs(keys) do
    local k = by_name[name]
    parts[i] = inner .. json_string(name) .. ": "
      .. encode(t[k], inner, sub_path(path, k), open)
  end
  open[t] = nil
  return "{\n" .. table.concat(parts, ",\n") .. "\n" .. indent .. "}"
end

-- Encodes `value`, found at `path`, indented by `indent`.
function encode(value, indent, path, open)
  local t = type(value)
  if t == "string" then
    return json_string(value)
  elseif t == "number" then
    if value ~= value or value == math.huge or value == -math.huge then
      return "null"
    end
    return math.type(value) == "integer" and tostring(value)
      or ("%.17g"):format(value)
  elseif t == "boolean" then
    return tostring(value)
  elseif t == "table" then
    return encode_table(value, indent, path, open)
  end
  return "null"
end

-- json.encode(value) -> string
--
-- Encodes `value` as indented JSON; raises on a cycle or a key that
-- cannot be a JSON name (see above).
function json.encode(value)
  return encode(value, "", "value", {})
end

return json
