#!/usr/bin/env bash
# Installs what building and testing Baton need on a fresh Debian machine (promtool comes with `prometheus`; `ip`
# from iproute2 and `nft` from nftables build the network-namespace tests),
# skipping what is already there.
# Idempotent: safe to run before every build.
set -euo pipefail

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

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo is missing; install Rust with rustup (https://rustup.rs) and re-run" >&2
  exit 1
fi
