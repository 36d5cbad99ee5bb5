#!/usr/bin/env bash
# Start or stop the local Prefect server in the background, so demo runs stay visible in the UI.
set -euo pipefail
cd "$(dirname "$0")/.."
action="$1"; port="${2:-4200}"
UV="$(cat .deployflow/uv-path)"
pidfile=".deployflow/prefect-server-$port.pid"
health="http://127.0.0.1:$port/api/health"

case "$action" in
start)
  if curl -sf "$health" >/dev/null 2>&1; then
    echo "Prefect server already running: http://127.0.0.1:$port"; exit 0
  fi
  mkdir -p "${PREFECT_HOME:-.deployflow/prefect}"
  echo "starting the Prefect server on 127.0.0.1:$port (log: .deployflow/prefect-server.log)"
  setsid nohup "$UV" run prefect server start --host 127.0.0.1 --port "$port" \
    > .deployflow/prefect-server.log 2>&1 < /dev/null &
  echo $! > "$pidfile"
  for _ in $(seq 1 120); do
    if curl -sf "$health" >/dev/null 2>&1; then
      echo "Prefect UI: http://127.0.0.1:$port  (stop it with: make stop-server)"; exit 0
    fi
    if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      echo "the Prefect server exited; its log:" >&2; tail -n 30 .deployflow/prefect-server.log >&2; exit 1
    fi
    sleep 0.5
  done
  echo "the Prefect server did not become healthy in 60s" >&2; exit 1
  ;;
stop)
  if [ -f "$pidfile" ]; then
    pid="$(cat "$pidfile")"
    kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
    rm -f "$pidfile"; echo "Prefect server stopped"
  else
    echo "no Prefect server started by make"
  fi
  ;;
*) echo "usage: $0 start|stop [port]" >&2; exit 2 ;;
esac
