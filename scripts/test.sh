#!/usr/bin/env bash
# Full test run (also the CI entry point, via .ci/run):
#   1. install dependencies, build build/ (normal), run unit tests (ctest) and the e2e suite;
#   2. a short benchmark smoke run (estuary only, outputs checked) and a check of the
#      Kubernetes/Docker/systemd files (tests/deploy);
#   3. build build-asan/ (AddressSanitizer + UBSan), run ctest and the e2e suite again;
#   4. build and run the Docker image, and run the README's demo command on a fresh Debian 12
#      container (scripts/docker-test.sh; skipped with a message where no Docker daemon can start).
# Any failure fails the script; a summary is printed at the end either way.
# Extra arguments are passed to pytest (e.g. `scripts/test.sh -k merge`).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PY=/usr/bin/python3
PYTEST_ARGS=("$@")

RESULTS=()
summary() {
  echo
  echo "==================== estuary test summary ===================="
  local line
  for line in "${RESULTS[@]}"; do
    echo "  $line"
  done
  echo "=============================================================="
}

# step NAME CMD...: runs CMD, records PASS/FAIL with its duration; stops at the first failure.
step() {
  local name=$1
  shift
  local start=$SECONDS rc=0
  echo
  echo ">>> $name"
  "$@" || rc=$?
  local took=$((SECONDS - start))
  if [[ $rc -eq 0 ]]; then
    RESULTS+=("PASS  $name (${took}s)")
  else
    RESULTS+=("FAIL  $name (${took}s, exit $rc)")
    summary
    echo "test.sh: FAILED at: $name" >&2
    exit 1
  fi
}

# run_e2e BIN: the pytest e2e suite against BIN. pytest's exit 5 (no tests collected) is a failure too.
run_e2e() {
  local bin=$1 rc=0
  if [[ ! -x "$bin" ]]; then
    echo "test.sh: $bin is missing" >&2
    return 1
  fi
  ESTUARY_BIN="$bin" "$PY" -m pytest "$ROOT/tests/e2e" -ra -p no:cacheprovider "${PYTEST_ARGS[@]}" || rc=$?
  if [[ $rc -eq 5 ]]; then
    echo "test.sh: pytest collected no tests" >&2
  fi
  return "$rc"
}

run_ctest() {
  ctest --test-dir "$1" --output-on-failure -j"$(nproc 2>/dev/null || echo 2)"
}

step "install dependencies" "$ROOT/scripts/install-deps.sh"
step "build (build/)" "$ROOT/scripts/build.sh"
step "format (scripts/format-check.sh)" "$ROOT/scripts/format-check.sh"
step "unit tests (build/)" run_ctest "$ROOT/build"
step "fuzz (30 s per driver)" scripts/fuzz.sh 30
step "promtool for the metrics test (scripts/promtool.sh)" "$ROOT/scripts/promtool.sh"
step "e2e tests (build/estuary)" run_e2e "$ROOT/build/estuary"
step "benchmark smoke (tests/bench/run.sh --smoke)" "$ROOT/tests/bench/run.sh" --smoke
step "deploy manifests (tests/deploy)" env ESTUARY_BIN="$ROOT/build/estuary" "$PY" -m pytest "$ROOT/tests/deploy" -ra -p no:cacheprovider

export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:halt_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
step "build with sanitizers (build-asan/)" "$ROOT/scripts/build.sh" --sanitize
step "unit tests (build-asan/)" run_ctest "$ROOT/build-asan"
step "e2e tests (build-asan/estuary)" run_e2e "$ROOT/build-asan/estuary"
step "docker image + fresh machine (scripts/docker-test.sh)" "$ROOT/scripts/docker-test.sh"

summary
echo "test.sh: all passed"
