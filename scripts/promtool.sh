#!/usr/bin/env bash
# Makes Prometheus's `promtool` available for the metrics-exposition test
# (tests/e2e/test_promtool.py) and prints its path.
#
# Debian ships promtool only inside the `prometheus` package, whose installation also enables
# and starts a Prometheus server. To keep a developer's machine free of that service, this
# takes the binary out of the package instead: `apt-get download prometheus` (Debian's own
# archive, verified by apt) and `dpkg-deb -x` into .cache/tools/. A promtool already on PATH
# is used as it is. Idempotent; the download happens once.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEST="$ROOT/.cache/tools"

if command -v promtool >/dev/null 2>&1; then
  command -v promtool
  exit 0
fi
if [[ -x "$DEST/promtool" ]]; then
  echo "$DEST/promtool"
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
# apt-get download runs unprivileged as _apt when it can: let it write here
chmod 0777 "$work"
if ! apt-get download prometheus >&2 2>/dev/null; then
  if [[ $(id -u) -ne 0 ]] && command -v sudo >/dev/null 2>&1; then
    sudo apt-get update >&2 && apt-get download prometheus >&2
  else
    apt-get update >&2 && apt-get download prometheus >&2
  fi
fi
dpkg-deb -x prometheus_*.deb root
mkdir -p "$DEST"
install -m 0755 root/usr/bin/promtool "$DEST/promtool"
echo "$DEST/promtool"
