-- The rockspec lists what the checkout builds and installs: the C sources
-- the Makefile compiles, every module under lua/, every script in bin/
-- (tools/rock-sources.lua, run by `make rock`).

local ROCKSPEC = "rockspec/tether-scm-1.rockspec"

-- Runs a shell command; returns its output (stdout and stderr) and its
-- exit status.
local function run(cmd)
  local p = io.popen(cmd .. " 2>&1")
  local output = p:read("a")
  local _, _, status = p:close()
  return output, status
end

-- Checks the rockspec at `path` against the checkout.
local function check(path)
  local sources = run("make -s --no-print-directory sources")
  return run("lua5.4 tools/rock-sources.lua " .. path .. " "
    .. sources:gsub("\n", ""))
end

local function read(path)
  local f = assert(io.open(path, "rb"))
  local text = f:read("a")
  f:close()
  return text
end

describe("the rockspec", function()
  it("lists every C source, Lua module and script of the checkout",
      function()
    local out, status = check(ROCKSPEC)
    assert.equal("", out)
    assert.equal(0, status)
  end)

  it("is checked: each difference is named", function()
    local path = os.tmpname()
    local text = read(ROCKSPEC)
    local n
    text, n = text:gsub('"csrc/lua/lvalue%.c",%s*', "")
    assert.equal(1, n)
    text, n = text:gsub('%s*%["tether%.lint%.json"%] = '
      .. '"lua/tether/lint/json%.lua",', "")
    assert.equal(1, n)
    text = text .. [[
build.modules["tether.extra"] = "lua/tether/extra.lua"
build.install.bin["tether-other"] = "bin/tether-other"
]]
    local f = assert(io.open(path, "wb"))
    f:write(text)
    f:close()
    local out, status = check(path)
    os.remove(path)
    assert.equal(1, status)
    assert.equal(
      path .. " lacks C source csrc/lua/lvalue.c, which is in the "
        .. "Makefile's sources\n"
      .. path .. " lists Lua module tether.extra, which is not in lua/\n"
      .. path .. " lacks Lua module tether.lint.json, which is in lua/\n"
      .. path .. " lists script tether-other, which is not in bin/\n", out)
  end)
end)
