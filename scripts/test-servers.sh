#!/usr/bin/env bash
# Starts (or stops) the real servers the test suite shares, on free loopback ports:
# OpenBao's dev server (Vault API) and SeaweedFS (S3). `start` prints `export` lines for
# the tests' environment; each test then uses its own bucket and Vault paths.
#   eval "$(scripts/test-servers.sh start)"; ...; scripts/test-servers.sh stop
set -euo pipefail
tools="${FERRY_TOOLS:-$HOME/.cache/ferry/tools}"
state="${FERRY_SERVERS_DIR:-${TMPDIR:-/tmp}/ferry-test-servers}"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
wait_for() { # wait_for URL SECONDS
  local deadline=$((SECONDS + $2))
  until curl -s -o /dev/null "$1"; do
    [ $SECONDS -lt $deadline ] || { echo "server at $1 did not start; see $state/*.log" >&2; return 1; }
    sleep 0.1
  done
}

stop() {
  for pidfile in "$state"/*.pid; do
    [ -e "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
    # Wait for it to exit, so the data directory is not removed under a writing server.
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$pidfile"
  done
  rm -rf "$state/weed-data"
}

start() {
  stop
  mkdir -p "$state/weed-data"
  local bao_port s3_port root_token=ferry-test-root
  bao_port=$(free_port)
  "$tools/bin/bao" server -dev -dev-root-token-id="$root_token" -dev-listen-address="127.0.0.1:$bao_port" \
    -dev-no-store-token >"$state/bao.log" 2>&1 &
  echo $! >"$state/bao.pid"

  s3_port=$(free_port)
  cat >"$state/s3.json" <<JSON
{"identities":[{"name":"admin","credentials":[{"accessKey":"ferry-test","secretKey":"ferry-test-secret"}],"actions":["Admin","Read","Write","List","Tagging"]}]}
JSON
  "$tools/bin/weed" mini -dir="$state/weed-data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -master.port="$(free_port)" -master.telemetry=false -volume.port="$(free_port)" -filer.port="$(free_port)" \
    -s3.port="$s3_port" -s3.config="$state/s3.json" -s3.port.iceberg=0 -s3.port.lance=0 \
    -webdav=false -admin.ui=false -metricsPort=0 >"$state/weed.log" 2>&1 &
  echo $! >"$state/weed.pid"

  wait_for "http://127.0.0.1:$bao_port/v1/sys/health" 30
  # The S3 gateway answers before the volume server is ready: wait until a bucket can be made.
  local deadline=$((SECONDS + 60))
  until curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$s3_port/" | grep -qE '^(200|403)$'; do
    [ $SECONDS -lt $deadline ] || { echo "SeaweedFS did not start; see $state/weed.log" >&2; return 1; }
    sleep 0.2
  done
  echo "export VAULT_ADDR=http://127.0.0.1:$bao_port"
  echo "export FERRY_TEST_VAULT_ADDR=http://127.0.0.1:$bao_port"
  echo "export FERRY_TEST_VAULT_TOKEN=$root_token"
  echo "export FERRY_TEST_S3_ENDPOINT=http://127.0.0.1:$s3_port"
  echo "export FERRY_TEST_S3_ACCESS_KEY=ferry-test"
  echo "export FERRY_TEST_S3_SECRET_KEY=ferry-test-secret"
  echo "export FERRY_TEST_RCLONE=$tools/bin/rclone"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
