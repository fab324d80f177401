-- tether.lint.source: reading Lua source into the syntax tree the
-- analysis works on, or into the error that stops it.
--
-- The tree comes from luacheck's parser. Lua itself has the last word on
-- what is Lua: a file that luacheck parses but Lua 5.4 refuses to load
-- (nesting too deep for its parser, an assignment to a <const> local, a
-- goto with no visible label) is a syntax error too, never a clean file.
-- Neither parser may end the run: whatever either raises becomes the
-- file's error.

local source = {}

-- Debian installs luacheck under the Lua 5.1 tree only. Its parser is
-- plain Lua that runs on 5.4 too, so the 5.1 folders are appended to the
-- search path when the parser cannot be found otherwise (as happens in a
-- luarocks tree or with the system lua5.4).
local function load_luacheck()
  if not pcall(require, "luacheck.parser") then
    package.path = package.path
      .. ";/usr/share/lua/5.1/?.lua;/usr/share/lua/5.1/?/init.lua"
  end
  local ok, parser = pcall(require, "luacheck.parser")
  if not ok then
    error("tether.lint needs luacheck's parser (Debian package lua-check): "
      .. tostring(parser), 0)
  end
  return require("luacheck.decoder"), parser
end

local decoder, parser = load_luacheck()

-- The first line of `text`.
local function first_line(text)
  return (tostring(text):match("^[^\n]*"))
end

-- source.error_finding(code, file, line, column, end_column, message)
-- makes the one finding of a file whose analysis stopped.
function source.error_finding(code, file, line, column, end_column, message)
  return {
    code = code, line = line, column = column, end_column = end_column,
    message = message, file = file,
  }
end

-- Asks Lua whether it loads `src`; returns nil, or an E011 finding with
-- Lua's message. The first line is dropped when it starts with '#', and
-- a UTF-8 byte order mark before it, as the standalone interpreter does
-- (the line itself stays, empty, so that line numbers hold).
local function lua_rejects(src, filename)
  local text = src:gsub("^\239\187\191", ""):gsub("^#[^\n]*", "")
  local ok, fn, err = pcall(load, text, "=" .. filename, "t")
  if ok and fn then
    return nil
  end
  local msg = first_line(ok and err or fn)
  local prefix = filename .. ":"
  local line, rest
  if msg:sub(1, #prefix) == prefix then
    line, rest = msg:sub(#prefix + 1):match("^(%d+): (.*)$")
  end
  if line then
    return source.error_finding("E011", filename, tonumber(line), 1, 1,
      rest)
  end
  -- No position: the parser gave up as a whole (its C stack ran out).
  return source.error_finding("E011", filename, 1, 1, 1,
    "Lua cannot load this file: " .. msg)
end

-- source.parse(src, filename) -> A | nil, finding
--
-- Parses `src` and returns the analysis state, holding the syntax tree,
-- the comments and the positions of the lines; or nil and the finding of
-- the error: E011 for what luacheck's parser or Lua rejects, E012 when the
-- parser fails on source that Lua accepts.
function source.parse(src, filename)
  local ok, chars = pcall(decoder.decode, src)
  local line_offsets, line_lengths = {}, {}
  local ast, comments
  if ok then
    ok, ast, comments = pcall(parser.parse, chars, line_offsets,
      line_lengths)
  else
    ast = chars
  end
  if not ok then
    local err = ast
    if type(err) == "table" and err.line then
      local line = err.line
      local start = line_offsets[line] or 1
      return nil, source.error_finding("E011", filename, line,
        err.offset - start + 1,
        math.max(err.end_offset, err.offset) - start + 1, err.msg)
    end
    -- The parser itself failed (a stack overflow on deep nesting): Lua
    -- tells whether the file is Lua at all.
    local rejected = lua_rejects(src, filename)
    if rejected then
      return nil, rejected
    end
    return nil, source.error_finding("E012", filename, 1, 1, 1,
      "cannot parse this file: " .. first_line(err))
  end
  local rejected = lua_rejects(src, filename)
  if rejected then
    return nil, rejected
  end
  return {
    file = filename, chars = chars, ast = ast, comments = comments,
    line_offsets = line_offsets, line_lengths = line_lengths,
  }
end

return source
