// The package's TypeScript declarations: `tsc --noEmit --strict` on types/usage.ts against the
// built package (its index.d.ts and the wasm-bindgen signal_mesh.d.ts). The file uses the whole
// API and holds `@ts-expect-error` lines, so the check fails both when a correct use stops
// type-checking and when a wrong use starts to. (That the code list equals the proto's
// `ErrorCode` plus the client's codes is a Rust test: src/core/error.rs.)

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { BROWSER_DIR, PKG_DIR, TMP } from '../lib/harness.mjs';

const TSC = path.join(BROWSER_DIR, 'node_modules', 'typescript', 'bin', 'tsc');

/** Runs tsc on `files` with `signal-mesh` resolved to the built package; returns its output. */
export function typeCheck(name, files) {
  assert.ok(fs.existsSync(TSC), `${TSC} missing: run npm ci in tests/browser`);
  assert.ok(fs.existsSync(path.join(PKG_DIR, 'index.d.ts')), `${PKG_DIR}/index.d.ts missing`);
  const dir = path.join(TMP, `types-${name}-${process.pid}`);
  fs.mkdirSync(dir, { recursive: true });
  const config = {
    compilerOptions: {
      strict: true,
      noEmit: true,
      target: 'ES2022',
      module: 'ESNext',
      moduleResolution: 'Bundler',
      lib: ['ES2022', 'DOM', 'ESNext.Disposable'],
      types: [],
      noUnusedLocals: true,
      paths: { 'signal-mesh': [path.join(PKG_DIR, 'index.d.ts')] },
    },
    files,
  };
  const configPath = path.join(dir, 'tsconfig.json');
  fs.writeFileSync(configPath, JSON.stringify(config, null, 2));
  const r = spawnSync(process.execPath, [TSC, '-p', configPath], { encoding: 'utf8', timeout: 120_000 });
  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}

test('the package declarations type-check a whole app and reject wrong uses', { timeout: 180_000 }, () => {
  const r = typeCheck('usage', [path.join(BROWSER_DIR, 'types', 'usage.ts')]);
  assert.equal(r.status, 0, `tsc failed:\n${r.output}`);
});

test('the type check can fail: a wrong use without @ts-expect-error is reported', { timeout: 180_000 }, () => {
  const dir = path.join(TMP, `types-neg-${process.pid}`);
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, 'wrong.ts');
  fs.writeFileSync(file, "import { SignalClient } from 'signal-mesh';\nexport const c = SignalClient.create({ servers: 'ws://x' });\n");
  const r = typeCheck('neg', [file]);
  assert.notEqual(r.status, 0, 'tsc accepted servers: string');
  assert.match(r.output, /wrong\.ts\(2,\d+\): error TS2322/);
});
