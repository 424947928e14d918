#!/usr/bin/env bash
# Installs the build and test dependencies of estuary (Debian 12 / apt).
# Idempotent: packages already installed are skipped, and when nothing is missing apt is
# not touched at all (no `apt-get update`). Runs apt as root, or through sudo otherwise.
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config
  libh2o-evloop-dev libc-ares-dev libjansson-dev libssl-dev libcmocka-dev liburing-dev
  python3-pytest python3-aiohttp python3-dnslib python3-yaml
  curl openssl nghttp2-client ca-certificates
  clang clang-format-14 libclang-rt-14-dev python3-h2 python3-hyperframe python3-hpack util-linux
  python3-jwt python3-cryptography redis-server
  chromium fonts-dejavu-core
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
  if [[ "$status" != "installed" ]]; then
    missing+=("$pkg")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-deps: all ${#PACKAGES[@]} packages already installed"
  exit 0
fi

if [[ $(id -u) -eq 0 ]]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo)
else
  echo "install-deps: missing packages (${missing[*]}) and not root, no sudo" >&2
  exit 1
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
