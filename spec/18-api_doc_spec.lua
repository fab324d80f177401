-- docs/api.md, the reference of the Lua API, cannot fall behind the
-- module: this spec finds what the module has from the module itself and
-- from the binding's sources, and fails, naming each thing, when the page
-- lacks it.
--
--   Names.     Every name `require "tether"` exports, walked recursively
--              into the tables it holds (tether.core and any other), each
--              value once under its first name, names that start with
--              `_` skipped: each appears as `tether.name` in a heading of
--              level 3 or more.
--   Types.     Every metatable the binding registers (those with a
--              '__tether_type' field, read from the registry): its name
--              appears in a heading; each method of its '__index' (or of
--              its '__methods', behind an '__index' function) appears as
--              `:method` in a deeper heading of that section; each
--              metamethod (but the ones every type has) in that
--              section's text.  The fields a C '__index' function reads
--              are taken from its source (FIELD_READERS: err_index in
--              lobj.c, span_index in ltrace.c) and appear as `.field` in
--              that section's text.
--   Options.   Every options list the binding checks (the lists passed to
--              lt_checkopts in csrc/lua/*.c) matches, key for key, a table
--              of the page whose first column is `option`, and every such
--              table matches a list.  For the lists known here, a probe
--              also calls the binding: each documented key is accepted (it
--              does not raise "unknown option") and the table sits under
--              the heading of its function.
--   Lists.     The error codes (csrc/core/obj.c's errtab), the fields of
--              pool:stats(), the commands and options of `tether run`
--              (tether.run's tables) and the exports of tether.lint.
--   Examples.  Every ```lua block runs as a script in a process of its
--              own, ends with status 0 and prints exactly its `-->`
--              lines; ```lua fragment blocks at least compile.
local tether = require "tether"
local child = require "spec.support.child"

local DOC = "docs/api.md"

-- {====================================================================
-- Reading files
-- =====================================================================

local function read(path)
  local f = assert(io.open(path))
  local s = f:read("a")
  f:close()
  return s
end

local function esc(s) return (s:gsub("%p", "%%%0")) end

-- has_word tells whether 'text' holds 'word' not followed by a letter,
-- digit or underscore ("tether.pool" is not found in "tether.pool_totals").
local function has_word(text, word)
  return text:find(esc(word) .. "%f[^%w_]") ~= nil
end

-- parse_doc splits the page into lines, headings (outside code blocks)
-- and code blocks.
local function parse_doc(text)
  local doc = { lines = {}, headings = {}, blocks = {} }
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    doc.lines[#doc.lines + 1] = line
  end
  local block
  for i, line in ipairs(doc.lines) do
    local fence, info = line:match("^(```)%s*(.-)%s*$")
    if block then
      if fence and info == "" then
        block.last = i - 1
        doc.blocks[#doc.blocks + 1] = block
        block = nil
      else
        block.code[#block.code + 1] = line
      end
    elseif fence then
      block = { info = info, first = i + 1, code = {} }
    else
      local hashes, title = line:match("^(#+)%s+(.*)$")
      if hashes then
        doc.headings[#doc.headings + 1] =
          { level = #hashes, text = title, line = i }
      end
    end
  end
  assert(block == nil, DOC .. ": a code block is not closed")
  -- Each heading's section ends before the next heading of its level or
  -- a higher one.
  for k, h in ipairs(doc.headings) do
    h.last = #doc.lines
    for j = k + 1, #doc.headings do
      if doc.headings[j].level <= h.level then
        h.last = doc.headings[j].line - 1
        break
      end
    end
  end
  return doc
end

-- section_text is the text of the lines first..last.
local function section_text(doc, h)
  return table.concat(doc.lines, "\n", h.line, h.last)
end

-- heading_of returns the nearest heading above line 'n'.
local function heading_of(doc, n)
  local best
  for _, h in ipairs(doc.headings) do
    if h.line < n then best = h end
  end
  return best
end

-- slug is the anchor GitHub gives a heading: lower case, punctuation
-- and symbols dropped, spaces as hyphens.
local function slug(text)
  return (text:lower():gsub("[^%w _-]", ""):gsub(" ", "-"))
end

-- tables_with lists the tables of the page whose first column is
-- 'column' ("option", "code"), with the first `word` of each row.
local function tables_with(doc, column)
  local list, inblock = {}, false
  local i = 1
  while i <= #doc.lines do
    local line = doc.lines[i]
    if line:match("^%s*```") then inblock = not inblock end
    if not inblock and line:match("^%s*|%s*" .. column .. "%s*|") then
      local t = { line = i, keys = {}, set = {} }
      i = i + 2  -- the header and the |---| line
      while doc.lines[i] and doc.lines[i]:match("^%s*|") do
        local key = doc.lines[i]:match("^%s*|%s*`([^`]*)`")
        if key then
          t.keys[#t.keys + 1] = key
          t.set[key] = true
        end
        i = i + 1
      end
      list[#list + 1] = t
    else
      i = i + 1
    end
  end
  return list
end

-- }====================================================================


-- {====================================================================
-- Reading the binding's sources
-- =====================================================================

local function lua_sources()
  local files = {}
  local p = assert(io.popen("ls csrc/lua/*.c"))
  for f in p:lines() do files[#files + 1] = f end
  p:close()
  assert(#files > 0, "no csrc/lua/*.c (run the specs from the checkout)")
  return files
end

-- line_at is the line number of position 'pos' in 'text'.
local function line_at(text, pos)
  local _, n = text:sub(1, pos):gsub("\n", "")
  return n + 1
end

-- call_args splits the arguments of the call whose '(' is at 'open':
-- commas at depth 0, strings and nested parentheses skipped.
local function call_args(text, open)
  local args, depth, start, i = {}, 0, open + 1, open
  while i <= #text do
    local c = text:sub(i, i)
    if c == '"' then
      i = text:find('"', i + 1, true)
      while text:sub(i - 1, i - 1) == "\\" do
        i = text:find('"', i + 1, true)
      end
    elseif c == "(" then
      depth = depth + 1
    elseif c == ")" then
      depth = depth - 1
      if depth == 0 then
        args[#args + 1] = text:sub(start, i - 1):match("^%s*(.-)%s*$")
        return args
      end
    elseif c == "," and depth == 1 then
      args[#args + 1] = text:sub(start, i - 1):match("^%s*(.-)%s*$")
      start = i + 1
    end
    i = i + 1
  end
  error("unclosed call at " .. open)
end

-- option_lists finds every list of option names the binding checks: each
-- call of lt_checkopts names a `static const char *const list[]`, the
-- nearest one defined above the call in its file.
local function option_lists()
  local lists = {}
  for _, file in ipairs(lua_sources()) do
    local text = read(file)
    local defs = {}
    for pos, name, body in
        text:gmatch("()const%s+char%s*%*%s*const%s+([%w_]+)%[%]%s*=%s*"
                    .. "(%b{})") do
      local keys = {}
      for k in body:gmatch('"([^"]*)"') do keys[#keys + 1] = k end
      defs[#defs + 1] = { pos = pos, name = name, keys = keys }
    end
    local from = 1
    while true do
      local s, e = text:find("lt_checkopts%s*%(", from)
      if not s then break end
      from = e + 1
      local prev = text:sub(s - 1, s - 1)
      -- Skip the definition and declaration of lt_checkopts itself.
      if not prev:match("[%w_]")
         and not text:sub(1, s - 1):match("void%s+$")
      then
        local args = call_args(text, e)
        local ident = args[5]
        local where = ("%s:%d"):format(file, line_at(text, s))
        assert(ident and ident:match("^[%w_]+$"),
               where .. ": cannot read the options list of lt_checkopts")
        local def
        for _, d in ipairs(defs) do
          if d.name == ident and d.pos < s then def = d end
        end
        assert(def, where .. ": no list '" .. ident .. "' above this call")
        local set = {}
        for _, k in ipairs(def.keys) do set[k] = true end
        lists[#lists + 1] = { file = file:match("[^/]+$"), where = where,
                              name = ident, keys = def.keys, set = set }
      end
    end
  end
  return lists
end

-- The C '__index' functions that read fields, by type: their source is
-- where the fields are found.  A type whose '__index' is a function and
-- that is not listed here fails the check, naming itself.
local FIELD_READERS = {
  ["tether.Error"] = { file = "csrc/lua/lobj.c", fn = "err_index",
                       min = 5 },
  ["tether.Span"] = { file = "csrc/lua/ltrace.c", fn = "span_index",
                      min = 3 },
}

-- index_fields reads the fields a C '__index' function answers: the
-- names it compares the key with (strcmp(k, "name")).
local function index_fields(reader)
  local text = read(reader.file)
  local body = text:match("static int " .. reader.fn .. "%b()%s*(%b{})")
  assert(body, ("%s: %s not found"):format(reader.file, reader.fn))
  local fields = {}
  for f in body:gmatch('strcmp%(k,%s*"([^"]+)"%)') do
    fields[#fields + 1] = f
  end
  assert(#fields >= reader.min, ("%s: %s reads too few fields"):format(
    reader.file, reader.fn))
  return fields
end

-- error_codes reads the names of the error codes from the engine's table.
local function error_codes()
  local text = read("csrc/core/obj.c")
  local body = text:match("errtab%b[]%s*=%s*(%b{})")
  assert(body, "csrc/core/obj.c: errtab not found")
  local codes = {}
  for name in body:gmatch('{%s*"([%w_]+)"%s*,') do
    if name ~= "ok" then codes[#codes + 1] = name end
  end
  return codes
end

-- }====================================================================


-- {====================================================================
-- What the module has
-- =====================================================================

-- exported_names walks a module table breadth first, in sorted order, so
-- that a value reached twice (tether.go and tether.core.go) counts once,
-- under its shortest name; with 'flat', it does not enter sub-tables.
local function exported_names(root, prefix, flat)
  local names, seen, queue = {}, { [root] = true }, { { root, prefix } }
  while #queue > 0 do
    local t, p = table.unpack(table.remove(queue, 1))
    local keys = {}
    for k in pairs(t) do
      if type(k) == "string" and not k:match("^_") then
        keys[#keys + 1] = k
      end
    end
    table.sort(keys)
    for _, k in ipairs(keys) do
      local v, name = t[k], p .. "." .. k
      local ref = type(v) == "table" or type(v) == "function"
                  or type(v) == "userdata"
      if not (ref and seen[v]) then
        if ref then seen[v] = true end
        names[#names + 1] = name
        if type(v) == "table" and not flat then
          queue[#queue + 1] = { v, name }
        end
      end
    end
  end
  return names
end

-- registry_types lists the binding's metatables by name.
local function registry_types()
  local types = {}
  for name, mt in pairs(debug.getregistry()) do
    if type(name) == "string" and type(mt) == "table"
       and rawget(mt, "__tether_type") ~= nil then
      types[#types + 1] = { name = name, mt = mt }
    end
  end
  table.sort(types, function(a, b) return a.name < b.name end)
  return types
end

-- Metamethods every type has, documented once in the conventions, and
-- '__methods', the methods behind an '__index' function (checked as
-- methods).
local COMMON_META = {
  __gc = true, __name = true, __tether_type = true, __index = true,
  __tostring = true, __methods = true,
}

-- }====================================================================


-- {====================================================================
-- Probes: each documented key of a known list, passed to the binding
-- =====================================================================

local function noop() end

-- A value no option takes: each reader raises a field error for it, so a
-- probe never makes anything.
local ODD = coroutine.create(noop)

local bg = tether.background()
local probe_pool  -- made by the tests that need it, drained after them
local probe_store, probe_file  -- a store for the probe of drain_store

-- Each probe: the list it checks (file, list name and, where two lists
-- share a name, a key only that one has), a pattern the heading above
-- its table must hold, and a call that passes an options table with
-- 'key' set to ODD.
local PROBES = {
  { file = "lpool.c", name = "pool_options", heading = "tether%.pool%(",
    call = function(key) return tether.pool { [key] = ODD } end },
  { file = "lpool.c", name = "submit_options", heading = ":submit%(",
    call = function(key)
      return probe_pool:submit(bg, { [key] = ODD }, noop)
    end },
  { file = "lpool.c", name = "known", with = "name",
    heading = "Priority classes",
    call = function(key)
      return tether.pool { priorities = { { name = "a", [key] = ODD } } }
    end },
  { file = "lpool.c", name = "known", with = "rank",
    heading = "Priority classes",
    call = function(key)
      return tether.pool { priorities = { high = { [key] = ODD } } }
    end },
  { file = "lopts.c", name = "known", heading = "Retry policies",
    call = function(key) return tether.pool { retry = { [key] = ODD } } end },
  { file = "lgroup.c", name = "options", heading = "tether%.group%(",
    call = function(key) return tether.group(bg, { [key] = ODD }) end },
  { file = "lflight.c", name = "call_options", heading = ":call%(",
    call = function(key)
      return tether.singleflight():call(bg, "k", noop, { [key] = ODD })
    end },
  { file = "lsaga.c", name = "saga_options", heading = "tether%.saga%(",
    call = function(key)
      return tether.saga { { action = noop }, [key] = ODD }
    end },
  { file = "lsaga.c", name = "step_options", heading = "tether%.saga%(",
    call = function(key)
      local step = { action = noop }
      step[key] = ODD
      return tether.saga { step }
    end },
  -- Every key of these raises before anything is made: a server's
  -- handler is refused before its pool is made ('routes' with a
  -- 'handler' raises that they exclude each other).
  { file = "lhttp.c", name = "server_options",
    heading = "tether%.http%.server%(",
    call = function(key)
      local opts = { [key] = ODD }
      if key ~= "handler" then opts.handler = noop end
      return tether.http.server(opts)
    end },
  { file = "lhttp.c", name = "tls_options",
    heading = "tether%.http%.server%(",
    call = function(key)
      return tether.http.server { handler = noop, tls = { [key] = ODD } }
    end },
  { file = "lpool.c", name = "known", with = "max_tenants",
    heading = "metrics",
    call = function(key)
      return tether.pool { metrics = { [key] = ODD } }
    end },
  { file = "lstore.c", name = "known", with = "consumer",
    heading = "tether%.store%.open%(",
    call = function(key)
      return tether.store.open("sqlite:" .. probe_file, { [key] = ODD })
    end },
  { file = "lstore.c", name = "known", with = "allow",
    heading = ":drain_store%(",
    call = function(key)
      return probe_pool:drain_store(probe_store, nil, { [key] = ODD })
    end },
  -- A coroutine is the wrong type for every key of the admin's options:
  -- each raises before a server is made.
  { file = "ladmin.c", name = "serve_options",
    heading = "tether%.admin%.serve%(",
    call = function(key) return tether.admin.serve { [key] = ODD } end },
  { file = "ladmin.c", name = "handler_options",
    heading = "tether%.admin%.handler%(",
    call = function(key) return tether.admin.handler { [key] = ODD } end },
  { file = "llog.c", name = "known", heading = "tether%.log%.configure%(",
    call = function(key) return tether.log.configure { [key] = ODD } end },
  { file = "ltrace.c", name = "known",
    heading = "tether%.trace%.configure%(",
    call = function(key) return tether.trace.configure { [key] = ODD } end },
}

-- accepted tells whether the binding takes 'key' in a probe's table: the
-- call may raise anything but "unknown option".
local function accepted(probe, key)
  local ok, err = pcall(probe.call, key)
  return ok or not tostring(err):find("unknown option", 1, true), err
end

-- }====================================================================


-- {====================================================================
-- The checks
-- =====================================================================

local function fail_with(missing, what)
  assert(#missing == 0, ("%s lacks %s:\n  %s"):format(DOC, what,
    table.concat(missing, "\n  ")))
end

local doc = parse_doc(read(DOC))

-- find_heading returns the first heading of level 'min' or more whose
-- text holds 'word' as a whole name.
local function find_heading(word, min)
  for _, h in ipairs(doc.headings) do
    if h.level >= min and has_word(h.text, word) then return h end
  end
end

describe("docs/api.md", function()
  setup(function()
    probe_pool = tether.pool { name = "api-doc-probe", workers = 1 }
    probe_file = os.tmpname()
    probe_store = assert(tether.store.open("sqlite:" .. probe_file))
  end)

  teardown(function()
    assert(probe_pool:drain())
    probe_store:close()
    for _, suffix in ipairs { "", "-wal", "-shm" } do
      os.remove(probe_file .. suffix)
    end
  end)

  it("has an entry for every name require \"tether\" exports", function()
    local missing = {}
    local names = exported_names(tether, "tether")
    assert.is_true(#names >= 30, "the module exports too few names")
    for _, name in ipairs(names) do
      if not find_heading(name, 3) then
        missing[#missing + 1] = name
      end
    end
    fail_with(missing, "a ### heading for each exported name")
  end)

  it("has a section for every object type, with each of its methods "
     .. "and metamethods", function()
    local missing = {}
    local types = registry_types()
    assert.is_true(#types >= 12, "too few registered types")
    for _, t in ipairs(types) do
      local h = find_heading(t.name, 2)
      if not h then
        missing[#missing + 1] = t.name .. " (no heading names it)"
      else
        local text = section_text(doc, h)
        local mtab = type(t.mt.__index) == "table" and t.mt.__index
                     or type(rawget(t.mt, "__methods")) == "table"
                        and t.mt.__methods
        if mtab then
          local methods = {}
          for m in pairs(mtab) do methods[#methods + 1] = m end
          table.sort(methods)
          for _, m in ipairs(methods) do
            local found = false
            for _, e in ipairs(doc.headings) do
              if e.level > h.level and e.line > h.line and e.line <= h.last
                 and has_word(e.text, ":" .. m) then
                found = true
              end
            end
            if not found then
              missing[#missing + 1] = ("%s:%s (a heading in the section "
                .. "'%s')"):format(t.name, m, h.text)
            end
          end
        end
        if type(t.mt.__index) == "function" then
          local reader = FIELD_READERS[t.name]
          if not reader then
            missing[#missing + 1] = t.name .. " has an __index function: "
              .. "teach spec/18-api_doc_spec.lua to read its fields "
              .. "(FIELD_READERS)"
          else
            for _, f in ipairs(index_fields(reader)) do
              if not has_word(text, "." .. f) then
                missing[#missing + 1] = ("%s field '%s' (as .%s in the "
                  .. "section '%s')"):format(t.name, f, f, h.text)
              end
            end
          end
        end
        local metas = {}
        for k in pairs(t.mt) do
          if type(k) == "string" and k:match("^__")
             and not COMMON_META[k] then
            metas[#metas + 1] = k
          end
        end
        table.sort(metas)
        for _, k in ipairs(metas) do
          if not has_word(text, k) then
            missing[#missing + 1] = ("%s metamethod %s (in the section "
              .. "'%s')"):format(t.name, k, h.text)
          end
        end
      end
    end
    fail_with(missing, "these types, methods and metamethods")
  end)

  it("documents every options table of the binding, key for key",
     function()
    local lists, tables = option_lists(), tables_with(doc, "option")
    assert.is_true(#lists >= 9, "too few lt_checkopts lists found")
    local problems = {}
    local function describe_diff(set, t)
      local miss, extra = {}, {}
      for k in pairs(set) do if not t.set[k] then miss[#miss + 1] = k end end
      for k in pairs(t.set) do if not set[k] then extra[#extra + 1] = k end end
      table.sort(miss)
      table.sort(extra)
      return miss, extra
    end
    for _, l in ipairs(lists) do
      local best, bestn, bm, be
      for _, t in ipairs(tables) do
        local miss, extra = describe_diff(l.set, t)
        if #miss + #extra < (bestn or math.huge) then
          best, bestn, bm, be = t, #miss + #extra, miss, extra
        end
      end
      if bestn == 0 then
        l.table = best
        best.list = l
      else
        problems[#problems + 1] = ("%s: list '%s' {%s} has no options "
          .. "table%s"):format(l.where, l.name, table.concat(l.keys, ", "),
          best and ("; nearest at %s:%d lacks {%s}, has extra {%s}"):format(
            DOC, best.line, table.concat(bm, ", "), table.concat(be, ", "))
          or "")
      end
    end
    for _, t in ipairs(tables) do
      if not t.list then
        problems[#problems + 1] = ("%s:%d: options table {%s} matches no "
          .. "list the binding checks"):format(DOC, t.line,
          table.concat(t.keys, ", "))
      end
    end
    fail_with(problems, "options tables that match the binding's lists")
  end)

  it("puts each known options table under its function, and the binding "
     .. "accepts each documented key", function()
    local lists, tables = option_lists(), tables_with(doc, "option")
    local problems = {}
    for _, probe in ipairs(PROBES) do
      local list
      for _, l in ipairs(lists) do
        if l.file == probe.file and l.name == probe.name
           and (not probe.with or l.set[probe.with]) then
          list = l
        end
      end
      assert(list, ("probe for %s %s matches no list"):format(probe.file,
                                                              probe.name))
      -- The bogus key shows that the probe reaches the strict reader.
      local ok, err = accepted(probe, "no_such_option")
      assert(not ok, ("the probe of %s %s does not reach the options "
        .. "check"):format(probe.file, probe.name))
      assert.matches("unknown option", tostring(err), 1, true)
      for _, t in ipairs(tables) do
        local same = #t.keys == #list.keys
        for _, k in ipairs(list.keys) do same = same and t.set[k] end
        if same then
          local h = heading_of(doc, t.line)
          if not (h and h.text:find(probe.heading)) then
            problems[#problems + 1] = ("%s:%d: the options of %s %s sit "
              .. "under '%s', not under a heading that matches '%s'"):format(
              DOC, t.line, probe.file, probe.name, h and h.text or "?",
              probe.heading)
          end
          for _, k in ipairs(t.keys) do
            if not accepted(probe, k) then
              problems[#problems + 1] = ("%s:%d: option '%s' is refused "
                .. "by the binding"):format(DOC, t.line, k)
            end
          end
        end
      end
    end
    fail_with(problems, "options where they belong")
  end)

  it("lists every error code", function()
    local t
    for _, c in ipairs(tables_with(doc, "code")) do
      if c.set.canceled then t = c end
    end
    assert(t, DOC .. " has no table of error codes")
    local missing = {}
    local codes = error_codes()
    local known = {}
    for _, c in ipairs(codes) do
      known[c] = true
      if not t.set[c] then missing[#missing + 1] = c end
    end
    for _, c in ipairs(t.keys) do
      if not known[c] then
        missing[#missing + 1] = c .. " (listed, but no such code)"
      elseif c ~= "failed" then
        assert.equal(c, tether.error(c).code)
      end
    end
    fail_with(missing, "these error codes in its table")
  end)

  it("lists every field of pool:stats() in the pools section", function()
    local h = assert(find_heading("tether.Pool", 2), "no pools section")
    local text = section_text(doc, h)
    local missing = {}
    local fields = {}
    for k in pairs(probe_pool:stats()) do fields[#fields + 1] = k end
    table.sort(fields)
    for _, k in ipairs(fields) do
      if not text:find("`" .. k .. "`", 1, true) then
        missing[#missing + 1] = k
      end
    end
    fail_with(missing, "these fields of pool:stats()")
  end)

  it("describes every command and option of tether run", function()
    local run = require "tether.run"
    local h = assert(find_heading("tether.run", 2),
                     "no section names tether.run")
    local text = section_text(doc, h)
    local missing = {}
    local function options(list, who)
      for _, o in ipairs(list) do
        if not has_word(text, "--" .. o.name) then
          missing[#missing + 1] = ("--%s (%s)"):format(o.name, who)
        end
      end
    end
    options(run.global_options, "tether")
    local names = {}
    for name in pairs(run.commands) do names[#names + 1] = name end
    table.sort(names)
    for _, name in ipairs(names) do
      if not has_word(text, "tether " .. name) then
        missing[#missing + 1] = "tether " .. name
      end
      options(run.commands[name].options, "tether " .. name)
    end
    fail_with(missing, "these commands and options in its command-line "
      .. "section")
  end)

  it("lists every export of tether.lint", function()
    local h = assert(find_heading("tether.lint", 2),
                     "no section names tether.lint")
    local text = section_text(doc, h)
    local missing = {}
    local lint = require "tether.lint"
    for _, name in ipairs(exported_names(lint, "lint", true)) do
      if not has_word(text, name) then missing[#missing + 1] = name end
    end
    fail_with(missing, "these names in its tether.lint section")
  end)

  it("links only to headings that exist", function()
    local anchors, broken = {}, {}
    for _, h in ipairs(doc.headings) do
      local a = slug(h.text)
      local n = anchors[a] and 1 or 0
      while anchors[a .. (n > 0 and "-" .. n or "")] do n = n + 1 end
      anchors[a .. (n > 0 and "-" .. n or "")] = true
    end
    for i, line in ipairs(doc.lines) do
      for a in line:gmatch("%]%(#([^)]*)%)") do
        if not anchors[a] then
          broken[#broken + 1] = ("%s:%d: #%s"):format(DOC, i, a)
        end
      end
    end
    fail_with(broken, "the targets of these links")
  end)

  it("marks each code block as runnable Lua, a fragment or another "
     .. "language", function()
    local runnable = 0
    for _, b in ipairs(doc.blocks) do
      assert.is_true(b.info ~= "", ("%s:%d: a code block without a "
        .. "language"):format(DOC, b.first - 1))
      if b.info == "lua" then runnable = runnable + 1 end
      if b.info:match("^lua") then
        assert.is_true(b.info == "lua" or b.info == "lua fragment",
          ("%s:%d: unknown mark '%s'"):format(DOC, b.first - 1, b.info))
        local f, err = load(table.concat(b.code, "\n"),
                            ("=%s:%d"):format(DOC, b.first))
        assert(f, err)
      end
    end
    assert.is_true(runnable >= 50, "too few runnable examples")
  end)
end)

describe("docs/api.md's examples", function()
  for _, b in ipairs(doc.blocks) do
    if b.info == "lua" then
      it(("at line %d run and print what they say"):format(b.first),
         function()
        local code = table.concat(b.code, "\n") .. "\n"
        local want = {}
        for _, line in ipairs(b.code) do
          local w = line:match("%-%-> ?(.*)$")
          if w then want[#want + 1] = w end
        end
        local r = child.run(code)
        local got = r.out  -- the pid line is not in it
        local where = ("%s:%d\n%s"):format(DOC, b.first, child.describe(r))
        assert.equal(0, r.status, where)
        assert.same(want, got, where)
      end)
    end
  end
end)

-- }====================================================================
