#!/usr/bin/env bash
# Runs Baton's whole test suite: formatting, lints, unit and property tests, and the multi-process cluster tests.
set -euo pipefail
cd "$(dirname "$0")/.."
stage_start=$SECONDS
stage() { echo "stage: $1 took $((SECONDS - stage_start)) s"; stage_start=$SECONDS; }
./scripts/setup.sh
stage setup
# Keep build output outside the checkout so fresh clones reuse a warm build.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/baton-target}"
export CARGO_TERM_COLOR=never
# BATON_TIMINGS=1 adds cargo's per-crate build timings (HTML under $CARGO_TARGET_DIR/cargo-timings/).
timings=()
if [ -n "${BATON_TIMINGS:-}" ]; then timings=(--timings); fi
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked "${timings[@]}" -- -D warnings
stage lints
cargo test --workspace --locked --no-run "${timings[@]}"
stage "test build"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
stage "test run"
passed=$(grep -Eo '[0-9]+ passed' "$log" | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed' "$log" | awk '{s+=$1} END {print s+0}')
echo "summary: $passed passed, $failed failed in $SECONDS s"
exit "$status"
