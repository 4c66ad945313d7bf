#!/bin/sh
# tools/fuzz.sh — builds the libFuzzer targets in fuzz/ (clang, ASan+UBSan, every csrc object
# linked in) and runs them. Used by `make fuzz` (long runs) and `make fuzz-smoke` (CI).
#   sh tools/fuzz.sh build                         build every target whose area has landed
#   sh tools/fuzz.sh run SECONDS [target...]       fuzz each target for SECONDS, one at a time
#   sh tools/fuzz.sh smoke SECONDS [target...]     replay the seed corpus, then fuzz briefly
# Seeds: fuzz/corpus/<target>/ (checked in). Working corpus, crashes, logs: fuzz/out/<target>/.
# FUZZ_SRC="csrc/a.c ..." restricts the csrc files linked in (default: all of csrc/*.c).
# Prints one line per target: "fuzz <target>: <execs> execs in <s> s, <n> crash(es), corpus <n>".
set -u
cd "$(dirname "$0")/.." || exit 1
mode=${1:-build}; [ $# -gt 0 ] && shift
secs=${1:-10}; [ $# -gt 0 ] && shift
FUZZ_CC=${FUZZ_CC:-clang}
FUZZ_BUILD=${FUZZ_BUILD:-fuzz/out/build}
PKG_LUA=${PKG_LUA:-lua5.4}
LUA_INCDIR=${LUA_INCDIR:-$(pkg-config --variable=includedir $PKG_LUA 2>/dev/null || echo /usr/include)/lua5.4}
LUA_LIBS=${LUA_LIBS:-$(pkg-config --libs $PKG_LUA 2>/dev/null || echo -llua5.4)}
SSH2_CFLAGS=$(pkg-config --cflags libssh2 2>/dev/null)
SSH2_LIBS=$(pkg-config --libs libssh2 2>/dev/null || echo -lssh2)
# All of UBSan, pointer-overflow included (bug 7 in docs/reliability.md is fixed). FUZZ_SAN overrides.
SAN=${FUZZ_SAN:-"-fsanitize=address,undefined -fno-sanitize-recover=undefined"}
CFLAGS="-g -O1 -fno-omit-frame-pointer -std=gnu11 -D_GNU_SOURCE -Wall -Wextra -Wno-unused-parameter -I$LUA_INCDIR $SSH2_CFLAGS"

# A target fuzz/<name>.c may need an area: its first line names the csrc file it needs
# ("needs: csrc/buffer.c"); it is skipped (not failed) until that file exists in the tree.
targets_all() {
  for f in fuzz/*.c; do
    [ -f "$f" ] || continue
    need=$(sed -n 's/.*needs: *\([^ ]*\).*/\1/p' "$f" | head -1)
    if [ -n "$need" ] && [ ! -f "$need" ]; then continue; fi
    basename "$f" .c
  done
}

build() {
  command -v "$FUZZ_CC" >/dev/null || { echo "fuzz: $FUZZ_CC not found (make deps installs clang)"; exit 1; }
  mkdir -p "$FUZZ_BUILD/obj"
  objs=""
  # csrc/sshcore.c is the entry of sshcore.so: its forwarders would duplicate core.so's functions
  for src in ${FUZZ_SRC:-$(ls csrc/*.c | grep -v '/sshcore\.c$')}; do
    o="$FUZZ_BUILD/obj/$(basename "$src" .c).o"
    if [ ! -f "$o" ] || [ "$src" -nt "$o" ] || [ csrc/strand.h -nt "$o" ] || { [ -f csrc/sock.h ] && [ csrc/sock.h -nt "$o" ]; }; then
      $FUZZ_CC $CFLAGS $SAN -fsanitize=fuzzer-no-link -c -o "$o" "$src" || exit 1
    fi
    objs="$objs $o"
  done
  for t in $(targets_all); do
    bin="$FUZZ_BUILD/$t"
    newer=0
    for dep in fuzz/$t.c fuzz/fuzz.h $objs; do [ "$dep" -nt "$bin" ] && newer=1; done
    if [ ! -f "$bin" ] || [ $newer = 1 ]; then
      $FUZZ_CC $CFLAGS $SAN -fsanitize=fuzzer -I csrc -DSTRAND_ROOT="\"$(pwd)\"" -o "$bin" \
        "fuzz/$t.c" $objs $LUA_LIBS $SSH2_LIBS -lpthread -lm || exit 1
    fi
  done
}

# run_one target seconds: fuzz, print the summary line; returns 1 on a crash/leak/timeout/oom.
run_one() {
  t=$1; s=$2
  out="fuzz/out/$t"; mkdir -p "$out/corpus" "$out/crashes"
  seeds="fuzz/corpus/$t"; mkdir -p "$seeds"
  log="$out/last.log"
  # -rss_limit_mb / -malloc_limit_mb: "allocates without bound" is a failure too;
  # -timeout: an input taking longer than 10 s is a hang.
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:allocator_may_return_null=0 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "$FUZZ_BUILD/$t" -max_total_time="$s" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=512 \
      -max_len=${FUZZ_MAX_LEN:-8192} -print_final_stats=1 -artifact_prefix="$out/crashes/" \
      ${FUZZ_ARGS:-} "$out/corpus" "$seeds" >"$log" 2>&1
  rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  ncrash=$(grep -cE '^==[0-9]+==ERROR|^SUMMARY: |ERROR: libFuzzer|runtime error:|^FUZZ FAILURE' "$log")
  [ $rc = 0 ] || [ "$ncrash" -gt 0 ] || ncrash=1
  corpus=$(ls "$out/corpus" | wc -l)
  echo "fuzz $t: ${execs:-0} execs in $s s, $ncrash crash(es), corpus $corpus (log: $log)"
  if [ $rc != 0 ]; then
    grep -m1 -E 'ERROR|FUZZ FAILURE|runtime error' "$log"
    ls "$out/crashes" | tail -3 | sed "s|^|  artifact: $out/crashes/|"
    return 1
  fi
  return 0
}

# replay every checked-in seed (regressions included) once, then fuzz briefly; the seeds are
# given as files, so that libFuzzer runs each and writes nothing into fuzz/corpus
smoke_one() {
  t=$1; s=$2
  mkdir -p "fuzz/out/$t/crashes"
  seeds="fuzz/corpus/$t"
  if [ -d "$seeds" ] && [ -n "$(ls "$seeds")" ]; then
    ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
      "$FUZZ_BUILD/$t" -runs=0 -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=512 \
      -artifact_prefix="fuzz/out/$t/crashes/" "$seeds"/* \
      >"fuzz/out/$t.replay.log" 2>&1 || {
        echo "fuzz $t: a checked-in seed fails (log: fuzz/out/$t.replay.log)"; return 1; }
  fi
  run_one "$t" "$s"
}

case "$mode" in
  build) build ;;
  run|smoke)
    build
    list="$*"; [ -n "$list" ] || list=$(targets_all)
    mkdir -p fuzz/out
    fail=0
    for t in $list; do
      if [ "$mode" = smoke ]; then smoke_one "$t" "$secs" || fail=1
      else run_one "$t" "$secs" || fail=1; fi
    done
    exit $fail ;;
  *) echo "usage: $0 build | run SECONDS [target...] | smoke SECONDS [target...]"; exit 2 ;;
esac
