#!/usr/bin/env bash
# Checks C files against the root .clang-format with clang-format 14; prints the diff of
# each file that is off and exits 1.
#
#   scripts/format-check.sh              the files listed below (what CI runs, via test.sh)
#   scripts/format-check.sh FILE...      those files
#   scripts/format-check.sh --changed [REV]
#                                        the .c/.h files changed since REV (default: HEAD, i.e.
#                                        the working tree's changes), for use before a commit
#
# Why a list: most of the tree predates .clang-format and is not reformatted wholesale, so CI
# checks the files known to be formatted; a file joins the list once it is (new files start
# formatted: `clang-format-14 -i FILE`). A list needs no git history, so a fresh or shallow
# clone checks exactly what a developer's clone does.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

FORMATTED=(
  src/admin/console.c
  src/admin/console.h
  src/aggregate/fanout.c
  src/aggregate/fanout.h
  src/aggregate/jspan.c
  src/aggregate/jspan.h
  src/aggregate/merge.c
  src/aggregate/merge.h
  src/cache/ccontrol.c
  src/cache/ccontrol.h
  src/cache/coalesce.c
  src/cache/coalesce.h
  src/cache/global.c
  src/cache/global.h
  src/cache/hash.c
  src/cache/hash.h
  src/cache/serve.c
  src/cache/serve.h
  src/cache/store.c
  src/cache/store.h
  src/common/asan.h
  src/common/fieldvalue.c
  src/common/fieldvalue.h
  src/common/file.c
  src/common/file.h
  src/common/h2o_compat.c
  src/common/h2o_compat.h
  src/common/jsonutil.h
  src/common/log.c
  src/common/log.h
  src/common/method.c
  src/common/method.h
  src/common/net.c
  src/common/net.h
  src/common/phr.h
  src/common/siphash.h
  src/common/sockaddr.c
  src/common/sockaddr.h
  src/common/swar.h
  src/common/trim.c
  src/common/trim.h
  src/common/wheel.c
  src/common/wheel.h
  src/config/address.c
  src/config/config.c
  src/config/jsonpos.h
  src/config/schema_cache.c
  src/config/schema_policy.c
  src/config/schema_routes.c
  src/config/schema_upstreams.c
  src/config/values.c
  src/h1/chunked.c
  src/h1/parse.c
  src/h1/parse_internal.h
  src/h2/hpack_out.c
  src/h2/hpack_out.h
  src/io/ring.c
  src/io/ring.h
  src/policy/auth.c
  src/policy/auth_internal.h
  src/policy/cors.c
  src/policy/cors.h
  src/policy/gcra.c
  src/policy/jwks.c
  src/policy/jwks.h
  src/policy/jwks_rules.h
  src/policy/ratelimit.c
  src/policy/redis.c
  src/policy/redis_resp.c
  src/policy/redis_resp.h
  src/policy/rlstore.c
  src/policy/rlstore.h
  src/proxy/proxy.c
  src/proxy/proxy.h
  src/server/accept.h
  src/server/handler.h
  src/server/observe.h
  src/server/reload.c
  src/server/reload.h
  src/server/server.h
  src/server/tls.c
  src/server/tls.h
  src/server/worker_gen.c
  src/server/worker_gen.h
  src/trace/export.c
  src/trace/export.h
  src/trace/otlp.c
  src/trace/span.c
  src/trace/span.h
  src/trace/traceparent.c
  src/trace/traceparent.h
  src/upstream/hedge.c
  tests/fuzz/fuzz_cache_control.c
  tests/fuzz/fuzz_hpack_out.c
  tests/fuzz/fuzz_jspan.c
  tests/fuzz/fuzz_merge.c
  tests/fuzz/fuzz_resp.c
  tests/fuzz/fuzz_traceparent.c
  tests/fuzz/jspan_same.h
  tests/unit/admin/test_console.c
  tests/unit/aggregate/helpers.h
  tests/unit/aggregate/test_jsonutil.c
  tests/unit/aggregate/test_jspan.c
  tests/unit/aggregate/test_merge.c
  tests/unit/aggregate/test_transform.c
  tests/unit/cache/test_ccontrol.c
  tests/unit/cache/test_coalesce.c
  tests/unit/cache/test_global.c
  tests/unit/cache/test_store.c
  tests/unit/common/test_fieldvalue.c
  tests/unit/common/test_file.c
  tests/unit/common/test_method.c
  tests/unit/common/test_siphash.c
  tests/unit/common/test_wheel.c
  tests/unit/config/test_access_log.c
  tests/unit/config/test_cache_conf.c
  tests/unit/config/test_depend.c
  tests/unit/config/test_hedge_conf.c
  tests/unit/config/test_policy.c
  tests/unit/config/test_tracing.c
  tests/unit/io/test_ring.c
  tests/unit/policy/test_auth.c
  tests/unit/policy/test_gcra.c
  tests/unit/policy/test_jwks_fetch.c
  tests/unit/policy/test_jwks_rules.c
  tests/unit/policy/test_redis.c
  tests/unit/policy/test_resp.c
  tests/unit/policy/test_rlstore.c
  tests/unit/proxy/test_body_policy.c
  tests/unit/server/test_reload.c
  tests/unit/server/test_tls.c
  tests/unit/server/test_worker_gen.c
  tests/unit/trace/test_span.c
  tests/unit/trace/test_traceparent.c
)

CF=
for c in clang-format-14 clang-format; do
  if command -v "$c" >/dev/null && "$c" --version | grep -q 'version 14\.'; then
    CF=$c
    break
  fi
done
if [[ -z "$CF" ]]; then
  echo "format-check: clang-format 14 not found (Debian 12: apt-get install clang-format-14)" >&2
  exit 2
fi

files=()
if [[ "${1:-}" == "--changed" ]]; then
  rev=${2:-HEAD}
  while IFS= read -r f; do
    [[ -f "$f" ]] && files+=("$f")
  done < <({ git diff --name-only "$rev" -- '*.c' '*.h'; git ls-files --others --exclude-standard -- '*.c' '*.h'; } | sort -u)
elif [[ $# -gt 0 ]]; then
  files=("$@")
else
  files=("${FORMATTED[@]}")
fi

bad=0
for f in "${files[@]}"; do
  if [[ ! -f "$f" ]]; then
    echo "format-check: $f: no such file" >&2
    bad=1
    continue
  fi
  if ! out=$("$CF" --style=file "$f" | diff -u --label "$f" --label "$f (clang-format)" "$f" -); then
    printf '%s\n' "$out"
    bad=1
  fi
done
if [[ $bad -ne 0 ]]; then
  echo "format-check: FAILED (fix with: $CF -i FILE)" >&2
  exit 1
fi
echo "format-check: ${#files[@]} file(s) formatted"
