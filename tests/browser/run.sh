#!/usr/bin/env bash
# End-to-end tests of the signal-mesh npm package in headless Debian Chromium against real
# signal-mesh-node processes on 127.0.0.1. Works on a fresh Debian 12 machine with Node.js 20 and
# npm: installs Chromium if missing and the pinned npm devDependencies (npm ci).
#
# The caller builds what is tested (scripts/test.sh does):
#   cargo build -p signal-mesh-node      -> target/debug/signal-mesh-node (or SIGNAL_MESH_NODE_BIN)
#   scripts/build-pkg.sh                 -> pkg/                          (or SIGNAL_MESH_PKG_DIR)
#
#   tests/browser/run.sh                      # every test file
#   tests/browser/run.sh tests/basic.test.mjs # some of them
set -euo pipefail
cd "$(dirname "$0")"
repo=$(cd ../.. && pwd)
node_bin=${SIGNAL_MESH_NODE_BIN:-$repo/target/debug/signal-mesh-node}
pkg_dir=${SIGNAL_MESH_PKG_DIR:-$repo/pkg}

fail() { echo "tests/browser/run.sh: $*" >&2; exit 1; }
[ -x "$node_bin" ] || fail "node binary $node_bin is missing: run 'cargo build -p signal-mesh-node' first (or set SIGNAL_MESH_NODE_BIN)"
[ -f "$pkg_dir/package.json" ] || fail "npm package $pkg_dir is missing: run 'scripts/build-pkg.sh' first (or set SIGNAL_MESH_PKG_DIR)"
command -v node >/dev/null || fail "node (Node.js >= 20.10) is required"
command -v npm >/dev/null || fail "npm is required"

if [ ! -x /usr/bin/chromium ]; then
  echo "tests/browser/run.sh: installing Debian chromium"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y chromium
fi

npm ci --no-audit --no-fund --loglevel=error

export SIGNAL_MESH_NODE_BIN=$node_bin SIGNAL_MESH_PKG_DIR=$pkg_dir
if [ "$#" -eq 0 ]; then
  set -- tests/*.test.mjs
fi
exec node --test --test-concurrency=1 --test-reporter=spec "$@"
