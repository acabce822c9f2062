#!/usr/bin/env bash
# Starts (or stops) the real servers the test suite shares, on free loopback ports:
# OpenBao's dev server (Vault API), SeaweedFS (S3), Azurite (Azure Blob), `rclone serve webdav`
# (WebDAV), fake-gcs-server (GCS JSON API) and OpenSSH's sshd (SFTP, for the ferry-sftp account). `start` prints `export` lines for the tests'
# environment; each test then uses its own buckets, containers, directories and Vault paths.
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
  local pidfile pid pids=()
  for pidfile in "$state"/*.pid; do
    [ -e "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
    pids+=("$pid")
  done
  # Wait for them to exit (several take 1-4 s to shut down, so all at once), so that no data
  # directory is removed under a writing server.
  for pid in "${pids[@]}"; do
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  done
  rm -f "$state"/*.pid
  rm -rf "$state/weed-data" "$state/azurite" "$state/webdav-root" "$state/sftp" "$state/sftp-root"
}

start() {
  stop
  mkdir -p "$state/weed-data" "$state/azurite" "$state/webdav-root" "$state/sftp" "$state/sftp-root"
  local bao_port s3_port azure_port webdav_port gcs_port sftp_port oauth_port root_token=ferry-test-root
  bao_port=$(free_port)
  "$tools/bin/bao" server -dev -dev-root-token-id="$root_token" -dev-listen-address="127.0.0.1:$bao_port" \
    -dev-no-store-token >"$state/bao.log" 2>&1 &
  echo $! >"$state/bao.pid"

  s3_port=$(free_port)
  cat >"$state/s3.json" <<JSON
{"identities":[{"name":"admin","credentials":[{"accessKey":"ferry-test","secretKey":"ferry-test-secret"}],"actions":["Admin","Read","Write","List","Tagging"]},{"name":"second","credentials":[{"accessKey":"ferry-test-2","secretKey":"ferry-test-secret-2"}],"actions":["Admin","Read","Write","List","Tagging"]}]}
JSON
  "$tools/bin/weed" mini -dir="$state/weed-data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -master.port="$(free_port)" -master.telemetry=false -volume.port="$(free_port)" -filer.port="$(free_port)" \
    -s3.port="$s3_port" -s3.config="$state/s3.json" -s3.port.iceberg=0 -s3.port.lance=0 \
    -webdav=false -admin.ui=false -metricsPort=0 -master.volumeSizeLimitMB=64 -volume.max=2000 >"$state/weed.log" 2>&1 &
  echo $! >"$state/weed.pid"

  # Azurite's Blob service only; no telemetry (it would try to reach Application Insights).
  azure_port=$(free_port)
  "$tools/bin/azurite-blob" --blobHost 127.0.0.1 --blobPort "$azure_port" --location "$state/azurite" \
    --silent --skipApiVersionCheck --loose --disableTelemetry >"$state/azurite.log" 2>&1 &
  echo $! >"$state/azurite.pid"

  webdav_port=$(free_port)
  "$tools/bin/rclone" serve webdav "$state/webdav-root" --addr "127.0.0.1:$webdav_port" \
    --user ferry-test --pass ferry-test-secret >"$state/webdav.log" 2>&1 &
  echo $! >"$state/webdav.pid"

  # -public-host and -external-url make the URLs it hands out (mediaLink, resumable uploads) point back here.
  gcs_port=$(free_port)
  "$tools/bin/fake-gcs-server" -scheme http -host 127.0.0.1 -port "$gcs_port" -backend memory \
    -public-host "127.0.0.1:$gcs_port" -external-url "http://127.0.0.1:$gcs_port" -log-level warn \
    >"$state/fake-gcs.log" 2>&1 &
  echo $! >"$state/fake-gcs.pid"

  # sshd with its own host key and configuration; the account may only use SFTP, under sftp-root.
  sftp_port=$(free_port)
  ssh-keygen -q -t ed25519 -N '' -C ferry-test-host -f "$state/sftp/host_ed25519"
  ssh-keygen -q -t ed25519 -N '' -C ferry-test-client -f "$state/sftp/client_ed25519"
  cp "$state/sftp/client_ed25519.pub" "$state/sftp/authorized_keys"
  chown ferry-sftp "$state/sftp-root"
  chmod 755 "$state"  # the account must reach its root below it (mktemp makes it 0700)
  mkdir -p /run/sshd
  cat >"$state/sftp/sshd_config" <<SSHD
Port $sftp_port
ListenAddress 127.0.0.1
HostKey $state/sftp/host_ed25519
PidFile none
AuthorizedKeysFile $state/sftp/authorized_keys
StrictModes no
UsePAM no
PasswordAuthentication yes
KbdInteractiveAuthentication no
PermitRootLogin no
AllowUsers ferry-sftp
Subsystem sftp internal-sftp
ForceCommand internal-sftp
MaxStartups 200
MaxSessions 50
LogLevel ERROR
SSHD
  /usr/sbin/sshd -D -e -f "$state/sftp/sshd_config" >"$state/sshd.log" 2>&1 &
  echo $! >"$state/sshd.pid"

  # The drives' OAuth 2.0 token endpoint.
  oauth_port=$(free_port)
  node "$(dirname "$0")/oauth-token-endpoint.mjs" "$oauth_port" "$tools/node/node_modules/oauth2-mock-server/dist/index.mjs" \
    >"$state/oauth.log" 2>&1 &
  echo $! >"$state/oauth.pid"

  wait_for "http://127.0.0.1:$bao_port/v1/sys/health" 30
  wait_for "http://127.0.0.1:$oauth_port/.well-known/openid-configuration" 30
  wait_for "http://127.0.0.1:$webdav_port/" 30
  wait_for "http://127.0.0.1:$gcs_port/storage/v1/b" 30
  wait_for "http://127.0.0.1:$azure_port/devstoreaccount1?comp=list" 60
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
  echo "export FERRY_TEST_AZURE_ENDPOINT=http://127.0.0.1:$azure_port/devstoreaccount1"
  echo "export FERRY_TEST_AZURE_ACCOUNT=devstoreaccount1"
  # Azurite's well-known development key (public; the same in every Azurite).
  echo "export FERRY_TEST_AZURE_KEY=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
  echo "export FERRY_TEST_WEBDAV_ENDPOINT=http://127.0.0.1:$webdav_port"
  echo "export FERRY_TEST_WEBDAV_USER=ferry-test"
  echo "export FERRY_TEST_WEBDAV_PASSWORD=ferry-test-secret"
  echo "export FERRY_TEST_GCS_ENDPOINT=http://127.0.0.1:$gcs_port"
  echo "export FERRY_TEST_OAUTH_TOKEN_ENDPOINT=http://127.0.0.1:$oauth_port/token"
  deadline=$((SECONDS + 30))
  until ssh-keyscan -p "$sftp_port" 127.0.0.1 >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || { echo "sshd did not start; see $state/sshd.log" >&2; return 1; }
    sleep 0.1
  done
  echo "export FERRY_TEST_SFTP_HOST=127.0.0.1"
  echo "export FERRY_TEST_SFTP_PORT=$sftp_port"
  echo "export FERRY_TEST_SFTP_USER=ferry-sftp"
  echo "export FERRY_TEST_SFTP_PASSWORD=ferry-test-secret"
  echo "export FERRY_TEST_SFTP_KEY_FILE=$state/sftp/client_ed25519"
  echo "export FERRY_TEST_SFTP_HOST_KEY='$(cut -d' ' -f1,2 "$state/sftp/host_ed25519.pub")'"
  echo "export FERRY_TEST_SFTP_ROOT=$state/sftp-root"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
