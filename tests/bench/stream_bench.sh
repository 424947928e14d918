#!/usr/bin/env bash
# stream_bench.sh - a big download through estuary and through nginx (as a reverse proxy),
# side by side: wall time, throughput, the proxy's CPU time per GiB, and its peak RSS (VmHWM;
# for nginx the worker process, plus the master for reference).
#
#   tests/bench/stream_bench.sh [-b ESTUARY_BIN] [-s SIZE_MIB] [-n RUNS] [--h2]
#
# Defaults: build-stream-rel/estuary (else build/estuary), 1024 MiB, 3 runs, HTTP/1.1.
# The origin is nginx serving a generated file (sendfile) from a temp dir on loopback;
# both proxies are single-process/worker and reach it over plain HTTP/1.1 keep-alive.
# The client is curl writing to /dev/null. Everything started here is stopped by PID.
# Self-contained: nothing outside the temp dir is written (tests/bench/run.sh is separate).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=""
SIZE_MIB=1024
RUNS=3
H2=0
while [ $# -gt 0 ]; do
    case "$1" in
    -b) BIN=$2; shift 2 ;;
    -s) SIZE_MIB=$2; shift 2 ;;
    -n) RUNS=$2; shift 2 ;;
    --h2) H2=1; shift ;;
    -h|--help) sed -n 2,12p "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
if [ -z "$BIN" ]; then
    for c in "$ROOT/build-stream-rel/estuary" "$ROOT/build/estuary"; do
        [ -x "$c" ] && { BIN=$c; break; }
    done
fi
[ -x "${BIN:-}" ] || { echo "estuary binary not found (use -b)" >&2; exit 2; }
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
if [ ! -x "$NGINX" ]; then
    echo "nginx is not installed: apt-get install -y nginx-light (or nginx)" >&2
    exit 2
fi

TMP=$(mktemp -d /tmp/stream_bench.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$p" 2>/dev/null || true
    done
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "port $1 did not open" >&2; return 1
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; } # utime + stime
TICK=$(getconf CLK_TCK)
hwm_kb() { awk '/^VmHWM/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
# nginx -g "daemon off; master_process on" forks workers: the worker is the master's child
child_of() { pgrep -P "$1" | head -1; }

ORIGIN_PORT=$(free_port); NGINX_PORT=$(free_port); EST_PORT=$(free_port)
mkdir -p "$TMP/www" "$TMP/origin" "$TMP/proxy"
echo "generating a ${SIZE_MIB} MiB body in $TMP/www/big ..." >&2
head -c $((SIZE_MIB * 1024 * 1024)) /dev/urandom > "$TMP/www/big"
SUM=$(sha256sum "$TMP/www/big" | cut -d' ' -f1)
# nginx workers run unprivileged (www-data/nobody): let them read the file
chmod 755 "$TMP" "$TMP/www"; chmod 644 "$TMP/www/big"

nginx_conf() { # $1 dir, $2 server block
    cat > "$1/nginx.conf" <<EOF
worker_processes 1;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $1/body; proxy_temp_path $1/proxy; fastcgi_temp_path $1/fcgi;
    uwsgi_temp_path $1/uwsgi; scgi_temp_path $1/scgi;
    $2
}
EOF
}

# origin: nginx serving the file
nginx_conf "$TMP/origin" "server { listen 127.0.0.1:$ORIGIN_PORT; root $TMP/www; sendfile on; tcp_nopush on; }"
"$NGINX" -p "$TMP/origin" -c "$TMP/origin/nginx.conf" -g "daemon off;" 2>"$TMP/origin/stderr" &
PIDS+=($!)
# nginx as a reverse proxy, buffering settings as shipped (proxy_buffering on, temp files off
# so the comparison is memory to memory), keep-alive to the origin
nginx_conf "$TMP/proxy" "upstream o { server 127.0.0.1:$ORIGIN_PORT; keepalive 8; }
    server { listen 127.0.0.1:$NGINX_PORT $( [ $H2 = 1 ] && echo http2 );
        location / { proxy_pass http://o; proxy_http_version 1.1; proxy_set_header Connection \"\";
                     proxy_max_temp_file_size 0; } }"
