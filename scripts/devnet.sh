#!/usr/bin/env bash
# Builds Baton (release) and starts a local devnet of validator processes on loopback.
# Extra arguments go to `baton devnet` (e.g. --validators 7 --duration-secs 60).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/baton-target}"
cargo build --release --locked -p baton-node --bin baton
exec "$CARGO_TARGET_DIR/release/baton" devnet "$@"
