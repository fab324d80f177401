# tether -- build, test and demo.
#
# `make demo` and `make test` do all the set-up on a fresh Debian machine:
# the `deps` target installs what is missing (as root) or prints the
# apt-get line to run.

ifeq ($(origin CC),default)
CC      := gcc
endif
LUA     ?= lua5.4
BUSTED  ?= $(LUA) /usr/bin/busted --ignore-lua
LUA_INC := $(shell pkg-config --cflags lua5.4 2>/dev/null || echo -I/usr/include/lua5.4)

# Libraries of the engine found by pkg-config (each issue that needs one
# adds its pkg-config name here and its Debian package to DEB_PKGS).
PKGS    := libmicrohttpd libcurl sqlite3 hiredis
EXT_CFLAGS := $(if $(PKGS),$(shell pkg-config --cflags $(PKGS) 2>/dev/null))
EXT_LIBS   := $(if $(PKGS),$(shell pkg-config --libs $(PKGS) 2>/dev/null))

WARN    := -Wall -Wextra -Werror -Wshadow -Wmissing-prototypes \
           -Wstrict-prototypes -Wpointer-arith -Wundef
OPT     ?= -O2 -g
SAN     ?=
# A user's CFLAGS and LDFLAGS (environment or command line) come first;
# what the build needs is appended to them.
override CFLAGS  += -std=c11 $(OPT) $(WARN) -pthread -D_GNU_SOURCE -fPIC \
                    $(SAN) $(EXT_CFLAGS) -MMD -MP
override LDFLAGS += -pthread $(SAN)
LDLIBS  := $(EXT_LIBS) -lm

BUILD   ?= build
CORE_SRC := $(sort $(wildcard csrc/core/*.c))
CORE_OBJ := $(CORE_SRC:csrc/core/%.c=$(BUILD)/core/%.o)
LUA_SRC  := $(sort $(wildcard csrc/lua/*.c))
LUA_OBJ  := $(LUA_SRC:csrc/lua/%.c=$(BUILD)/lua/%.o)
CTEST_SRC := $(sort $(wildcard csrc/core/test/test_*.c))
CTEST_BIN := $(CTEST_SRC:csrc/core/test/%.c=$(BUILD)/test/%)
CEX_SRC  := $(sort $(wildcard examples/c/*.c))
CEX_BIN  := $(CEX_SRC:examples/c/%.c=$(BUILD)/examples/%)

# Examples, demo and specs find the modules of the checkout the way an
# installed rock would be found: through the 5.4 search paths (lua5.1,
# which starts busted, ignores these).
export LUA_PATH_5_4 := $(CURDIR)/lua/?.lua;$(CURDIR)/lua/?/init.lua;;
export LUA_CPATH_5_4 := $(CURDIR)/$(BUILD)/?.so;;

LIB     := $(BUILD)/libtether.a
MODULE  := $(BUILD)/tether/core.so

# Debian packages the project needs, and the command each is checked by.
DEB_PKGS := lua5.4 liblua5.4-dev lua-busted luarocks lua-check lua-dkjson \
            shellcheck cppcheck \
            libmicrohttpd-dev curl openssl lua-socket \
            libcurl4-openssl-dev prometheus \
            libsqlite3-dev sqlite3 redis-server libhiredis-dev \
            nodejs chromium

.PHONY: all deps test ctest c-examples spec rock demo examples clean check \
        bench env lint sources ldlibs browser-deps screenshots

all: $(LIB) $(MODULE)

deps:
	@missing=""; for p in $(DEB_PKGS); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else \
	    echo "missing Debian packages; run:"; \
	    echo "  sudo apt-get install -y$$missing"; exit 1; \
	  fi; \
	fi

# Header dependencies come from the compiler (-MMD -MP), one .d file per
# object.
# The admin page is one HTML file, held by a C source made from it (the
# C file is committed, so that a rock or a machine without Lua builds it).
csrc/core/admin_page.c: csrc/core/admin.html tools/embed.lua
	$(LUA) tools/embed.lua csrc/core/admin.html $@

$(BUILD)/core/%.o: csrc/core/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/lua/%.o: csrc/lua/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LUA_INC) -c $< -o $@

$(LIB): $(CORE_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@
	ar rcs $@ $^

# The module is not linked against liblua: lua5.4 exports the API.
$(MODULE): $(LUA_OBJ) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) -shared $(LDFLAGS) -o $@ $(LUA_OBJ) $(LIB) $(LDLIBS)

$(BUILD)/test/%: csrc/core/test/%.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Icsrc/core $< $(LIB) -o $@ $(LDFLAGS) $(LDLIBS)

# C examples are built against the public header only, as a C user's
# program would be.
$(BUILD)/examples/%: examples/c/%.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Icsrc/core $< $(LIB) -o $@ $(LDFLAGS) $(LDLIBS)

-include $(wildcard $(BUILD)/*/*.d)

# C tests of the engine: each binary prints "N passed, N failed".
ctest: $(CTEST_BIN)
	@set -e; for t in $(CTEST_BIN); do echo "== $$t"; $$t; done

# The C examples run to their end (each checks what it shows).
c-examples: $(CEX_BIN)
	@set -e; for t in $(CEX_BIN); do echo "== $$t"; $$t; done

# The admin page's browser tests drive Debian's Chromium with
# playwright-core, from npm, installed into tools/browser/node_modules at
# the version tools/browser/package-lock.json pins (npm itself comes with
# the nodejs package, or from Debian's npm package where it does not).
BROWSER_DIR := tools/browser
PLAYWRIGHT := $(BROWSER_DIR)/node_modules/playwright-core/package.json

$(PLAYWRIGHT): $(BROWSER_DIR)/package.json $(BROWSER_DIR)/package-lock.json
	@command -v npm >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm; \
	  else echo "npm is missing; run: sudo apt-get install -y npm"; \
	    exit 1; fi; }
	cd $(BROWSER_DIR) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