"$NGINX" -p "$TMP/proxy" -c "$TMP/proxy/nginx.conf" -g "daemon off;" 2>"$TMP/proxy/stderr" &
NGINX_MASTER=$!
PIDS+=($NGINX_MASTER)
# estuary, one worker
cat > "$TMP/estuary.json" <<EOF
{"listen": [{"host": "127.0.0.1", "port": $EST_PORT}], "workers": 1,
 "upstreams": {"origin": {"targets": ["http://127.0.0.1:$ORIGIN_PORT"], "response_timeout": "30s"}},
 "routes": [{"path": "/{rest...}", "timeout": "30s", "proxy": {"upstream": "origin", "path": "/{rest...}"}}]}
EOF
"$BIN" -c "$TMP/estuary.json" 2>"$TMP/estuary.stderr" &
EST_PID=$!
PIDS+=($EST_PID)
wait_port "$ORIGIN_PORT"; wait_port "$NGINX_PORT"; wait_port "$EST_PORT"
NGINX_WORKER=$(child_of "$NGINX_MASTER")

CURL=(curl -sS -o /dev/null -w '%{http_code} %{size_download} %{time_total}')
[ $H2 = 1 ] && CURL+=(--http2-prior-knowledge)

run() { # $1 label, $2 url -> prints one line per run (the origin speaks HTTP/1.1 only)
    local label=$1 url=$2 i out
    for i in $(seq "$RUNS"); do
        if [ "$label" = direct ]; then out=$("${CURL[@]/--http2-prior-knowledge/--http1.1}" "$url"); else out=$("${CURL[@]}" "$url"); fi
        set -- $out "$label" "$url"
        local code=$1 size=$2 t=$3
        [ "$code" = 200 ] && [ "$size" = $((SIZE_MIB * 1024 * 1024)) ] || { echo "$label: bad reply ($out)" >&2; exit 1; }
        printf '  %-8s run %d: %6.3f s  %8.1f MiB/s\n' "$label" "$i" "$t" "$(echo "$SIZE_MIB / $t" | bc -l)"
        label=$4 url=$5
    done
}

# correctness once, with a checksum
GOT=$(curl -sS -f $( [ $H2 = 1 ] && echo --http2-prior-knowledge ) "http://127.0.0.1:$EST_PORT/big" | sha256sum | cut -d' ' -f1)
[ "$GOT" = "$SUM" ] || { echo "estuary: checksum mismatch ($GOT != $SUM)" >&2; tail -5 "$TMP/estuary.stderr" >&2; exit 1; }

echo "== ${SIZE_MIB} MiB download, $RUNS runs each, $( [ $H2 = 1 ] && echo HTTP/2 || echo HTTP/1.1 ) client, $(nproc) CPUs"
run direct "http://127.0.0.1:$ORIGIN_PORT/big"
c0=$(cpu_ticks "$NGINX_WORKER")
run nginx "http://127.0.0.1:$NGINX_PORT/big"
NGINX_CPU=$(( $(cpu_ticks "$NGINX_WORKER") - c0 ))
c0=$(cpu_ticks $EST_PID)
run estuary "http://127.0.0.1:$EST_PORT/big"
EST_CPU=$(( $(cpu_ticks $EST_PID) - c0 ))
echo "== proxy CPU (utime+stime) per GiB: less is better; robust when the machine is shared"
printf '  %-16s %8.3f s\n' "nginx worker" "$(echo "$NGINX_CPU / $TICK / $RUNS * 1024 / $SIZE_MIB" | bc -l)"
printf '  %-16s %8.3f s\n' "estuary" "$(echo "$EST_CPU / $TICK / $RUNS * 1024 / $SIZE_MIB" | bc -l)"
echo "== peak RSS (VmHWM) after the runs"
printf '  %-16s %8.1f MiB\n' "estuary" "$(echo "$(hwm_kb $EST_PID) / 1024" | bc -l)"
printf '  %-16s %8.1f MiB\n' "nginx worker" "$(echo "$(hwm_kb "$NGINX_WORKER") / 1024" | bc -l)"
printf '  %-16s %8.1f MiB\n' "nginx master" "$(echo "$(hwm_kb $NGINX_MASTER) / 1024" | bc -l)"
echo "(estuary: $BIN)"
