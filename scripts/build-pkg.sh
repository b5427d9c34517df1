#!/usr/bin/env bash
# Builds the npm package into pkg/ at the repository root:
#   1.+2. `wasm-pack build --target web --profile wasm-release` (cargo with opt-level z, LTO, panic
#      abort, then wasm-bindgen --target web with the CLI pinned to the version in Cargo.lock;
#      wasm-pack's own wasm-opt download is off, see [package.metadata.wasm-pack] in Cargo.toml),
#   3. wasm-opt -Oz --converge from the npm `binaryen` package when it can be installed (Debian's binaryen
#      emits modules Chromium rejects, so it is never used), and terser for the JavaScript,
#   4. short import names in the module and its glue (see below),
#   5. pkg-template/ (package.json, README.md) + js/ (the facade) + the wasm-bindgen output.
# SIGNAL_MESH_NO_WASM_OPT=1 / SIGNAL_MESH_NO_MINIFY=1 skip the optimizers (the package works
# without them, only larger).
# Idempotent; prints the sizes, raw and gzipped, at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
ensure_wasm_target
ensure_wasm_bindgen
ensure_wasm_pack

out=pkg
work=target/pkg-build
rm -rf "$work"
mkdir -p "$work"

echo "build-pkg: wasm-pack build (cargo, wasm-release profile; wasm-bindgen --target web)"
# --mode no-install: use the pinned wasm-bindgen CLI, download nothing. `-p signal-mesh`: the
# repository root is also the workspace root, whose other members do not build for wasm32.
wasm-pack --quiet build . --mode no-install --target web --profile wasm-release --no-opt --no-pack \
  --out-dir "$work" --out-name signal_mesh -- -p signal-mesh
rm -f "$work/.gitignore"

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
    echo "build-pkg: wasm-opt -Oz (measured: merge-similar-functions first and --converge each save ~0.3 KB gzipped, functions ordered by name 0.2 KB)"
    "$tools/node_modules/.bin/wasm-opt" --merge-similar-functions --low-memory-unused -Oz --converge \
      --reorder-functions-by-name --strip-producers --strip-target-features --enable-bulk-memory --enable-nontrapping-float-to-int \
      --enable-sign-ext --enable-mutable-globals --enable-reference-types --enable-multivalue \
      "$work/signal_mesh_bg.wasm" -o "$work/signal_mesh_bg.opt.wasm"
    mv "$work/signal_mesh_bg.opt.wasm" "$work/signal_mesh_bg.wasm"
  fi
fi

# The glue and the module name each import twice, as `__wbg_<name>_<16 hex hash>`: the hashes do
# not compress (about 3.8 KB gzipped over both files). Rename them to short names in both.
if [ "${SIGNAL_MESH_NO_MINIFY:-}" != 1 ]; then
  echo "build-pkg: shortening import names"
  node --input-type=module - "$work/signal_mesh_bg.wasm" "$work/signal_mesh.js" <<'MINIFY'
