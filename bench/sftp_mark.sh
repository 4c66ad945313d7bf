#!/bin/sh
# bench/sftp_mark.sh — run by OpenSSH's sftp from a batch (`!sh bench/sftp_mark.sh`) before and after
# a transfer: prints "now cpu_s run_delay_s" of the sftp process and its ssh child (schedstat).
p=$$
while [ "$p" -gt 1 ] && [ "$(cat /proc/$p/comm 2>/dev/null)" != sftp ]; do
  p=$(sed 's/.*) //' /proc/$p/stat | cut -d' ' -f2)
done
c=0; d=0
for q in $p $(cat /proc/$p/task/$p/children 2>/dev/null); do
  case "$(cat /proc/$q/comm 2>/dev/null)" in sftp|ssh) ;; *) continue ;; esac
  read a b x < /proc/$q/schedstat
  c=$((c + a)); d=$((d + b))
done
echo "$(date +%s.%N) $c $d" | awk '{ printf "%s %.3f %.3f\n", $1, $2 / 1e9, $3 / 1e9 }'
