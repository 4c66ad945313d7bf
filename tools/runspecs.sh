#!/bin/sh
# Runs each busted spec in its own Lua 5.4 process against the build in $1 (a crash in one spec
# file is counted as a failure, never hides the others). Optional further args: spec files.
# STRAND_POLLERS="epoll poll" runs the whole list once per loop poller.
# Prints "N passed, N failed" last; exits non-zero on any failure.
# STRAND_VALGRIND=1 runs each spec under memcheck; STRAND_JOBS=N (valgrind only) runs N specs at
# once (valgrind runs a process's threads one at a time: one spec uses one core), the report
# still in list order.

# one spec file: its output in $2, its exit status in $2.rc
run_one() {
  if [ -n "$STRAND_VALGRIND" ]; then
    # exec'd programs (sshd, ssh-keygen, sh, the lua5.4 of a child script) are not traced: no
    # --trace-children; forked children are, silently (an error still exits them with 99)
    set -- "$1" "$2" valgrind -q --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=99 \
      --child-silent-after-fork=yes \
      --suppressions=tools/valgrind.supp lua5.4 /usr/bin/busted
  else
    set -- "$1" "$2" lua5.4 /usr/bin/busted
  fi
  f=$1; o=$2; shift 2
  LD_PRELOAD="$STRAND_PRELOAD" timeout -k 5 ${STRAND_SPEC_TIMEOUT:-300} "$@" -o utfTerminal --no-auto-insulate "$f" >"$o" 2>&1
  echo $? >"$o.rc"
}

if [ "$1" = "--one" ]; then run_one "$2" "$3"; exit 0; fi

build=${1:-build}; shift
specs="$*"
[ -n "$specs" ] || specs=$(ls spec/*_spec.lua examples/*_spec.lua 2>/dev/null)
export LUA_PATH="lua/?.lua;lua/?/init.lua;spec/?.lua;;"
export LUA_CPATH="$build/?.so;;"
export STRAND_TEST_BUILD="$build"
passed=0; failed=0; errors=0
jobs=1; [ -n "$STRAND_VALGRIND" ] && jobs=${STRAND_JOBS:-1}
dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT
out=$dir/out
for poller in ${STRAND_POLLERS:-epoll}; do
export STRAND_POLLER=$poller
if [ "$jobs" -gt 1 ]; then
  i=0; for f in $specs; do i=$((i + 1)); echo "$f $dir/$i"; done |
    xargs -P "$jobs" -L 1 sh "$0" --one
fi
i=0
for f in $specs; do
  i=$((i + 1))
  if [ "$jobs" -gt 1 ]; then out=$dir/$i; else run_one "$f" "$out"; fi
  rc=$(cat "$out.rc" 2>/dev/null || echo 1)
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
