-- tools/rock-sources.lua ROCKSPEC C_SOURCE...
--
-- Checks that the rockspec builds and installs what the checkout has:
-- the C sources of tether.core are those the Makefile compiles (given as
-- arguments, from `make -s sources`), every Lua file under lua/ is a
-- module of the rockspec under its own name, and every script in bin/ is
-- installed. Prints one line per difference and exits 1 if there is any.
-- Run from the top of the checkout (tools/rock-check.sh does).

local rockspec_path = assert(arg[1], "usage: rock-sources.lua ROCKSPEC SRC...")

-- A rockspec is Lua that sets globals; it runs in an empty environment.
local spec = {}
local chunk, err = loadfile(rockspec_path, "t", spec)
if not chunk then
  io.stderr:write("rock-sources: ", err, "\n")
  os.exit(1)
end
chunk()

local problems = {}

-- Compares `have` (what the rockspec says, name -> path) with `want`
-- (what the checkout has, from `where`), and records each difference.
local function compare(what, have, want, where)
  local keys = {}
  for k in pairs(have) do keys[#keys + 1] = k end
  for k in pairs(want) do
    if have[k] == nil then keys[#keys + 1] = k end
  end
  table.sort(keys)
  for _, k in ipairs(keys) do
    local line
    if want[k] == nil then
      line = ("lists %s %s, which is not in %s"):format(what, k, where)
    elseif have[k] == nil then
      line = ("lacks %s %s, which is in %s"):format(what, k, where)
    elseif have[k] ~= want[k] then
      line = ("gives %s %s as %s, not %s as in %s"):format(what, k,
        have[k], want[k], where)
    end
    if line then
      problems[#problems + 1] = rockspec_path .. " " .. line
    end
  end
end

-- The files `find` lists under `dir` with name pattern `pattern`.
local function find(dir, pattern)
  local p = assert(io.popen("find " .. dir .. " -type f -name '" .. pattern
    .. "' | sort"))
  local out = {}
  for line in p:lines() do out[#out + 1] = line end
  p:close()
  return out
end

local build = spec.build or {}
local modules = build.modules or {}

-- C sources.
local core = modules["tether.core"]
local have, want = {}, {}
for _, src in ipairs(type(core) == "table" and core.sources or {}) do
  have[src] = src
end
for i = 2, #arg do want[arg[i]] = arg[i] end
compare("C source", have, want, "the Makefile's sources")

-- Lua modules: lua/a/b.lua is a.b, lua/a/b/init.lua is a.b.
have, want = {}, {}
for name, path in pairs(modules) do
  if type(path) == "string" then have[name] = path end
end
for _, path in ipairs(find("lua", "*.lua")) do
  local name = path:gsub("^lua/", ""):gsub("%.lua$", ""):gsub("/init$", "")
    :gsub("/", ".")
  want[name] = path
end
compare("Lua module", have, want, "lua/")

-- Scripts.
have, want = {}, {}
for name, path in pairs((build.install or {}).bin or {}) do
  have[name] = path
end
for _, path in ipairs(find("bin", "*")) do
  want[path:match("[^/]+$")] = path
end
compare("script", have, want, "bin/")

for _, line in ipairs(problems) do print(line) end
os.exit(#problems == 0 and 0 or 1)
