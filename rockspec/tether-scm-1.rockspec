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

-- The rockspec runs in an empty environment: the file lists are
-- written out.
local all = {
  "csrc/core/obj.c", "csrc/core/time.c", "csrc/core/wait.c",
  "csrc/core/chan.c", "csrc/core/ctx.c", "csrc/core/exec.c",
  "csrc/core/pool.c", "csrc/core/group.c", "csrc/core/flight.c",
  "csrc/core/saga.c", "csrc/core/text.c", "csrc/core/log.c",
  "csrc/core/tracectx.c", "csrc/core/record.c", "csrc/core/store.c",
  "csrc/core/store_sqlite.c", "csrc/core/store_redis.c",
  "csrc/core/drain.c",
  "csrc/lua/tether.c", "csrc/lua/lobj.c", "csrc/lua/ltransfer.c",
  "csrc/lua/lworker.c", "csrc/lua/lctx.c", "csrc/lua/lwait.c",
  "csrc/lua/lchan.c", "csrc/lua/lexec.c", "csrc/lua/lpool.c",
  "csrc/lua/lgroup.c", "csrc/lua/lflight.c", "csrc/lua/lsaga.c",
  "csrc/lua/lopts.c", "csrc/lua/lstore.c",
}

build = {
  type = "builtin",
  modules = {
    ["tether.core"] = {
      sources = all,
      defines = { "_GNU_SOURCE" },
      incdirs = { "csrc/core", "csrc/lua" },
      -- Durable stores: Debian's libsqlite3-dev and libhiredis-dev.
      libraries = { "pthread", "m", "sqlite3", "hiredis" },
    },
    ["tether"] = "lua/tether/init.lua",
    ["tether.lint"] = "lua/tether/lint.lua",
    ["tether.worker"] = "lua/tether/worker.lua",
  },
  install = {
    bin = { ["tether-lint"] = "bin/tether-lint" },
  },
}

test = {
  type = "command",
  command = "lua5.4 /usr/bin/busted",
}
