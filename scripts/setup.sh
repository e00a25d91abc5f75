#!/usr/bin/env bash
# Installs what building and testing Baton need on a fresh Debian machine (promtool comes with `prometheus`; `ip`
# from iproute2 and `nft` from nftables build the network-namespace tests),
# skipping what is already there.
# Idempotent: safe to run before every build.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pkg in libclang-dev protobuf-compiler build-essential pkg-config iproute2 nftables; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    need+=("$pkg")
  fi
done
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

# promtool (metrics and alert-rule checks in the tests) comes with the Prometheus package; its recommends (exporters
# that start services) are not needed.
if ! dpkg-query -W -f='${Status}' prometheus 2>/dev/null | grep -q "install ok installed"; then
  echo "setup: installing prometheus (for promtool)"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

# The local L1 toolchain (anvil and solc-js, versions pinned in tools/l1/package-lock.json) lives under tools/l1;
# Node.js and npm come from Debian when the machine has none.
if ! command -v npm >/dev/null 2>&1; then
  echo "setup: installing nodejs and npm"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nodejs npm >/dev/null
fi
lock_sum=$(sha256sum tools/l1/package-lock.json | cut -d' ' -f1)
if [ ! -x tools/l1/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil ] \
  || [ "$(cat tools/l1/node_modules/.baton-lock 2>/dev/null)" != "$lock_sum" ]; then
  echo "setup: installing the L1 toolchain (anvil, solc-js) under tools/l1"
  (cd tools/l1 && npm ci --no-audit --no-fund --loglevel=error)
  echo "$lock_sum" > tools/l1/node_modules/.baton-lock
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo is missing; install Rust with rustup (https://rustup.rs) and re-run" >&2
  exit 1
fi
