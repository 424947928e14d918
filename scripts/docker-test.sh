#!/usr/bin/env bash
# shellcheck disable=SC2317 source-path=SCRIPTDIR/..
# Docker, really: builds docker/Dockerfile unchanged on a locally built debian:bookworm-slim
# and runs it, then proves the README's set-up command on a fresh Debian 12 container.
#
#   scripts/docker-test.sh                 both parts
#   scripts/docker-test.sh --image-only    only the image part (build, run, curl, docker stop)
#   scripts/docker-test.sh --fresh-only    only the fresh-machine part
#
# 1. installs docker.io, debootstrap and docker-compose (v1) from Debian when missing;
# 2. starts a private dockerd with data-root, exec-root, pidfile and socket under a temporary
#    folder (storage overlay2, else vfs; bridge networking, else --network host);
# 3. builds the base image with `debootstrap --variant=minbase bookworm` from the host's
#    Debian mirror and `docker import`s it as debian:bookworm-slim (the rootfs tarball is
#    cached in $ESTUARY_CI_CACHE, default /var/cache/estuary-ci, so later runs skip debootstrap);
# 4. image: builds docker/Dockerfile and docker/backends.Dockerfile, brings up estuary with
#    the demo backends (docker/compose.yaml through `docker compose` or `docker-compose`, else
#    plain `docker run` with --network-alias users/orders), curls the aggregate route through
#    the published port (loopback only), checks the container (PID 1, non-root, health), then
#    `docker stop`s it: exit code 0, stopped well before the 10 s kill, logs show the drain;
# 5. fresh machine: a container from the same base with the repository copied in runs
#    `./scripts/demo.sh` in the background; curl inside it must get the merged JSON;
# 6. removes every container, stops the daemon and deletes the temporary folder (trap).
# Skips with exit 0 and a clear message only when no Docker daemon can start here (not root,
# or dockerd fails with every fallback). Environment: ESTUARY_DOCKER_COMPOSE=auto|v2|v1|plain,
# ESTUARY_DOCKER_STORAGE="overlay2 vfs", ESTUARY_FRESH_TIMEOUT (s, default 1200).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PARTS=(image fresh)
case "${1:-}" in
  --image-only) PARTS=(image) ;;
  --fresh-only) PARTS=(fresh) ;;
  "") ;;
  -h | --help) sed -n '2,25p' "$0"; exit 0 ;;
  *) echo "usage: $0 [--image-only|--fresh-only]" >&2; exit 2 ;;
esac

T0=$SECONDS
TIMINGS=()
log() { echo "docker-test: $*" >&2; }
die() { log "FAIL: $*"; exit 1; }
skip() { log "SKIP: $*"; exit 0; }
lap() { TIMINGS+=("$(printf '%-34s %4d s' "$1" "$((SECONDS - $2))")"); }

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# check_merged JSON: the demo route's merged document
check_merged() {
  /usr/bin/python3 -c '
import json, sys
want = {"user": {"id": "123", "name": "user123"}, "order": {"id": "456", "product": "item456"}}
got = json.loads(sys.argv[1])
sys.exit(0 if got == want else 1)' "$1" 2>/dev/null
}

