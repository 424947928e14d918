#!/usr/bin/env bash
# Configures and builds estuary with CMake.
#   scripts/build.sh             -> build/estuary
#   scripts/build.sh --sanitize  -> build-asan/estuary (AddressSanitizer + UBSan)
# Extra arguments after the flags are passed to the cmake configure step.
# ESTUARY_BUILD_DIR overrides the build folder (e.g. for a scratch build beside a running one).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR="$ROOT/build"
CMAKE_ARGS=()

while [[ $# -gt 0 ]]; do
  case "$1" in
    --sanitize) BUILD_DIR="$ROOT/build-asan"; CMAKE_ARGS+=(-DESTUARY_SANITIZE=ON); shift ;;
    -h|--help) echo "usage: $0 [--sanitize] [cmake args...]"; exit 0 ;;
    *) CMAKE_ARGS+=("$1"); shift ;;
  esac
done

BUILD_DIR=${ESTUARY_BUILD_DIR:-$BUILD_DIR}
JOBS=$(nproc 2>/dev/null || echo 2)
cmake -S "$ROOT" -B "$BUILD_DIR" "${CMAKE_ARGS[@]}"
cmake --build "$BUILD_DIR" -j"$JOBS"
echo "build: $BUILD_DIR/estuary"
