#!/bin/sh
# bench/process_faults.sh — which pages a no-op process.start(fn):join() makes each side fault on,
# and who wrote or ran them: `perf record -e page-faults -d` (every fault, with its data address)
# over N starts, each fault grouped by the mapping it hit ([heap], [stack], //anon: .bss, the
# thread-locals, the TCB; a file: a code or read-only page) and the function that took it,
# counted per child and, for the parent, per start over its last N-20 starts. A loaded machine
# does not change these counts; ASLR moves the 64 KiB windows a code fault maps (fault-around),
# so a code count can differ by one from run to run. docs/internals.md "A start's wall time".
# usage: sh bench/process_faults.sh [BUILD_DIR] [N]   (needs perf)
set -eu
cd "$(dirname "$0")/.."
build=${1:-build}
n=${2:-100}
. bench/lib.sh
lua_env "$build"
export LUA_PATH LUA_CPATH
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if ! perf record -q -e page-faults -c 1 -d -o "$tmp/probe.data" -- true >/dev/null 2>&1; then
  echo "process_faults: perf cannot record page faults here"
  exit 0
fi
perf record -q -e page-faults -c 1 -d -o "$tmp/pf.data" -- \
  lua5.4 bench/process_bench.lua worker start "$n" >/dev/null 2>&1
# pid time address ip-symbol: one line per fault
perf script -i "$tmp/pf.data" -F pid,time,addr,ip,sym,dso 2>/dev/null > "$tmp/pf.txt"
# the parent: the process with the most faults; children: every other pid
parent=$(awk '{ print $1 }' "$tmp/pf.txt" | sort | uniq -c | sort -rn | awk 'NR == 1 { print $2 }')
# "region | writer" of a line: the address's mapping (dso) and the function at the ip
group() { sed -E 's/^ *[0-9]+ +[0-9.:]+ +[0-9a-f]+ //; s/ +[0-9a-f]+ / | /'; }
echo "== each child ($n children): faults per child, by page region | function that faulted"
awk -v P="$parent" '$1 != P' "$tmp/pf.txt" > "$tmp/child.txt"
nc=$(awk '{ print $1 }' "$tmp/child.txt" | sort -u | wc -l)
awk -v n="$nc" 'END { printf "  total %.2f\n", NR / n }' "$tmp/child.txt"
group < "$tmp/child.txt" | sort | uniq -c | sort -rn |
  awk -v n="$nc" '$1 >= n / 4 { c = $1; $1 = ""; printf "  %5.2f %s\n", c / n, $0 }'
# the parent's faults between the 21st child's first fault and the last child's last one
awk -v P="$parent" '$1 != P && !(seen[$1]++) { k++; if (k == 21) t0 = $2 } $1 != P { t1 = $2 }
  END { print t0 + 0, t1 + 0, k - 20 }' "$tmp/pf.txt" > "$tmp/win"
read -r t0 t1 k < "$tmp/win"
echo "== the parent: faults per start over its last $k starts, by page region | function"
awk -v P="$parent" -v a="$t0" -v b="$t1" '$1 == P && $2 + 0 >= a && $2 + 0 <= b' "$tmp/pf.txt" \
  > "$tmp/parent.txt"
awk -v n="$k" 'END { printf "  total %.2f\n", NR / n }' "$tmp/parent.txt"
group < "$tmp/parent.txt" | sort | uniq -c | sort -rn |
  awk -v n="$k" '$1 >= n / 4 { c = $1; $1 = ""; printf "  %5.2f %s\n", c / n, $0 }'