browser-deps: $(PLAYWRIGHT)

# A screenshot of the admin page under load, for the README (run by hand,
# never by the tests; the PNG is committed).
screenshots: all browser-deps
	node $(BROWSER_DIR)/screenshot.js docs/admin.png 75

# The busted suite on Lua 5.4 (configured by .busted).
spec: all browser-deps
	$(BUSTED) $(BUSTED_ARGS)

# The C sources of the library and the module, on one line
# (tools/rock-check.sh checks that the rockspec lists the same).
sources:
	@echo $(CORE_SRC) $(LUA_SRC)

# The rockspec must list what the checkout builds and installs (C sources,
# Lua modules, scripts); then luarocks installs the rock offline into a scratch tree, and the module
# and the linter work from there.
rock: all
	bash tools/rock-check.sh

# The static checks come first: they take seconds, the suites minutes.
test: deps
	$(MAKE) lint
	$(MAKE) all
	$(MAKE) ctest
	$(MAKE) c-examples
	$(MAKE) spec
	$(MAKE) examples
	$(MAKE) rock

# Static checks, part of `make test`: luacheck over the Lua code,
# shellcheck over the scripts, cppcheck over the C sources, node --check
# over the browser tests (tools/lint.sh says how, .luacheckrc and
# tools/cppcheck.* hold the exceptions with their reasons). They fail on
# any finding.
lint: deps
	bash tools/lint.sh

# Every example runs to its end (each checks what it shows), the demo
# too: `make demo` is one of the two commands the README promises.
examples: all
	@set -e; for f in examples/[0-9]*.lua examples/demo.lua; do \
	  $(LUA) $$f >/dev/null 2>&1 || \
	  { echo "example failed: $$f"; $(LUA) $$f; exit 1; }; done; \
	echo "examples: all ran"

# `make -s ldlibs` prints the libraries a program linking libtether.a
# needs (bench/run.sh links its C benchmark with them).
ldlibs:
	@echo $(LDLIBS)

# `eval "$(make -s env)"` sets up a shell to run the examples and the
# module from the checkout, as `make examples` does.
env:
	@echo "export LUA_PATH_5_4='$(LUA_PATH_5_4)'"
	@echo "export LUA_CPATH_5_4='$(LUA_CPATH_5_4)'"

demo: deps
	$(MAKE) all
	$(LUA) examples/demo.lua

clean:
	rm -rf $(BUILD)

# The suites under ASan+UBSan, then TSan, then the C tests under valgrind;
# any report fails the target.
check: deps browser-deps
	bash tools/check.sh

# Benchmarks against Go and luv (never part of `make test`).
bench: deps
	$(MAKE) all
	bash bench/run.sh
