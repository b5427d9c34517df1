#!/usr/bin/env bash
# Builds the npm package into pkg/ at the repository root:
#   1. the wasm client (cargo, profile wasm-release: opt-level z, LTO, panic abort),
#   2. wasm-bindgen --target web (the CLI pinned to the version in Cargo.lock),
#   3. wasm-opt -Oz from the npm `binaryen` package when it can be installed (Debian's binaryen
#      emits modules Chromium rejects, so it is never used), and terser for the JavaScript,
#   4. pkg-template/ (package.json, README.md) + js/ (the facade) + the wasm-bindgen output.
# SIGNAL_MESH_NO_WASM_OPT=1 / SIGNAL_MESH_NO_MINIFY=1 skip the optimizers (the package works
# without them, only larger).
# Idempotent; prints the sizes, raw and gzipped, at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
ensure_wasm_target
ensure_wasm_bindgen

out=pkg
work=target/pkg-build
rm -rf "$work"
mkdir -p "$work"

echo "build-pkg: cargo build (wasm32, wasm-release)"
cargo build -p signal-mesh --lib --target wasm32-unknown-unknown --profile wasm-release
wasm=target/wasm32-unknown-unknown/wasm-release/signal_mesh.wasm

echo "build-pkg: wasm-bindgen --target web"
wasm-bindgen --target web --out-dir "$work" --out-name signal_mesh "$wasm"

# wasm-opt (npm binaryen) and terser, installed once under target/ (skipped when npm cannot
# install them).
binaryen_version=132.0.0
terser_version=5.51.2
tools=target/npm-tools
if [ ! -x "$tools/node_modules/.bin/wasm-opt" ] || [ ! -x "$tools/node_modules/.bin/terser" ]; then
  echo "build-pkg: installing binaryen@$binaryen_version and terser@$terser_version from npm"
  npm install --prefix "$tools" --no-save --no-audit --no-fund \
    "binaryen@$binaryen_version" "terser@$terser_version" >/dev/null 2>&1 ||
    echo "build-pkg: could not install the npm tools; the package will not be optimized"
fi
if [ "${SIGNAL_MESH_NO_WASM_OPT:-}" != 1 ]; then
  if [ -x "$tools/node_modules/.bin/wasm-opt" ]; then
    echo "build-pkg: wasm-opt -Oz"
    "$tools/node_modules/.bin/wasm-opt" -Oz --enable-bulk-memory --enable-nontrapping-float-to-int \
      --enable-sign-ext --enable-mutable-globals --enable-reference-types --enable-multivalue \
      "$work/signal_mesh_bg.wasm" -o "$work/signal_mesh_bg.opt.wasm"
    mv "$work/signal_mesh_bg.opt.wasm" "$work/signal_mesh_bg.wasm"
  fi
fi

echo "build-pkg: assembling $out/"
rm -rf "$out"
mkdir -p "$out"
cp pkg-template/package.json pkg-template/README.md "$out/"
cp js/index.d.ts "$out/"
cp "$work"/signal_mesh.d.ts "$work"/signal_mesh_bg.wasm "$work"/signal_mesh_bg.wasm.d.ts "$out/"
for f in js/index.js "$work/signal_mesh.js"; do
  if [ "${SIGNAL_MESH_NO_MINIFY:-}" != 1 ] && [ -x "$tools/node_modules/.bin/terser" ]; then
    "$tools/node_modules/.bin/terser" "$f" --module --compress --mangle --keep-classnames \
      --comments '/^!|Signal Mesh/' -o "$out/$(basename "$f")"
  else
    cp "$f" "$out/"
  fi
done
if [ -d "$work/snippets" ]; then
  echo "build-pkg: unexpected wasm-bindgen snippets; the package lists no snippets/" >&2
  exit 1
fi

size() { stat -c %s "$1"; }
gz() { gzip -9 -c "$1" | wc -c; }
echo
echo "package: $out/ ($(node -p "require('./$out/package.json').name + '@' + require('./$out/package.json').version"))"
printf '  %-28s %10s %10s\n' file raw gzip
total_raw=0
total_gz=0
for f in signal_mesh_bg.wasm signal_mesh.js index.js; do
  r=$(size "$out/$f")
  g=$(gz "$out/$f")
  total_raw=$((total_raw + r))
  total_gz=$((total_gz + g))
  printf '  %-28s %10d %10d\n' "$f" "$r" "$g"
done
printf '  %-28s %10d %10d\n' "total (wasm + js)" "$total_raw" "$total_gz"
