#!/bin/sh
# Installs the Debian packages given as arguments when some are missing (root only). Idempotent.
missing=""
for p in "$@"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "strand: missing Debian packages:$missing (run as root, or install them)" >&2
  exit 1
fi
echo "strand: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null 2>&1 || true
apt-get install -y -qq --no-install-recommends $missing >/dev/null || {
  apt-get update -qq && apt-get install -y -qq --no-install-recommends $missing
}
