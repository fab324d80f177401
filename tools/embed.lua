-- embed.lua: turns the admin page (csrc/core/admin.html) into the C
-- source that holds it (csrc/core/admin_page.c), so that the engine
-- serves it without reading a file and a rock builds it with no step of
-- its own.  `make` runs it when the HTML changes; spec/25-admin_spec.lua
-- checks that the committed C file is what it makes.
--
--   lua5.4 tools/embed.lua csrc/core/admin.html csrc/core/admin_page.c
--   lua5.4 tools/embed.lua csrc/core/admin.html -      (to stdout)
local src, dst = arg[1], arg[2]
if not src or not dst then
  io.stderr:write("usage: lua5.4 tools/embed.lua PAGE.html OUT.c|-\n")
  os.exit(2)
end

local f = assert(io.open(src, "rb"))
local page = f:read("a")
f:close()

-- One C string literal per piece of at most 'width' source characters,
-- cut after each newline.  Every '?' is escaped ("??'" would be a
-- trigraph under -std=c11), and so are bytes outside printable ASCII
-- (three octal digits, so that a digit that follows is never taken in).
local width = 72
local function escape(c)
  if c == "\\" then return "\\\\" end
  if c == '"' then return '\\"' end
  if c == "?" then return "\\?" end
  if c == "\n" then return "\\n" end
  local b = c:byte()
  if b < 32 or b > 126 then return ("\\%03o"):format(b) end
  return c
end

local lines, cur = {}, {}
local curlen = 0
local function flush()
  if #cur > 0 then
    lines[#lines + 1] = '  "' .. table.concat(cur) .. '"'
    cur, curlen = {}, 0
  end
end
for i = 1, #page do
  local c = page:sub(i, i)
  local e = escape(c)
  if curlen + #e > width then flush() end
  cur[#cur + 1] = e
  curlen = curlen + #e
  if c == "\n" then flush() end
end
flush()

local out = table.concat({
  "/*",
  "** admin_page.c -- the admin page, made from admin.html by",
  "** tools/embed.lua (edit the HTML; `make` writes this file again).",
  "*/",
  "#include <stddef.h>",
  "",
  "extern const char tt__admin_page[];",
  "extern const size_t tt__admin_page_len;",
  "",
  "const char tt__admin_page[] =",
  table.concat(lines, "\n") .. ";",
  "",
  "const size_t tt__admin_page_len = sizeof tt__admin_page - 1;",
  "",
}, "\n")

if dst == "-" then
  io.stdout:write(out)
else
  local o = assert(io.open(dst, "wb"))
  o:write(out)
  o:close()
end
