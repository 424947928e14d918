#!/usr/bin/env bash
# Demo: installs dependencies, builds estuary, then runs the two demo backends
# (users on 127.0.0.1:8081, orders on 127.0.0.1:8082) and estuary on conf/estuary.json
# (port 8080) in the foreground. Ctrl-C or SIGTERM stops all three.
#   --no-build   skip install-deps and build (use the existing build/estuary)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PY=/usr/bin/python3
ESTUARY_BIN=${ESTUARY_BIN:-$ROOT/build/estuary}
CONFIG=${ESTUARY_CONFIG:-$ROOT/conf/estuary.json}

if [[ "${1:-}" != "--no-build" ]]; then
  "$ROOT/scripts/install-deps.sh"
  "$ROOT/scripts/build.sh"
fi

PIDS=()
# shellcheck disable=SC2317  # invoked from traps
stop_all() {
  trap - INT TERM EXIT
  echo
  echo "demo: stopping (${PIDS[*]:-})"
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
}
trap 'stop_all; exit 130' INT
trap 'stop_all; exit 143' TERM
trap 'stop_all' EXIT

wait_port() { # host port name: waits up to 10 s for a TCP listener
  local deadline=$((SECONDS + 10))
  until (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      echo "demo: $3 did not start listening on $1:$2" >&2
      return 1
    fi
    sleep 0.1
  done
}

"$PY" "$ROOT/tests/backends/users.py" --port 8081 &
PIDS+=($!)
"$PY" "$ROOT/tests/backends/orders.py" --port 8082 &
PIDS+=($!)
wait_port 127.0.0.1 8081 users
wait_port 127.0.0.1 8082 orders

"$ESTUARY_BIN" -c "$CONFIG" &
PIDS+=($!)
wait_port 127.0.0.1 8080 estuary

cat <<MSG

estuary is listening on http://localhost:8080 (config: $CONFIG)
  curl -s http://localhost:8080/gateway/123/456
    -> {"user":{"id":"123","name":"user123"},"order":{"id":"456","product":"item456"}}
  curl -s --http2-prior-knowledge http://localhost:8080/gateway/123/456
  curl -s http://localhost:8080/api/users/7          (proxy route to the users backend)
Backends: users http://127.0.0.1:8081/users/{id}, orders http://127.0.0.1:8082/orders/{id}
Press Ctrl-C to stop.
MSG

# Stay in the foreground until one of the processes exits (or a signal arrives).
set +e
wait -n "${PIDS[@]}"
rc=$?
set -e
echo "demo: a process exited (status $rc); stopping the others" >&2
exit "$rc"
