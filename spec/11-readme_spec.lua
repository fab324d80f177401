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
