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

-- libcurl sends spans to an OTLP/HTTP collector (Debian:
-- libcurl4-openssl-dev).
external_dependencies = {
  CURL = { library = "curl" },
}

-- The rockspec runs in an empty environment: the file lists are
-- written out.
local all = {
  "csrc/core/obj.c", "csrc/core/time.c", "csrc/core/wait.c",
  "csrc/core/chan.c", "csrc/core/ctx.c", "csrc/core/exec.c",
  "csrc/core/pool.c", "csrc/core/pool_events.c", "csrc/core/pool_tenant.c",
  "csrc/core/pool_spill.c", "csrc/core/pool_report.c", "csrc/core/pool_life.c",
  "csrc/core/group.c", "csrc/core/flight.c",
  "csrc/core/saga.c", "csrc/core/text.c", "csrc/core/log.c",
  "csrc/core/tracectx.c", "csrc/core/signal.c", "csrc/core/exit.c",
  "csrc/core/http.c", "csrc/core/metrics.c", "csrc/core/oplog.c",
  "csrc/core/trace.c", "csrc/core/record.c", "csrc/core/store.c",
  "csrc/core/store_sqlite.c", "csrc/core/store_redis.c",
  "csrc/core/drain.c",
  "csrc/core/digest.c", "csrc/core/admin.c", "csrc/core/admin_page.c",
  "csrc/lua/tether.c", "csrc/lua/lobj.c", "csrc/lua/lvalue.c",
  "csrc/lua/lnames.c", "csrc/lua/lpack.c", "csrc/lua/lunpack.c",
  "csrc/lua/ltesthook.c",
  "csrc/lua/lworker.c", "csrc/lua/lctx.c", "csrc/lua/lwait.c",
  "csrc/lua/lchan.c", "csrc/lua/lexec.c", "csrc/lua/lpool.c",
  "csrc/lua/lgroup.c", "csrc/lua/lflight.c", "csrc/lua/lsaga.c",
  "csrc/lua/lopts.c", "csrc/lua/lirq.c", "csrc/lua/lsignal.c",
  "csrc/lua/lexit.c", "csrc/lua/lhttp.c",
  "csrc/lua/llog.c", "csrc/lua/ltrace.c", "csrc/lua/lmetrics.c",
  "csrc/lua/lrecord.c", "csrc/lua/lstore.c",
  "csrc/lua/ladmin.c",
}

build = {
  type = "builtin",
  modules = {
    ["tether.core"] = {
      sources = all,
      defines = { "_GNU_SOURCE" },
      incdirs = { "csrc/core", "csrc/lua" },
      -- libmicrohttpd (HTTP), libcurl (span export), libsqlite3 and
      -- libhiredis (durable stores), all from Debian.
      libraries = { "pthread", "m", "microhttpd", "curl", "sqlite3",
                    "hiredis" },
    },
    ["tether"] = "lua/tether/init.lua",
    ["tether.cli"] = "lua/tether/cli.lua",
    ["tether.lint"] = "lua/tether/lint/init.lua",
    ["tether.lint.api"] = "lua/tether/lint/api.lua",
    ["tether.lint.check"] = "lua/tether/lint/check.lua",
    ["tether.lint.cli"] = "lua/tether/lint/cli.lua",
    ["tether.lint.flow"] = "lua/tether/lint/flow.lua",
    ["tether.lint.json"] = "lua/tether/lint/json.lua",
    ["tether.lint.report"] = "lua/tether/lint/report.lua",
    ["tether.lint.rules"] = "lua/tether/lint/rules.lua",
    ["tether.lint.scope"] = "lua/tether/lint/scope.lua",
    ["tether.lint.source"] = "lua/tether/lint/source.lua",
    ["tether.lint.suppress"] = "lua/tether/lint/suppress.lua",
    ["tether.lint.walk"] = "lua/tether/lint/walk.lua",
    ["tether.run"] = "lua/tether/run.lua",
    ["tether.worker"] = "lua/tether/worker.lua",
  },
  install = {
    bin = { ["tether-lint"] = "bin/tether-lint", ["tether"] = "bin/tether" },
  },
}

test = {
  type = "command",
  command = "lua5.4 /usr/bin/busted",
}