// Renames the wasm-bindgen imports (`__wbg_<name>_<hash>`) of the module and of its JS glue to
// short names: the hashes do not compress, and each name is spelled in both files.
import { readFileSync, writeFileSync } from 'node:fs';
const [wasmPath, jsPath] = process.argv.slice(-2);
const wasm = readFileSync(wasmPath);
let js = readFileSync(jsPath, 'utf8');
const MODULE = './signal_mesh_bg.js';
function uleb(buf, pos) {
  let n = 0, shift = 0, b;
  do { b = buf[pos++]; n += (b & 0x7f) * 2 ** shift; shift += 7; } while (b & 0x80);
  return [n, pos];
}
function enc(n) {
  const out = [];
  do { let b = n & 0x7f; n = Math.floor(n / 128); if (n) b |= 0x80; out.push(b); } while (n);
  return Buffer.from(out);
}
const str = (s) => { const b = Buffer.from(s, 'utf8'); return Buffer.concat([enc(b.length), b]); };
function shortName(i) {
  const a = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ';
  let s = '';
  do { s = a[i % 52] + s; i = Math.floor(i / 52) - 1; } while (i >= 0);
  return s;
}
if (wasm.readUInt32LE(0) !== 0x6d736100) throw new Error('not a wasm module');
const parts = [wasm.subarray(0, 8)];
const exportNames = new Set();
const renames = [];
let pos = 8;
const sections = [];
while (pos < wasm.length) {
  const id = wasm[pos];
  const [size, start] = uleb(wasm, pos + 1);
  sections.push({ id, start, end: start + size, raw: wasm.subarray(pos, start + size) });
  pos = start + size;
}
for (const s of sections.filter((s) => s.id === 7)) {
  let p = s.start;
  let count; [count, p] = uleb(wasm, p);
  for (let i = 0; i < count; i++) {
    let len; [len, p] = uleb(wasm, p);
    exportNames.add(wasm.toString('utf8', p, p + len)); p += len;
    p += 1; [, p] = uleb(wasm, p);
  }
}
for (const s of sections) {
  if (s.id !== 2) { parts.push(s.raw); continue; }
  let p = s.start;
  let count; [count, p] = uleb(wasm, p);
  const body = [enc(count)];
  for (let i = 0; i < count; i++) {
    let len; [len, p] = uleb(wasm, p);
    const mod = wasm.toString('utf8', p, p + len); p += len;
    [len, p] = uleb(wasm, p);
    const field = wasm.toString('utf8', p, p + len); p += len;
    const descStart = p;
    const kind = wasm[p++];
    if (kind === 0) [, p] = uleb(wasm, p);
    else if (kind === 1) { p++; const f = wasm[p++]; [, p] = uleb(wasm, p); if (f & 1) [, p] = uleb(wasm, p); }
    else if (kind === 2) { const f = wasm[p++]; [, p] = uleb(wasm, p); if (f & 1) [, p] = uleb(wasm, p); }
    else if (kind === 3) p += 2;
    else throw new Error(`unknown import kind ${kind}`);
    let name = field;
    if (mod === MODULE) {
      if (exportNames.has(field)) throw new Error(`import ${field} is also an export`);
      name = shortName(renames.length);
      renames.push([field, name]);
    }
    body.push(str(mod === MODULE ? 'a' : mod), str(name), wasm.subarray(descStart, p));
  }
  const content = Buffer.concat(body);
  parts.push(Buffer.from([2]), enc(content.length), content);
}
for (const [from, to] of renames) {
  const re = new RegExp(`\\b${from}\\b`, 'g');
  const n = (js.match(re) || []).length;
  if (n !== 1) throw new Error(`${from} occurs ${n} times in the glue`);
  js = js.replace(re, to);
}
const modKey = `"${MODULE}": import0`;
if (js.split(modKey).length !== 2) throw new Error('module key not found once in the glue');
js = js.replace(modKey, '"a": import0');
writeFileSync(wasmPath, Buffer.concat(parts));
writeFileSync(jsPath, js);
console.log(`minify-imports: ${renames.length} imports renamed`);
MINIFY
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

# The size budget, gzip -9 of wasm + JS as printed above: the build fails when the package grows
# past it (CI runs this script). Measured figures and the steps behind them are in BENCHMARKS.md;
# raise the budget only with a measured reason there. Not applied when an optimizer was skipped.
budget_gz=${SIGNAL_MESH_PKG_BUDGET_GZ:-39000}
if [ "${SIGNAL_MESH_NO_WASM_OPT:-}" != 1 ] && [ "${SIGNAL_MESH_NO_MINIFY:-}" != 1 ] &&
  [ -x "$tools/node_modules/.bin/wasm-opt" ] && [ -x "$tools/node_modules/.bin/terser" ]; then
  if [ "$total_gz" -gt "$budget_gz" ]; then
    echo "build-pkg: the package is $total_gz B gzipped, over its budget of $budget_gz B" >&2
    exit 1
  fi
  echo "  budget: $total_gz of $budget_gz B gzipped"
fi
