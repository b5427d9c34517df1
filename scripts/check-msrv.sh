#!/usr/bin/env bash
# Checks that the workspace builds with its declared minimum Rust (`rust-version` in Cargo.toml):
# installs that toolchain with rustup (minimal profile) and runs `cargo check` on every target
# with the locked dependencies, in a target dir of its own. Not part of scripts/test.sh (a second
# full build of the dependencies); run it when the declared version or the dependencies change.
set -euo pipefail
cd "$(dirname "$0")/.."
msrv=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
[ -n "$msrv" ] || { echo "scripts/check-msrv.sh: no rust-version in Cargo.toml" >&2; exit 1; }
rustup toolchain list | grep -q "^$msrv" || rustup toolchain install "$msrv" --profile minimal
echo "==> cargo +$msrv check --workspace --all-targets --locked"
CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/msrv} cargo "+$msrv" check --workspace --all-targets --locked
echo "builds with Rust $msrv"
