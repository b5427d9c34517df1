#!/usr/bin/env bash
# The wasm-bindgen tests of the engine (src/engine/browser_tests.rs) in headless Debian Chromium,
# through wasm-bindgen-test-runner and chromedriver (flags in webdriver.json).
# Note: `cargo test -q` breaks wasm-bindgen-test-runner's output parsing; do not add -q.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
ensure_wasm_target
ensure_wasm_bindgen
ensure_chromium

export CHROMEDRIVER=${CHROMEDRIVER:-/usr/bin/chromedriver}
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner
export WASM_BINDGEN_TEST_TIMEOUT=${WASM_BINDGEN_TEST_TIMEOUT:-120}
# Chromium runs as root here: webdriver.json (read from the repository root) adds --no-sandbox,
# headless and the other flags; chromedriver gives every session a fresh temporary profile.
export WASM_BINDGEN_TEST_WEBDRIVER_JSON=${WASM_BINDGEN_TEST_WEBDRIVER_JSON:-$PWD/webdriver.json}
# One test drives two clients through a real node: build it, start it on a free port and tell the
# test where (at compile time, through SIGNAL_MESH_TEST_NODE).
# SIGNAL_MESH_NODE_BIN names an already built node instead.
node_bin=${SIGNAL_MESH_NODE_BIN:-}
if [ -z "$node_bin" ]; then
  cargo build -p signal-mesh-node
  node_bin=target/debug/signal-mesh-node
fi
log=$(mktemp)
"$node_bin" --listen 127.0.0.1:0 >"$log" 2>&1 &
node_pid=$!
trap 'kill "$node_pid" 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 100); do
  port=$(sed -n 's/^signal-mesh-node listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log" | head -1)
  [ -n "$port" ] && break
  sleep 0.1
done
[ -n "${port:-}" ] || { echo "test-wasm.sh: the node did not start:" >&2; cat "$log" >&2; exit 1; }
export SIGNAL_MESH_TEST_NODE="ws://127.0.0.1:$port/signal"
# `--features std`: wasm-bindgen-test links std and its panic handler (see `std` in Cargo.toml).
cargo test -p signal-mesh --lib --target wasm32-unknown-unknown --features std "$@"
