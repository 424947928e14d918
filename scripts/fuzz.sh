#!/usr/bin/env bash
# Fuzzes every libFuzzer driver of tests/fuzz for a bounded time (see docs/fuzzing.md).
#   scripts/fuzz.sh [SECONDS]   -> each driver runs SECONDS (default 30) with -max_total_time
# Configures and builds build-fuzz/ with clang (-DESTUARY_FUZZ=ON: libFuzzer + ASan + UBSan),
# then runs each tests/fuzz/fuzz_<name>.c on its seed corpus tests/fuzz/corpus/<name>/. New
# inputs go to build-fuzz/fuzz-work/<name>/corpus (the repo corpus is only read), crash inputs
# to build-fuzz/fuzz-work/<name>/. Fails on any crash, leak or timeout, printing the input's path:
# fix the bug, then copy that file into tests/fuzz/corpus/<name>/ so ctest replays it forever.
# ESTUARY_FUZZ_BUILD_DIR overrides the build folder; ESTUARY_FUZZ_JOBS the build parallelism.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SECS=${1:-30}
BUILD_DIR=${ESTUARY_FUZZ_BUILD_DIR:-$ROOT/build-fuzz}
JOBS=${ESTUARY_FUZZ_JOBS:-$(nproc 2>/dev/null || echo 2)}

if ! [[ "$SECS" =~ ^[0-9]+$ ]] || [[ "$SECS" -eq 0 ]]; then
  echo "usage: $0 [SECONDS]  (a positive number of seconds per driver)" >&2
  exit 2
fi
if ! command -v clang >/dev/null; then
  echo "fuzz.sh: clang is missing (scripts/install-deps.sh installs clang and libclang-rt-14-dev)" >&2
  exit 1
fi

# the drivers present in the tree (each must be registered in tests/fuzz/CMakeLists.txt)
names=()
for f in "$ROOT"/tests/fuzz/fuzz_*.c; do
  [[ -e "$f" ]] || continue
  n=$(basename "$f" .c)
  names+=("${n#fuzz_}")
done
if [[ ${#names[@]} -eq 0 ]]; then
  echo "fuzz.sh: no driver in tests/fuzz" >&2
  exit 1
fi

# -Werror stays with the gcc builds (build/, build-asan/): a warning only clang emits must not
# stop the fuzzing itself
cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo -DESTUARY_FUZZ=ON \
  -DESTUARY_TESTS=OFF -DESTUARY_WERROR=OFF >/dev/null
targets=()
for n in "${names[@]}"; do targets+=("fuzz_$n"); done
cmake --build "$BUILD_DIR" -j"$JOBS" --target "${targets[@]}"

failed=()
for n in "${names[@]}"; do
  bin="$BUILD_DIR/tests/fuzz/fuzz_$n"
  seeds="$ROOT/tests/fuzz/corpus/$n"
  work="$BUILD_DIR/fuzz-work/$n"
  mkdir -p "$work/corpus"
  if [[ ! -d "$seeds" ]]; then
    echo "fuzz.sh: $n: no seed corpus at $seeds" >&2
    failed+=("$n (no corpus)")
    continue
  fi
  echo ">>> fuzz_$n: ${SECS}s"
  rc=0
  # -timeout: an input taking over 10 s is a hang; -rss_limit_mb: one using 2 GiB is a bug too
  "$bin" -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$work/" "$work/corpus" "$seeds" >"$work/log" 2>&1 || rc=$?
  grep -E '^(#[0-9]+ +DONE|Done [0-9]+ runs|stat::number_of_executed_units)' "$work/log" || true
  if [[ $rc -ne 0 ]]; then
    tail -n 60 "$work/log" >&2
    crash=$(grep -oE 'Test unit written to [^ ]+' "$work/log" | tail -n 1 | sed 's/^Test unit written to //')
    echo "fuzz.sh: fuzz_$n FAILED (exit $rc); input: ${crash:-(none written)}; log: $work/log" >&2
    failed+=("$n: ${crash:-exit $rc}")
  fi
done

if [[ ${#failed[@]} -ne 0 ]]; then
  echo "fuzz.sh: failures:" >&2
  printf '  %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "fuzz.sh: ${#names[@]} driver(s) fuzzed ${SECS}s each, no crash"
