#!/usr/bin/env bash
# estuary benchmark: estuary vs nginx, HAProxy, h2o and Varnish (issue 5). One command, one table.
#
#   tests/bench/run.sh            full run (all peers, S1-S8, 3 rounds x 10 s; ~20-25 min)
#                                 (S2b: S2 with a 1 MB reply, estuary vs nginx + lua;
#                                 S3u: a streamed upload of the S3 file, estuary vs nginx with
#                                 proxy_request_buffering off, to tests/bench/upload_sink.py;
#                                 S7: a JWT (RS256) route and S8: a Redis rate-limited route,
#                                 estuary only, compared with its own S1 of the same run;
#                                 S1t / S1t01: S1 with tracing at sample_ratio 1.0 / 0.01,
#                                 spans POSTed to the origin nginx, likewise estuary only;
#                                 S6: S1's reply cached (origin max-age=3600) at 100% hits,
#                                 estuary vs nginx proxy_cache vs Varnish (-s malloc,256m), CPU
#                                 per request and estuary / the better of the two (target 0.8),
#                                 origin requests during the measured window printed (must be 0);
#                                 S6h: hedging, 2 replicas (nginx + lua), one 200 ms slow on 5% of
#                                 its requests, 16 paced connections; estuary without hedge, with
#                                 hedge delay auto and 20ms: p50/p99 and backend requests per
#                                 client request; estuary only, no peer hedges)
#   tests/bench/run.sh --smoke    estuary only, ~2 s per scenario, 64 MiB file; exit 1 on
#                                 wrong output, errors under load or a crash (used by CI);
#                                 S1-S8 without S6h
#   tests/bench/run.sh --profile callgrind|strace|perf|none S1|S2|S5 [REQUESTS]
#                                 estuary alone under the tool for a fixed number of requests
#                                 (h2load): instructions / syscalls per request, hotspots
#
# Environment (all optional): BENCH_DURATION (s per run), BENCH_WARMUP (s), BENCH_ROUNDS,
# BENCH_PEERS (estuary,nginx,haproxy,h2o,varnish; varnish runs in S6 only),
# BENCH_SCENARIOS (S1,S2,S2b,S3,S3u,S4,S5,S6,S6h,S7,S8; also S1t,S1t01), BENCH_FILE_MIB (1024),
# BENCH_S3_DOWNLOADS (3), BENCH_CONNS (64), BENCH_S4_CONNS (5000), BENCH_H2_STREAMS (10),
# BENCH_S6H_CONNS (16), BENCH_S6H_PACE_MS (5: ms each S6h connection waits between requests),
# BENCH_PROXY_CPU (0), BENCH_LOAD_CPU (1), BENCH_PORT (18100: origin; +1 proxy, +2 proxy h2c,
# +3 upload sink, +4 redis, +5/+6 the S6h replicas),
# ESTUARY_BIN (default build-bench/estuary, built here if missing), BENCH_NO_INSTALL=1,
# BENCH_NO_BUILD=1, BENCH_KEEP=1 (keep the temp folder), BENCH_OUT=FILE (raw results, JSON),
# BENCH_ESTUARY_ACCESS_LOG (off: like the peers; stderr, a path, or "default" = no key).
# When estuary fails a check or has errors, the temp folder (configs, logs) is kept and named.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
SMOKE=0
PROFILE=()
case "${1:-}" in
    --smoke) SMOKE=1; [ $# -eq 1 ] || { echo "--smoke takes no other argument" >&2; exit 2; } ;;
    --profile) PROFILE=("$@")       # --profile callgrind|strace|perf|none S1|S2|S5 [REQUESTS]
               [ $# -ge 3 ] || { echo "usage: $0 --profile callgrind|strace|perf|none S1|S2|S5 [REQUESTS]" >&2; exit 2; } ;;
    -h|--help) sed -n '2,37p' "$0"; exit 0 ;;
    "") ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
esac

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

# --- packages (Debian 12 names) ------------------------------------------------------------
if [ "${#PROFILE[@]}" -gt 0 ]; then
    PKGS="nginx nghttp2-client curl util-linux valgrind strace linux-perf"
elif [ "$SMOKE" = 1 ]; then
    PKGS="nginx wrk nghttp2-client curl util-linux redis-server openssl"
else
    PKGS="nginx haproxy h2o varnish wrk nghttp2-client libnginx-mod-http-lua lua-cjson curl util-linux redis-server openssl"
fi
if [ "${BENCH_NO_INSTALL:-0}" != 1 ]; then
    missing=""
    for p in $PKGS; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
    done
    if [ -n "$missing" ]; then
        echo "installing:$missing" >&2
        export DEBIAN_FRONTEND=noninteractive
        $SUDO apt-get update -qq >&2 || true
        # one by one, so that a package that is not installable only skips its peer
        # (policy-rc.d: do not let the packages start their system services)
        POLICY=/usr/sbin/policy-rc.d; ADDED_POLICY=0
        if [ ! -e "$POLICY" ]; then
            printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null; $SUDO chmod +x "$POLICY"; ADDED_POLICY=1
        fi
        for p in $missing; do
            if ! $SUDO apt-get install -y -qq --no-install-recommends "$p" >&2; then
                echo "WARNING: package $p is not installable here; the peers/scenarios that need it are skipped" >&2
            fi
        done
        [ "$ADDED_POLICY" = 1 ] && $SUDO rm -f "$POLICY"
    fi
fi

# --- estuary --------------------------------------------------------------------------------
if [ -z "${ESTUARY_BIN:-}" ]; then
    export ESTUARY_BIN="$ROOT/build-bench/estuary"
    if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
        echo "building $ESTUARY_BIN (Release)" >&2
        cmake -S "$ROOT" -B "$ROOT/build-bench" -DCMAKE_BUILD_TYPE=Release >/dev/null
        cmake --build "$ROOT/build-bench" -j"$(nproc)" --target estuary >/dev/null
    fi
fi

# 5,000 client connections + as many upstream ones: raise the descriptor limit
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

ARGS=()
[ "$SMOKE" = 1 ] && ARGS=(--smoke)
[ "${#PROFILE[@]}" -gt 0 ] && ARGS=("${PROFILE[@]}")
/usr/bin/python3 "$HERE/bench.py" "${ARGS[@]}" &
PY=$!
trap 'kill -TERM "$PY" 2>/dev/null || true; wait "$PY" 2>/dev/null || true' INT TERM
set +e
wait "$PY"; rc=$?
# wait returns early (>128) if the trap ran; wait again for the real exit status
while kill -0 "$PY" 2>/dev/null; do wait "$PY"; rc=$?; done
exit "$rc"
