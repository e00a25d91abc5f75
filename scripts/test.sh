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
# The tests run under cargo-nextest (.config/nextest.toml): each test in a process of its own, several at once,
# the cluster tests limited so that two cores carry them. Without nextest, plain `cargo test` runs them one binary
# at a time (slower, same tests).
if cargo nextest --version >/dev/null 2>&1; then runner=nextest; else runner=cargo; fi
if [ "$runner" = nextest ]; then
  cargo nextest run --workspace --locked --no-run "${timings[@]}"
else
  cargo test --workspace --locked --no-run "${timings[@]}"
fi
stage "test build"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
if [ "$runner" = nextest ]; then
  cargo nextest run --workspace --locked 2>&1 | tee "$log"
  status=${PIPESTATUS[0]}
  # nextest does not run doctests; cargo does (documentation examples compile and pass).
  cargo test --workspace --locked --doc 2>&1 | tee -a "$log"
  doc_status=${PIPESTATUS[0]}
  if [ "$status" = 0 ]; then status=$doc_status; fi
else
  cargo test --workspace --locked 2>&1 | tee "$log"
  status=${PIPESTATUS[0]}
fi
set -e
stage "test run"
# nextest ends with "Summary [..] N tests run: P passed, F failed, S skipped"; cargo prints one "test result:" line
# per binary (doctests included). Both are counted.
count() {
  grep -E '^ *Summary \[|^test result:' "$log" | grep -Eo "[0-9]+ $1" | awk '{s+=$1} END {print s+0}'
}
passed=$(count passed)
failed=$(count failed)
echo "summary: $passed passed, $failed failed in $SECONDS s"
exit "$status"
