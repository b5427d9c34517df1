#!/usr/bin/env bash
# Idempotent installation of everything the build and the tests need on a fresh Debian 12 machine
# with rustup, Node.js and npm. Sourced by scripts/test.sh and scripts/start.sh; each step does
# nothing when its tool is already there.
#
#   ensure_wasm_target     rustup target wasm32-unknown-unknown
#   ensure_wasm_bindgen    wasm-bindgen-cli at exactly the version in Cargo.lock
#   ensure_wasm_pack       wasm-pack (builds the npm package's wasm + glue)
#   ensure_chromium        Debian chromium + chromium-driver (browser tests only)

ensure_wasm_target() {
  if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    echo "setup: adding the wasm32-unknown-unknown target"
    rustup target add wasm32-unknown-unknown
  fi
}

# The CLI must match the wasm-bindgen crate exactly, so the version comes from Cargo.lock.
# `--locked` is left out on purpose: it fails when the registry mirror lags behind the CLI's lock.
ensure_wasm_bindgen() {
  local want have
  want=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' Cargo.lock)
  if [ -z "$want" ]; then
    echo "setup: wasm-bindgen not found in Cargo.lock" >&2
    return 1
  fi
  have=$(wasm-bindgen --version 2>/dev/null | awk '{ print $2 }') || true
  if [ "$have" != "$want" ]; then
    echo "setup: installing wasm-bindgen-cli $want (found '${have:-none}')"
    cargo install wasm-bindgen-cli --version "$want" --force
  fi
}

# wasm-pack drives cargo and the wasm-bindgen CLI above (`--mode no-install`: it downloads nothing).
WASM_PACK_VERSION=0.15.1
ensure_wasm_pack() {
  local have
  have=$(wasm-pack --version 2>/dev/null | awk '{ print $2 }') || true
  if [ "$have" != "$WASM_PACK_VERSION" ]; then
    echo "setup: installing wasm-pack $WASM_PACK_VERSION (found '${have:-none}')"
    cargo install wasm-pack --version "$WASM_PACK_VERSION" --locked --force
  fi
}

ensure_chromium() {
  if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    echo "setup: installing Debian chromium and chromium-driver"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium chromium-driver >/dev/null
  fi
}
