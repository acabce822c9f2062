#!/usr/bin/env bash
# Installs what the tests need, starts the shared real servers on loopback, then runs every
# check CI runs: format, lints, the whole suite. Servers are stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ferry/target}"
export FERRY_TOOLS="${FERRY_TOOLS:-$HOME/.cache/ferry/tools}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

scripts/install-test-deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

export FERRY_SERVERS_DIR="$(mktemp -d "${TMPDIR:-/tmp}/ferry-servers.XXXXXX")"
trap 'scripts/test-servers.sh stop; rm -rf "$FERRY_SERVERS_DIR"' EXIT
eval "$(scripts/test-servers.sh start)"
cargo nextest run --workspace --locked --no-fail-fast
