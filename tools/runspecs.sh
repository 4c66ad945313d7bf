#!/bin/sh
# Runs each busted spec in its own Lua 5.4 process against the build in $1 (a crash in one spec
# file is counted as a failure, never hides the others). Optional further args: spec files.
# STRAND_POLLERS="epoll poll" runs the whole list once per loop poller.
# Prints "N passed, N failed" last; exits non-zero on any failure.
build=${1:-build}; shift
specs="$*"
[ -n "$specs" ] || specs=$(ls spec/*_spec.lua examples/*_spec.lua 2>/dev/null)
export LUA_PATH="lua/?.lua;lua/?/init.lua;spec/?.lua;;"
export LUA_CPATH="$build/?.so;;"
export STRAND_TEST_BUILD="$build"
passed=0; failed=0; errors=0
out=$(mktemp); trap 'rm -f "$out"' EXIT
for poller in ${STRAND_POLLERS:-epoll}; do
export STRAND_POLLER=$poller
for f in $specs; do
  if [ -n "$STRAND_VALGRIND" ]; then
    set -- valgrind -q --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=99 \
      --child-silent-after-fork=yes \
      --suppressions=tools/valgrind.supp lua5.4 /usr/bin/busted
  else
    set -- lua5.4 /usr/bin/busted
  fi
  LD_PRELOAD="$STRAND_PRELOAD" timeout -k 5 ${STRAND_SPEC_TIMEOUT:-300} "$@" -o utfTerminal --no-auto-insulate "$f" >"$out" 2>&1
  rc=$?
  line=$(grep -aE '^[0-9]+ success(es)? / [0-9]+ failures? / [0-9]+ errors? / [0-9]+ pending' "$out" | tail -1)
  s=$(echo "$line" | sed -E 's/^([0-9]+) success.*/\1/')
  fl=$(echo "$line" | sed -E 's/^[0-9]+ success(es)? \/ ([0-9]+) failure.*/\2/')
  er=$(echo "$line" | sed -E 's/.* \/ ([0-9]+) errors?.*/\1/')
  [ -n "$line" ] || { s=0; fl=0; er=0; }
  if grep -qaE 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|==[0-9]+== ERROR SUMMARY: [1-9]' "$out"; then
    er=$((er + 1)); echo "sanitizer/valgrind report in $f"
  fi
  if [ -z "$line" ] || { [ "$rc" != 0 ] && [ "$fl" = 0 ] && [ "$er" = 0 ]; }; then
    er=$((er + 1)); echo "$f: exited with status $rc without a clean summary"
  fi
  passed=$((passed + s)); failed=$((failed + fl + er))
  if [ "$fl" != 0 ] || [ "$er" != 0 ]; then
    echo "---- $f [$poller]"; cat "$out"
  else
    echo "ok   $f [$poller] ($s)"
  fi
done
done
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
