#!/usr/bin/env bash
# The long fault suite: 50 seeds per simulated scenario with seven validators, a million fuzz cases per decoder,
# and the network-namespace scenarios with seven validators at twice the length (needs root).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/baton-target}"
BATON_SIM_RUNS=50 BATON_SIM_VALIDATORS=7 cargo test --release --locked -p baton-consensus sim_ -- --nocapture
BATON_FUZZ_CASES=1000000 cargo test --release --locked -p baton-node --test fuzz -- --nocapture
BATON_NETNS_SECS=2 BATON_NETNS_VALIDATORS=7 cargo test --locked -p baton-node --test netns -- --nocapture --test-threads 1
