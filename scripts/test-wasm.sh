#!/usr/bin/env bash
# The wasm-bindgen tests of the browser shell (src/shell/tests.rs) in headless Debian Chromium,
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
cargo test -p signal-mesh --lib --target wasm32-unknown-unknown "$@"
