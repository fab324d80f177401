-- The README's tour of the Lua API runs as written.
describe("README", function()
  it("its Lua tour runs and prints what it promises", function()
    local f = assert(io.open("README.md"))
    local text = f:read("a")
    f:close()
    local code = text:match("```lua\n(.-)```")
    assert.is_string(code)
    local lines = {}
    local env = setmetatable({ print = function(...)
      local t = table.pack(...)
      for i = 1, t.n do t[i] = tostring(t[i]) end
      lines[#lines + 1] = table.concat(t, "\t")
    end }, { __index = _G })
    assert(load(code, "README", "t", env))()
    assert.same({ "audited acme\t42" }, lines)
  end)
end)

describe("README's lifetimes section", function()
  local child = require "spec.support.child"

  it("its script runs under lua5.4 and under tether run", function()
    local f = assert(io.open("README.md"))
    local text = f:read("a")
    f:close()
    local blocks = {}
    for code in text:gmatch("```lua\n(.-)```") do
      blocks[#blocks + 1] = code
    end
    local code = assert(blocks[2], "no second Lua block")
    assert.matches("tether.run_context()", code, 1, true)
    local r = child.run(code, { args = {"5"} })
    assert.equal(0, r.status, child.describe(r))
    r = child.run(code, { runner = {"--drain", "5"}, args = {"5"} })
    assert.equal(0, r.status, child.describe(r))
    assert.equal("", r.stderr)
  end)
end)
