// The examples/ apps, installed and run as an app author would: each is copied, gets the built
// package with `npm install --install-links <pkg>` (plus its own dependencies), is served by a real
// node and does its job between two pages in headless Chromium (fake camera and microphone).

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { promisify } from 'node:util';
import {
  FAKE_MEDIA_ARGS,
  PKG_DIR,
  REPO,
  Suite,
  TMP,
  checkPrerequisites,
  launchBrowserWith,
  sleep,
  uniqueTopic,
  useSuite,
} from '../lib/harness.mjs';

const run = promisify(execFile);
const EXAMPLES = path.join(REPO, 'examples');

class ExamplesSuite extends Suite {
  async setup() {
    checkPrerequisites();
    this.browser = await launchBrowserWith(FAKE_MEDIA_ARGS);
    return this;
  }
}

const dirs = {};
const { suite } = useSuite(new ExamplesSuite('examples'), {
  node: false,
  prepare: async () => {
    for (const name of ['file-transfer', 'video-call', 'vite-react']) dirs[name] = await install(name);
  },
  timeout: 600_000,
});

/** Copies `examples/<name>` (without node_modules or dist) and installs the package into it. */
async function install(name) {
  const dir = path.join(TMP, `example-${name}-${process.pid}`);
  fs.rmSync(dir, { recursive: true, force: true });
  fs.cpSync(path.join(EXAMPLES, name), dir, {
    recursive: true,
    filter: (src) => !/[\\/](node_modules|dist)([\\/]|$)/.test(src),
  });
  await run('npm', ['install', '--install-links', '--no-audit', '--no-fund', '--loglevel=error', PKG_DIR], {
    cwd: dir,
    timeout: 300_000,
  });
  const installed = path.join(dir, 'node_modules', 'signal-mesh');
  assert.ok(fs.existsSync(path.join(installed, 'index.js')), `${name}: signal-mesh installed`);
  assert.ok(!fs.lstatSync(installed).isSymbolicLink(), `${name}: the package is copied, not linked`);
  return dir;
}

async function openExample(node, room) {
  const p = await suite.page(node, `/?room=${encodeURIComponent(room)}`, { waitReady: false });
  await p.page.waitForFunction(() => window.EXAMPLE && (window.EXAMPLE.ready || window.EXAMPLE.error), null, { timeout: 20_000 });
  const err = await p.page.evaluate(() => window.EXAMPLE.error);
  assert.equal(err, null, `${p.label}: the example failed to start`);
  return p;
}

describe('examples', { timeout: 600_000 }, () => {
  test('file-transfer: a 20 MB file arrives with the sender\'s SHA-256', { timeout: 180_000 }, suite.wrap(async (t) => {
    const node = await suite.node({ staticDir: dirs['file-transfer'], name: 'ft-node' });
    const room = uniqueTopic('ft');
    const a = await openExample(node, room);
    const b = await openExample(node, room);
    for (const p of [a, b]) await p.page.waitForFunction(() => window.EXAMPLE.peers === 1, null, { timeout: 20_000 });

    const file = path.join(TMP, `ft-${process.pid}.bin`);
    const bytes = crypto.randomBytes(20 * 1024 * 1024);
    fs.writeFileSync(file, bytes);
    const sha256 = crypto.createHash('sha256').update(bytes).digest('hex');
    await a.page.setInputFiles('#file', file);
    await b.page.waitForFunction(() => window.EXAMPLE.received, null, { timeout: 120_000 });
    const received = await b.page.evaluate(() => window.EXAMPLE.received);
    assert.deepEqual(received, { name: path.basename(file), size: bytes.length, sha256, verified: true });
    await a.page.waitForFunction(() => window.EXAMPLE.sent, null, { timeout: 20_000 });
    const sent = await a.page.evaluate(() => window.EXAMPLE.sent);
    t.diagnostic(`20 MB sent in ${Math.round(sent.ms)} ms`);
    assert.equal(await b.page.textContent('#recv-result'), 'verified (SHA-256 matches) download');
    assert.equal(await b.page.evaluate(() => document.getElementById('recv-progress').value), 1);
    fs.rmSync(file, { force: true });
  }));

  test('video-call: both sides see the other\'s video, mute works, hang-up ends the call on both', { timeout: 120_000 }, suite.wrap(async () => {
    const node = await suite.node({ staticDir: dirs['video-call'], name: 'vc-node' });
    const room = uniqueTopic('vc');
    const a = await openExample(node, room);
    const b = await openExample(node, room);
    for (const p of [a, b]) {
      await p.page.waitForFunction(() => window.EXAMPLE.inCall && window.EXAMPLE.remoteTracks === 2, null, { timeout: 30_000 });
    }
    // The remote video plays: it has a size and its time advances.
    for (const p of [a, b]) {
      await p.page.waitForFunction(() => document.getElementById('remote').videoWidth > 0, null, { timeout: 20_000 });
      const t0 = await p.page.evaluate(() => document.getElementById('remote').currentTime);
      await sleep(700);
      const t1 = await p.page.evaluate(() => document.getElementById('remote').currentTime);
      assert.ok(t1 > t0, `${p.label}: remote video time did not advance (${t0} -> ${t1})`);
    }
    await a.page.click('#mute');
    assert.equal(await a.page.evaluate(() => window.EXAMPLE.muted), true);
    assert.equal(await a.page.evaluate(() => document.getElementById('local').srcObject.getAudioTracks()[0].enabled), false);
    assert.equal(await a.page.textContent('#mute'), 'Unmute');
    await a.page.click('#hangup');
    for (const p of [a, b]) {
      await p.page.waitForFunction(() => window.EXAMPLE.ended && !window.EXAMPLE.inCall, null, { timeout: 20_000 });
      assert.equal(await p.page.textContent('#status'), 'call ended');
    }
  }));

  test('vite-react: tsc --noEmit passes, vite builds, two pages chat in a room', { timeout: 180_000 }, suite.wrap(async () => {
    const dir = dirs['vite-react'];
    const tsc = await run(process.execPath, [path.join(dir, 'node_modules', 'typescript', 'bin', 'tsc'), '--noEmit', '-p', dir], {
      cwd: dir,
      timeout: 120_000,
    }).catch((e) => e);
    assert.equal(tsc.code ?? 0, 0, `tsc failed:\n${tsc.stdout}${tsc.stderr}`);
    await run(process.execPath, [path.join(dir, 'node_modules', 'vite', 'bin', 'vite.js'), 'build', '--logLevel', 'warn'], {
      cwd: dir,
      timeout: 120_000,
    });
    const node = await suite.node({ staticDir: path.join(dir, 'dist'), name: 'react-node' });
    const room = uniqueTopic('react');
    const open = async () => {
      const p = await suite.page(node, `/?room=${encodeURIComponent(room)}`, { waitReady: false });
      await p.page.waitForFunction(() => document.querySelector('[data-testid=status]')?.textContent.startsWith('online'), null, { timeout: 20_000 });
      return p;
    };
    const a = await open();
    const b = await open();
    for (const p of [a, b]) {
      await p.page.waitForFunction(() => document.querySelectorAll('[data-testid=peers] li').length === 1, null, { timeout: 20_000 });
    }
    await a.page.fill('[data-testid=draft]', 'hello from react');
    await a.page.click('button[type=submit]');
    await b.page.waitForFunction(
      () => [...document.querySelectorAll('[data-testid=messages] li')].some((li) => li.textContent.endsWith('hello from react')),
      null,
      { timeout: 20_000 },
    );
  }));
});
