// Sizes of the JavaScript WebRTC clients Signal Mesh is compared with, measured the same way as
// our package: each bundled by esbuild (ESM, minified, browser) from its public entry, then
// gzip -9. Also bundles the built signal-mesh package (its JS; the .wasm is added as is) so the
// comparison is like for like. Run: `npm ci && node anchors.mjs [pkg dir]`.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const here = path.dirname(fileURLToPath(import.meta.url));
const pkgDir = path.resolve(process.argv[2] ?? path.join(here, '..', '..', 'pkg'));
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'size-anchors-'));

// gzip -9 exactly as scripts/build-pkg.sh measures.
const gz = (file) => Number(execFileSync('sh', ['-c', `gzip -9 -c "${file}" | wc -c`]).toString().trim());
const version = (name) => JSON.parse(fs.readFileSync(path.join(here, 'node_modules', name, 'package.json'), 'utf8')).version;

const anchors = [
  ['peerjs', "export { Peer } from 'peerjs';"],
  ['trystero', "export { joinRoom } from 'trystero';"],
  ['simple-peer', "export { default } from 'simple-peer';"],
];

const rows = [];
for (const [name, source] of anchors) {
  const entry = path.join(tmp, `${name}.mjs`);
  const out = path.join(tmp, `${name}.bundle.js`);
  fs.writeFileSync(entry, source);
  await build({
    entryPoints: [entry],
    bundle: true,
    minify: true,
    format: 'esm',
    platform: 'browser',
    outfile: out,
    absWorkingDir: here,
    nodePaths: [path.join(here, 'node_modules')],
    logLevel: 'error',
    define: { global: 'globalThis', 'process.env.NODE_DEBUG': 'false' },
  });
  rows.push({ name: `${name} ${version(name)}`, raw: fs.statSync(out).size, gzip: gz(out) });
}

// Our package: the facade and its glue bundled the same way, plus the .wasm.
const ours = path.join(tmp, 'signal-mesh.bundle.js');
await build({
  entryPoints: [path.join(pkgDir, 'index.js')],
  bundle: true,
  minify: true,
  format: 'esm',
  platform: 'browser',
  outfile: ours,
  logLevel: 'error',
  loader: { '.wasm': 'file' },
});
const wasm = path.join(pkgDir, 'signal_mesh_bg.wasm');
rows.push({
  name: 'signal-mesh (js bundle + .wasm)',
  raw: fs.statSync(ours).size + fs.statSync(wasm).size,
  gzip: gz(ours) + gz(wasm),
});

console.log(`${'client'.padEnd(34)} ${'raw'.padStart(9)} ${'gzip -9'.padStart(9)}`);
for (const r of rows) console.log(`${r.name.padEnd(34)} ${String(r.raw).padStart(9)} ${String(r.gzip).padStart(9)}`);
fs.rmSync(tmp, { recursive: true, force: true });
