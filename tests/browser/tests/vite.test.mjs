// The package as an app author gets it: `npm install <repo>/pkg` into a fresh app, a Vite build with
// `import { SignalClient } from 'signal-mesh'`, and two such pages connecting in Chromium.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { BROWSER_DIR, PKG_DIR, TMP, checkPrerequisites, useSuite } from '../lib/harness.mjs';

const run = promisify(execFile);
let appDir;
let dist;

/** Installs the package into a fresh app and builds it with Vite into `dist`. */
async function buildApp() {
  checkPrerequisites();
  appDir = path.join(TMP, `vite-app-${process.pid}`);
  fs.rmSync(appDir, { recursive: true, force: true });
  fs.mkdirSync(appDir, { recursive: true });
  fs.writeFileSync(
    path.join(appDir, 'package.json'),
    JSON.stringify({ name: 'signal-mesh-vite-app', private: true, version: '0.0.0', type: 'module' }, null, 2),
  );
  for (const f of ['index.html', 'main.js']) {
    fs.copyFileSync(path.join(BROWSER_DIR, 'fixtures-vite', f), path.join(appDir, f));
  }
  // --install-links copies the package as `npm publish` would pack it (its `files`), not a symlink.
  await run('npm', ['install', '--install-links', '--no-audit', '--no-fund', '--loglevel=error', PKG_DIR], {
    cwd: appDir,
    timeout: 120_000,
  });
  const installed = path.join(appDir, 'node_modules', 'signal-mesh', 'package.json');
  assert.ok(fs.existsSync(installed), 'signal-mesh is in node_modules');
  assert.ok(!fs.lstatSync(path.join(appDir, 'node_modules', 'signal-mesh')).isSymbolicLink());

  const { build } = await import('vite');
  dist = path.join(appDir, 'dist');
  await build({ root: appDir, configFile: false, logLevel: 'warn', build: { outDir: dist, emptyOutDir: true } });
  assert.ok(fs.existsSync(path.join(dist, 'index.html')), 'vite wrote dist/index.html');
}

const { suite } = useSuite('vite', { node: false, prepare: buildApp, closePages: false, timeout: 180_000 });

test('a Vite-built app importing signal-mesh connects two pages', { timeout: 60_000 }, suite.wrap(async (t) => {
  const assets = fs.readdirSync(path.join(dist, 'assets'));
  t.diagnostic(`vite assets: ${assets.join(', ')}`);
  const node = await suite.node({ staticDir: dist, name: 'vite-node' });

  const open = async () => {
    const p = await suite.page(node, '/', { waitReady: false });
    await p.page.waitForFunction(() => window.APP && window.APP.ready, null, { timeout: 10_000 });
    return p;
  };
  const a = await open();
  const b = await open();
  const ia = await a.page.evaluate((s) => window.APP.start(s), [node.wsUrl]);
  const ib = await b.page.evaluate((s) => window.APP.start(s), [node.wsUrl]);
  assert.equal(ia.state, 'online');
  assert.equal(ib.state, 'online');
  assert.equal(await a.page.evaluate((id) => window.APP.connect(id), ib.peerId), 'open');
  await b.page.waitForFunction(() => window.APP.channel && window.APP.channel.readyState === 'open', null, { timeout: 10_000 });
  await a.page.evaluate(() => window.APP.send('hello from vite A'));
  await b.page.evaluate(() => window.APP.send('hello from vite B'));
  await b.page.waitForFunction(() => window.APP.received.includes('hello from vite A'), null, { timeout: 10_000 });
  await a.page.waitForFunction(() => window.APP.received.includes('hello from vite B'), null, { timeout: 10_000 });
}));
