#!/bin/sh
# tools/valgrind-summary.sh — the figures behind `make test-valgrind`: runs each spec under
# memcheck (same options and suppressions as tools/runspecs.sh) and prints one line per spec:
# tests passed/failed, memcheck errors, and the leak summary (definite, indirect, possible,
# still reachable, suppressed). Usage: sh tools/valgrind-summary.sh [build] [spec...]
build=${1:-build}; [ $# -gt 0 ] && shift
specs="$*"
[ -n "$specs" ] || specs=$(make -s --no-print-directory print-valgrind-specs 2>/dev/null || ls spec/core_spec.lua spec/task_spec.lua spec/faults_spec.lua spec/socket_spec.lua \
  spec/thread_spec.lua spec/serial_spec.lua spec/queue_spec.lua 2>/dev/null)
export LUA_PATH="lua/?.lua;lua/?/init.lua;spec/?.lua;;"
export LUA_CPATH="$build/?.so;;"
export STRAND_TEST_BUILD="$build" STRAND_TEST_TIMEOUT=60 STRAND_VALGRIND=1
out=$(mktemp); trap 'rm -f "$out"' EXIT
for f in $specs; do
  timeout -k 5 1800 valgrind --leak-check=full --errors-for-leak-kinds=definite --child-silent-after-fork=yes \
    --suppressions=tools/valgrind.supp lua5.4 /usr/bin/busted -o utfTerminal --no-auto-insulate "$f" >"$out" 2>&1
  tests=$(grep -aoE '^[0-9]+ success(es)? / [0-9]+ failures? / [0-9]+ errors?' "$out" | tail -1)
  errs=$(grep -aoE 'ERROR SUMMARY: [0-9]+ errors' "$out" | tail -1 | grep -oE '[0-9]+')
  def=$(grep -aoE 'definitely lost: [0-9,]+ bytes in [0-9,]+ blocks' "$out" | tail -1 | sed 's/definitely lost: //')
  ind=$(grep -aoE 'indirectly lost: [0-9,]+ bytes' "$out" | tail -1 | sed 's/indirectly lost: //')
  pos=$(grep -aoE 'possibly lost: [0-9,]+ bytes' "$out" | tail -1 | sed 's/possibly lost: //')
  rea=$(grep -aoE 'still reachable: [0-9,]+ bytes' "$out" | tail -1 | sed 's/still reachable: //')
  sup=$(grep -aoE 'suppressed: [0-9,]+ bytes' "$out" | tail -1 | sed 's/suppressed: //')
  echo "$f: ${tests:-no summary}; memcheck errors ${errs:-?}; definitely lost ${def:-0 bytes}; indirectly ${ind:-0 bytes}; possibly ${pos:-0 bytes}; still reachable ${rea:-0 bytes}; suppressed ${sup:-0 bytes}"
done
