#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: installs what it needs, then checks
# formatting and lints (native and wasm32), runs the Rust tests (unit and integration, real sockets),
# the wasm-bindgen tests in headless Chromium, builds the npm package and runs the end-to-end
# browser tests against real nodes. Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

step() { printf '\n==> %s\n' "$*"; }

step "setup"
ensure_wasm_target
ensure_wasm_bindgen
ensure_chromium

step "cargo fmt --check"
cargo fmt --all --check

step "clippy (native)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "clippy (wasm32)"
# The client library as it ships (no_std: no dev-dependencies, the proto crate without `std`;
# built alone, so that no other package's features are unified into it), then with the tests.
cargo clippy -p signal-mesh --target wasm32-unknown-unknown --lib --locked -- -D warnings
cargo clippy -p signal-mesh -p signal-mesh-proto --target wasm32-unknown-unknown --all-targets --features signal-mesh/std --locked -- -D warnings

step "rust tests"
cargo test --workspace --locked

step "wasm tests in headless chromium"
scripts/test-wasm.sh

step "npm package"
scripts/build-pkg.sh

step "browser end-to-end tests"
cargo build -p signal-mesh-node --locked
tests/browser/run.sh

echo
echo "all tests passed"