# ---------------------------------------------------------------- part 1: the image
image_test() {
  local t=$SECONDS
  log "docker build -f docker/Dockerfile -t estuary:latest ."
  # shellcheck disable=SC2046
  dk_t 1800 build $(dk_build_args) -f docker/Dockerfile -t estuary:latest . >"$WORK/build-estuary.log" 2>&1 || {
    tail -30 "$WORK/build-estuary.log" >&2
    die "docker build of docker/Dockerfile failed"
  }
  lap "build docker/Dockerfile" "$t"
  t=$SECONDS
  # shellcheck disable=SC2046
  dk_t 1200 build $(dk_build_args) -f docker/backends.Dockerfile -t estuary-demo-backends:latest . \
    >"$WORK/build-backends.log" 2>&1 || {
    tail -30 "$WORK/build-backends.log" >&2
    die "docker build of docker/backends.Dockerfile failed"
  }
  lap "build docker/backends.Dockerfile" "$t"
  log "image size: $(dk image inspect -f '{{.Size}}' estuary:latest | awk '{printf "%.1f MB", $1/1e6}'), largest layers:"
  dk history --format '{{.Size}}\t{{.CreatedBy}}' estuary:latest | sort -h -r | head -4 | cut -c1-110 |
    sed 's/^/    /' >&2
  dk run --rm --entrypoint sh estuary:latest -c 'test ! -e /usr/bin/gcc && test ! -e /usr/bin/cmake' ||
    die "the runtime image holds build tools"

  t=$SECONDS
  local http_port admin_port mode=${ESTUARY_DOCKER_COMPOSE:-auto} compose=() project="estuary-ci-$$" cid
  if [[ $DK_NETMODE == host ]]; then
    http_port=8080 admin_port=9901
    mode=plain
  else
    http_port=$(free_port) admin_port=$(free_port)
  fi
  if [[ $mode == auto || $mode == v2 ]] && dk compose version >/dev/null 2>&1; then
    compose=(dk compose)
  elif [[ $mode == auto || $mode == v1 ]] && command -v docker-compose >/dev/null; then
    compose=(env DOCKER_HOST="unix://$WORK/docker.sock" timeout -k 5 180 docker-compose)
  elif [[ $mode != plain && $mode != auto ]]; then
    die "ESTUARY_DOCKER_COMPOSE=$mode is not available"
  fi
  if [[ ${#compose[@]} -gt 0 ]]; then
    log "bringing up docker/compose.yaml with ${compose[*]: -1} (project $project)"
    export ESTUARY_PUBLISH="127.0.0.1:$http_port" ESTUARY_ADMIN_PUBLISH="127.0.0.1:$admin_port"
    "${compose[@]}" -p "$project" -f docker/compose.yaml config -q || die "docker/compose.yaml is invalid"
    "${compose[@]}" -p "$project" -f docker/compose.yaml up -d --no-build >"$WORK/compose.log" 2>&1 || {
      cat "$WORK/compose.log" >&2
      die "compose up failed"
    }
    cid=$("${compose[@]}" -p "$project" -f docker/compose.yaml ps -q estuary)
  else
    log "bringing up estuary + backends with docker run (no compose available)"
    local net=() publish=()
    if [[ $DK_NETMODE == host ]]; then
      net=(--network host)
    else
      dk network create "$project" >/dev/null
      net=(--network "$project")
      publish=(-p "127.0.0.1:$http_port:8080" -p "127.0.0.1:$admin_port:9901")
    fi
    dk run -d --name "$project-users" "${net[@]}" --network-alias users estuary-demo-backends:latest \
      users.py --host 0.0.0.0 --port 8081 >/dev/null
    dk run -d --name "$project-orders" "${net[@]}" --network-alias orders estuary-demo-backends:latest \
      orders.py --host 0.0.0.0 --port 8082 >/dev/null
    # host networking: the service names are not in DNS, give them to the container's hosts file
    [[ $DK_NETMODE == host ]] && net+=(--add-host users:127.0.0.1 --add-host orders:127.0.0.1)
    cid=$(dk run -d --name "$project-estuary" "${net[@]}" "${publish[@]}" estuary:latest)
  fi
  [[ -n "$cid" ]] || die "no estuary container"
  local url="http://127.0.0.1:$http_port/gateway/123/456" deadline=$((SECONDS + 60)) body=""
  until body=$(curl -s --max-time 3 "$url") && check_merged "$body"; do
    if ((SECONDS >= deadline)) || [[ $(dk inspect -f '{{.State.Running}}' "$cid") != true ]]; then
      dk logs "$cid" 2>&1 | tail -20 >&2
      die "GET $url did not answer the merged JSON within 60 s (last: ${body:-no answer})"
    fi
    sleep 0.5
  done
  log "GET $url -> $body"
  lap "start containers, first merged reply" "$t"
  body=$(curl -s --max-time 3 "http://127.0.0.1:$http_port/api/users/7")
  [[ $(/usr/bin/python3 -c 'import json,sys; print(json.loads(sys.argv[1]) == {"id": "7", "name": "user7"})' "$body") == True ]] ||
    die "proxy route /api/users/7 answered: $body"
  log "GET /api/users/7 -> $body"
  [[ $(dk exec "$cid" cat /proc/1/comm) == estuary ]] || die "PID 1 of the container is not estuary"
  [[ $(dk exec "$cid" id -u) == 10001 ]] || die "estuary does not run as uid 10001"
  log "PID 1 is estuary, uid 10001"

  # the image's HEALTHCHECK command itself, against a stand-in admin listener on :9901
  # (python in the backends image) answering 200, then 503: it must pass, then fail
  local hc_args=() st rc
  mapfile -t hc_args < <(dk image inspect -f '{{json .Config.Healthcheck.Test}}' estuary:latest |
    /usr/bin/python3 -c 'import json,sys; t=json.load(sys.stdin); assert t[0]=="CMD"; print("\n".join(t[1:]))')
  [[ ${#hc_args[@]} -gt 0 ]] || die "the image has no HEALTHCHECK"
  for st in 200 503; do
    dk run -d --name "$project-hc$st" --network none --entrypoint /usr/bin/python3 estuary-demo-backends:latest -c "
import http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response($st if self.path == '/healthz' else 404); self.end_headers()
http.server.HTTPServer(('127.0.0.1', 9901), H).serve_forever()" >/dev/null
    rc=0
    for _ in $(seq 50); do
      rc=0
      dk exec "$project-hc$st" "${hc_args[@]}" >/dev/null 2>&1 || rc=$?
      [[ $st == 200 && $rc -eq 0 ]] && break
      [[ $st == 503 ]] && dk exec "$project-hc$st" bash -c '(exec 3<>/dev/tcp/127.0.0.1/9901)' 2>/dev/null && break
      sleep 0.2
    done
    [[ $st == 503 ]] && { dk exec "$project-hc$st" "${hc_args[@]}" >/dev/null 2>&1 || rc=$?; }
    dk rm -f "$project-hc$st" >/dev/null
    if [[ $st == 200 ]]; then
      [[ $rc -eq 0 ]] || die "HEALTHCHECK command fails against a /healthz answering 200 (exit $rc)"
    else
      [[ $rc -ne 0 ]] || die "HEALTHCHECK command passes against a /healthz answering 503"
    fi
  done
  log "HEALTHCHECK command: passes on /healthz 200, fails on 503"

  # admin listener + HEALTHCHECK (the admin listener may not be built yet: then only a warning)
  local health_code
  health_code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 3 "http://127.0.0.1:$admin_port/healthz" || true)
  if [[ $health_code == 200 ]]; then
    local hd=$((SECONDS + 40)) hs=""
    until hs=$(dk inspect -f '{{.State.Health.Status}}' "$cid") && [[ $hs == healthy ]]; do
      ((SECONDS < hd)) || die "admin /healthz answers 200 but the HEALTHCHECK status is '$hs' after 40 s"
      sleep 1
    done
    log "admin /healthz 200, container health: healthy"
  else
    log "WARNING: admin /healthz on :9901 did not answer (HTTP ${health_code:-none}); the admin listener" \
      "is not built yet, so the HEALTHCHECK cannot pass (health: $(dk inspect -f '{{.State.Health.Status}}' "$cid"))"
  fi

  # docker stop: SIGTERM to PID 1, clean drain, exit 0, well before the 10 s SIGKILL
  t=$SECONDS
  local s0 s1 ms code logs
  s0=$(date +%s%N)
  dk stop "$cid" >/dev/null
  s1=$(date +%s%N)
  ms=$(((s1 - s0) / 1000000))
  code=$(dk inspect -f '{{.State.ExitCode}} oom={{.State.OOMKilled}}' "$cid")
  logs=$(dk logs "$cid" 2>&1)
  printf '%s\n' "$logs" | tail -4 | sed 's/^/    estuary: /' >&2
  [[ $code == "0 oom=false" ]] || die "estuary exited with '$code' after docker stop"
  ((ms < 8000)) || die "docker stop took $ms ms (SIGTERM not handled? the kill comes at 10 s)"
  grep -q 'received SIGTERM, draining' <<<"$logs" || die "no 'received SIGTERM, draining' in the logs"
  grep -Eq '\bstopped\b' <<<"$logs" || die "no 'stopped' line in the logs"
  log "docker stop: exit 0 after $ms ms, logs show the drain"
  lap "docker stop (drain)" "$t"
  if [[ ${#compose[@]} -gt 0 ]]; then
    "${compose[@]}" -p "$project" -f docker/compose.yaml down -t 15 >/dev/null 2>&1 || true
  else
    dk rm -f "$project-users" "$project-orders" "$project-estuary" >/dev/null 2>&1 || true
    [[ $DK_NETMODE == host ]] || dk network rm "$project" >/dev/null 2>&1 || true
  fi
  log "image test: PASS"
}

# ---------------------------------------------------------------- part 2: a fresh machine
fresh_test() {
  local t=$SECONDS name="estuary-fresh-$$" net=() limit=${ESTUARY_FRESH_TIMEOUT:-1200}
  if [[ $DK_NETMODE == host ]]; then
    local p
    for p in 8080 8081 8082; do
      (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && skip "fresh machine: host networking only and port $p is taken"
    done
    net=(--network host)
  fi
  dk run -d --name "$name" "${net[@]}" "$BASE_IMAGE" sleep infinity >/dev/null
  dk exec "$name" mkdir -p /root/estuary
  # the repository as a checkout would have it: no build folders, caches or .git
  tar -C "$ROOT" -c --exclude=./.git --exclude='./build*' --exclude='__pycache__' --exclude=.pytest_cache . |
    dk cp - "$name:/root/estuary"
  log "fresh machine: running ./scripts/demo.sh in the background on a bare Debian 12 container"
  dk exec -d "$name" bash -c 'cd /root/estuary && echo $$ >/tmp/demo.pid && exec ./scripts/demo.sh >/tmp/demo.log 2>&1'
  local deadline=$((SECONDS + limit)) body="" last=0
  while :; do
    body=$(dk exec "$name" bash -c 'command -v curl >/dev/null && curl -s --max-time 3 http://localhost:8080/gateway/123/456' 2>/dev/null || true)
    check_merged "$body" && break
    if ! dk exec "$name" bash -c 'kill -0 "$(cat /tmp/demo.pid)"' 2>/dev/null; then
      dk exec "$name" tail -30 /tmp/demo.log >&2 || true
      die "fresh machine: ./scripts/demo.sh exited before the demo route answered"
    fi
    if ((SECONDS >= deadline)); then
      dk exec "$name" tail -30 /tmp/demo.log >&2 || true
      die "fresh machine: no merged JSON within $limit s"
    fi
    if ((SECONDS - last >= 60)); then
      last=$SECONDS
      log "fresh machine: waiting ($((SECONDS - t)) s): $(dk exec "$name" tail -1 /tmp/demo.log 2>/dev/null | cut -c1-100)"
    fi
    sleep 3
  done
  log "fresh machine: curl http://localhost:8080/gateway/123/456 (inside) -> $body"
  # demo.sh stops its three processes on SIGTERM
  dk exec "$name" bash -c 'kill -TERM "$(cat /tmp/demo.pid)"' || true
  lap "fresh machine: demo.sh to merged JSON" "$t"
  dk rm -f "$name" >/dev/null
  log "fresh machine test: PASS"
}

setup() {
  [[ $(id -u) -eq 0 ]] || skip "needs root to start a Docker daemon (dockerd); run as root"
  command -v curl >/dev/null || die "curl is missing (scripts/install-deps.sh installs it)"

  WORK=$(mktemp -d /tmp/estuary-docker.XXXXXX)
  chmod 755 "$WORK"
  # shellcheck source=tests/deploy/docker-lib.sh
  source "$ROOT/tests/deploy/docker-lib.sh"

  finish() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    if [[ $rc -ne 0 ]]; then
      log "dockerd log tail:"
      tail -5 "$WORK/dockerd.log" 2>/dev/null | sed 's/^/    /' >&2
    fi
    log "cleaning up (containers, dockerd, $WORK)"
    dk_cleanup
    rm -rf "$WORK"
    if [[ ${#TIMINGS[@]} -gt 0 ]]; then
      log "timings:"
      printf '    %s\n' "${TIMINGS[@]}" >&2
    fi
    log "total $((SECONDS - T0)) s, exit $rc"
    exit "$rc"
  }
  trap finish EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM

  # ------------------------------------------------------------ daemon and base image
  local t=$SECONDS
  apt_install docker.io debootstrap docker-compose ||
    apt_install docker.io debootstrap || skip "docker.io/debootstrap cannot be installed from Debian here"
  lap "install docker.io, debootstrap" "$t"

  t=$SECONDS
  dk_start
  log "dockerd up: $(dk info -f '{{.ServerVersion}}, storage {{.Driver}}') , network mode $DK_NETMODE"
  lap "start dockerd" "$t"

  t=$SECONDS
  dk_base_image
  lap "base image (debootstrap or cache)" "$t"
}

# main is one compound command: bash has read all of it before it runs (safe to edit the file
# while a run is going on)
main() {
  local part
  setup
  for part in "${PARTS[@]}"; do
    "${part}_test"
  done
  log "PASS (${PARTS[*]})"
  exit 0
}
main "$@"
