rockspec_format = "3.0"
package = "tether"
version = "scm-1"

source = {
  url = "git+file:///dev/null",
}

description = {
  summary = "Go-style contexts with partial cancellation and detached "
         .. "work on real threads for Lua 5.4",
  detailed = [[
tether gives Lua 5.4 scripts contexts whose cancellation can be cut
(without_cancel) and bounded again (with_timeout), and runs Lua work on
real threads: an elastic executor, worker pools with drain, retries, dead
letters and quotas, channels and select.  The engine is a C library on
pthreads that C programs can link directly.
]],
  license = "MIT",
  labels = { "concurrency", "context", "threads", "cancellation" },
}

dependencies = {
  "lua >= 5.4, < 5.5",
}

local function sources(dir, names)
  local t = {}
  for i, n in ipairs(names) do t[i] = dir .. n .. ".c" end
  return t
end

local core_files = sources("csrc/core/", {
  "obj", "time", "wait", "chan", "ctx", "exec", "pool",
})
local lua_files = sources("csrc/lua/", {
  "tether", "lobj", "ltransfer", "lworker", "lctx", "lwait", "lchan",
  "lexec", "lpool",
})
local all = {}
for _, f in ipairs(core_files) do all[#all + 1] = f end
for _, f in ipairs(lua_files) do all[#all + 1] = f end

build = {
  type = "builtin",
  modules = {
    ["tether.core"] = {
      sources = all,
      defines = { "_GNU_SOURCE" },
      incdirs = { "csrc/core", "csrc/lua" },
      libraries = { "pthread" },
    },
    ["tether"] = "lua/tether/init.lua",
    ["tether.lint"] = "lua/tether/lint.lua",
  },
  install = {
    bin = { ["tether-lint"] = "bin/tether-lint" },
  },
}

test = {
  type = "command",
  command = "lua5.4 /usr/bin/busted",
}
