# strand — build, test, demo, bench. `make test` is what CI runs (via .ci/run).
LUA        ?= lua5.4
PKG_LUA    ?= lua5.4
LUA_INCDIR ?= $(shell pkg-config --variable=includedir $(PKG_LUA) 2>/dev/null || echo /usr/include)/lua5.4
SSH2_CFLAGS ?= $(shell pkg-config --cflags libssh2 2>/dev/null)
SSH2_LIBS  ?= $(shell pkg-config --libs libssh2 2>/dev/null || echo -lssh2)
CC         ?= cc
OPT        ?= -O2 -g
CFLAGS     ?= $(OPT)
WARN       := -Wall -Wextra -Werror -Wno-unused-parameter
LIBFLAG    ?= -shared
LIBDIR     ?= $(PREFIX)/lib/lua/5.4
LUADIR     ?= $(PREFIX)/share/lua/5.4
BUILD      ?= build
SAN        ?=

# Two modules: core.so (everything but SSH, no libssh2) and sshcore.so (the SSH area, linked with
# libssh2; loaded by strand.ssh on first use). They share no symbols: sshcore.so calls core.so
# through the table of csrc/coreapi.h, checked against STRAND_ABI_SUM (docs/internals.md).
SSH_SRC := csrc/ssh.c csrc/sshchan.c csrc/sftp.c csrc/sshcore.c
SRC  := $(filter-out $(SSH_SRC),$(sort $(wildcard csrc/*.c)))
OBJ  := $(patsubst csrc/%.c,$(BUILD)/obj/%.o,$(SRC))
SSH_OBJ := $(patsubst csrc/%.c,$(BUILD)/obj/%.o,$(SSH_SRC))
SO   := $(BUILD)/strand/core.so
SSH_SO := $(BUILD)/strand/sshcore.so
STRAND_ABI_SUM := $(shell cat csrc/strand.h csrc/coreapi.h | cksum | cut -d' ' -f1)
ALL_CFLAGS = $(CFLAGS) $(WARN) $(SAN) -std=gnu11 -fPIC -fvisibility=hidden -D_GNU_SOURCE \
             -I$(LUA_INCDIR) $(SSH2_CFLAGS)
# core.so: a section per function, and the code a forked child runs placed together
# (csrc/forkpath.ld: fewer code-page faults in each process.start child)
ALL_CFLAGS += -ffunction-sections
SO_LDFLAGS := -Wl,-T,csrc/forkpath.ld

.PHONY: all deps test test-asan test-valgrind print-valgrind-specs demo bench fuzz fuzz-smoke soak install clean

all: $(SO) $(SSH_SO)

$(BUILD)/obj/%.o: csrc/%.c $(wildcard csrc/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(SO): $(OBJ) csrc/forkpath.ld
	@mkdir -p $(dir $@)
	$(CC) $(LIBFLAG) $(SAN) $(SO_LDFLAGS) -o $@ $(OBJ) -lpthread
	@mkdir -p $(BUILD)/lua && rm -f $(BUILD)/lua/strand && ln -s ../../lua/strand $(BUILD)/lua/strand

$(SSH_SO): $(SSH_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(LIBFLAG) $(SAN) -o $@ $(SSH_OBJ) $(SSH2_LIBS) -lpthread

# Debian packages the build and the specs need (installed when missing and run as root).
DEPS := lua5.4 liblua5.4-dev libssh2-1-dev lua-busted openssh-server pkg-config gcc make \
        lua-socket lua-argparse python3 luarocks \
        clang libclang-rt-14-dev valgrind
deps:
	@sh tools/deps.sh $(DEPS)

# The peers `make bench` measures strand against (installed when missing and run as root).
BENCH_DEPS := lua-luv lua-cqueues python3-gevent strace python3-paramiko

# Every spec under Lua 5.4; the last line is "N passed, N failed". TEST_POLLERS: the default
# poller (io_uring; epoll where the kernel refuses it) and the two STRAND_POLLER can force;
# test-asan runs under the default only (ASAN_POLLERS), as it did when the default was epoll.
TEST_POLLERS ?= uring epoll poll
ASAN_POLLERS ?= uring
test: deps all
	@n=$$(ls fuzz/*.c 2>/dev/null | wc -l); echo "strand: make test fuzzes first: $$n libFuzzer targets for $(FUZZ_SMOKE_SECONDS) s each (about $$((n * $(FUZZ_SMOKE_SECONDS))) s, plus their build), then runs every spec under $(TEST_POLLERS)"
	@$(MAKE) --no-print-directory fuzz-smoke
	@STRAND_POLLERS="$(TEST_POLLERS)" sh tools/runspecs.sh $(BUILD)

ASAN_LIB = $(shell $(CC) -print-file-name=libasan.so)
UBSAN_LIB = $(shell $(CC) -print-file-name=libubsan.so)
test-asan: deps
	$(MAKE) BUILD=build-asan OPT="-O1 -g -fno-omit-frame-pointer" \
	  SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined" all
	@ASAN_OPTIONS=detect_leaks=0:abort_on_error=0:halt_on_error=1 \
	 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	 STRAND_POLLERS="$(ASAN_POLLERS)" STRAND_PRELOAD="$(ASAN_LIB) $(UBSAN_LIB)" sh tools/runspecs.sh build-asan

# memcheck over every spec with C behind it (those that exist; the examples' specs and
# luasocket_compat run their Lua in child programs, which valgrind does not trace); definite
# leaks and memory errors fail. VALGRIND_SPECS="spec/x_spec.lua ..." picks others;
# VALGRIND_JOBS specs run at once (valgrind runs one thread of a process at a time); the
# longest first.
VALGRIND_SPECS ?= $(wildcard spec/faults_spec.lua spec/queue_spec.lua spec/ssh_spec.lua \
                   spec/process_spec.lua spec/socket_spec.lua spec/sftp_spec.lua spec/pool_spec.lua \
                   spec/selector_spec.lua spec/sync_spec.lua spec/scale_spec.lua spec/core_spec.lua \
                   spec/thread_spec.lua spec/serial_spec.lua spec/shared_spec.lua spec/server_spec.lua \
                   spec/task_spec.lua spec/spawn_spec.lua spec/badinput_spec.lua spec/luasocket_spec.lua \
                   spec/pipe_spec.lua spec/signal_spec.lua spec/security_spec.lua spec/refleak_spec.lua \
                   spec/queue_fastpath_spec.lua spec/lockedq_spec.lua spec/ovfq_spec.lua spec/crossproc_spec.lua \
                   spec/poollink_spec.lua)
VALGRIND_JOBS ?= 2
test-valgrind: deps all
	@STRAND_VALGRIND=1 STRAND_JOBS=$(VALGRIND_JOBS) STRAND_TEST_TIMEOUT=60 STRAND_SPEC_TIMEOUT=1800 \
	 sh tools/runspecs.sh $(BUILD) $(VALGRIND_SPECS)
print-valgrind-specs:
	@echo $(VALGRIND_SPECS)

# libFuzzer targets in fuzz/ (clang, ASan+UBSan): `make fuzz SECONDS=600` runs each for SECONDS,
# one at a time; `make fuzz-smoke` (part of `make test`) replays the seeds and fuzzes each briefly.
SECONDS ?= 60
FUZZ_SMOKE_SECONDS ?= 4
fuzz: deps
	@sh tools/fuzz.sh run $(SECONDS) $(FUZZ_TARGETS)
fuzz-smoke: deps
	@sh tools/fuzz.sh smoke $(FUZZ_SMOKE_SECONDS) $(FUZZ_TARGETS)

# Load and soak tests (bounded in time): soak/run.sh prints the figures.
soak: deps all
	@sh soak/run.sh $(BUILD)

demo: deps all
	@LUA_PATH="lua/?.lua;lua/?/init.lua;;" LUA_CPATH="$(BUILD)/?.so;;" $(LUA) examples/demo.lua

bench: deps all
	@sh tools/deps.sh $(BENCH_DEPS) || echo "strand: some peers are missing; their columns say n/a"
	@sh bench/run.sh $(BUILD)

install: all
	install -d $(DESTDIR)$(LIBDIR)/strand $(DESTDIR)$(LUADIR)/strand
	install -m 755 $(SO) $(DESTDIR)$(LIBDIR)/strand/core.so
	install -m 755 $(SSH_SO) $(DESTDIR)$(LIBDIR)/strand/sshcore.so
	install -m 644 lua/strand/*.lua $(DESTDIR)$(LUADIR)/strand/

clean:
	rm -rf build build-asan build-rock

# the SSH area's private header
$(BUILD)/obj/ssh.o $(BUILD)/obj/sshchan.o $(BUILD)/obj/sftp.o: csrc/ssh.h
# the checksum both modules compare (csrc/coreapi.h)
$(BUILD)/obj/coreapi.o $(BUILD)/obj/sshcore.o: ALL_CFLAGS += -DSTRAND_ABI_SUM=$(STRAND_ABI_SUM)UL
