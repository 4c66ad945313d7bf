#!/bin/sh
# soak/run.sh — the load and soak tests (make soak), bounded in count and time, against the build
# in $1. SOAK_CONNS (10000), SOAK_SECONDS (60), SOAK_INTERVAL (1.0 s between a connection's
# messages), SOAK_MESSAGES (1000000). Prints the figures; exits non-zero if one fails.
build=${1:-build}
cd "$(dirname "$0")/.." || exit 1
export LUA_PATH="lua/?.lua;lua/?/init.lua;;"
export LUA_CPATH="$build/?.so;;"
fail=0
timeout -k 5 $(( ${SOAK_SECONDS:-60} + 600 )) lua5.4 soak/echo.lua "${SOAK_CONNS:-10000}" "${SOAK_SECONDS:-60}" \
  "${SOAK_INTERVAL:-1.0}" || fail=1
timeout -k 5 1200 lua5.4 soak/queue.lua "${SOAK_MESSAGES:-1000000}" || fail=1
exit $fail
