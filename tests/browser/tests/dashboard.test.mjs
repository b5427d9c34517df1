// The management dashboard of a real 3-process mesh in headless Chromium: served by a node
// without --static-dir at `/`, it shows the three nodes and their links (asserted on the DOM),
// writes docs/dashboard.png, and shows a crashed node leave.
//
// Needs only the node binary and Chromium (not the npm package).

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import {
  CHROMIUM,
  NODE_BIN,
  NodeProcess,
  REPO,
  TMP,
  WAIT_MS,
  freePort,
  launchBrowser,
} from '../lib/harness.mjs';

const SCREENSHOT = path.join(REPO, 'docs', 'dashboard.png');

let browser;
const nodes = [];
let ids = [];

async function status(node) {
  const res = await fetch(`${node.httpUrl}/status`, { signal: AbortSignal.timeout(2000) });
  assert.equal(res.status, 200);
  return res.json();
}

/** Polls until `check()` returns a truthy value, bounded. */
async function until(what, check, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    try {
      const v = await check();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${last.message}` : ''}`);
}

before(async () => {
  for (const [what, file] of [['node binary', NODE_BIN], ['chromium', CHROMIUM]]) {
    assert.ok(fs.existsSync(file), `${what} missing at ${file}`);
  }
  fs.mkdirSync(TMP, { recursive: true });
  const keyFile = path.join(TMP, `dashboard-${process.pid}.key`);
  fs.rmSync(keyFile, { force: true });
  // "node id 12D3KooW...": the id is the last word.
  const line = execFileSync(NODE_BIN, ['id', '--key-file', keyFile], { encoding: 'utf8' }).trim();
  const firstId = line.split(/\s+/).pop();
  assert.match(firstId, /^12D3KooW/, line);
  const p2pPort = await freePort();
  const network = `dashboard-${process.pid}`;
  const common = ['--network', network, '--heartbeat-ms', '500', '--presence-ttl-ms', '3000'];
  nodes.push(new NodeProcess({
    staticDir: null,
    name: 'dashboard-n1',
    args: [...common, '--key-file', keyFile, '--p2p-listen', `/ip4/127.0.0.1/tcp/${p2pPort}`,
      '--public-url', 'ws://127.0.0.1/n1'],
  }));
  for (const n of [2, 3]) {
    nodes.push(new NodeProcess({
      staticDir: null,
      name: `dashboard-n${n}`,
      args: [...common, '--bootstrap', `/ip4/127.0.0.1/tcp/${p2pPort}/p2p/${firstId}`],
    }));
  }
  for (const n of nodes) await n.start();
  // Every node sees all three before the page is opened.
  for (const n of nodes) {
    await until(`${n.name} to list 3 nodes`, async () => (await status(n)).nodes.length === 3);
  }
  ids = (await status(nodes[0])).nodes.map((n) => n.id).sort();
  assert.ok(ids.includes(firstId), `${firstId} (from the key file) is listed`);
  browser = await launchBrowser();
}, { timeout: 60_000 });

after(async () => {
  if (browser) await browser.close().catch(() => {});
  await Promise.allSettled(nodes.map((n) => n.stop()));
});

test('the dashboard shows the three nodes of the mesh and their links, live', { timeout: 60_000 }, async () => {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  const res = await page.goto(`${nodes[0].httpUrl}/`, { timeout: WAIT_MS });
  assert.equal(res.status(), 200);
  assert.equal(await page.title(), 'Signal Mesh · mesh status');

  // Three nodes in the graph and in the table, three links, this node marked.
  await page.waitForFunction(
    () => document.querySelectorAll('#graph g.node').length === 3 &&
      document.querySelectorAll('#graph line').length === 3 &&
      document.querySelectorAll('#nodes tbody tr').length === 3,
    null,
    { timeout: WAIT_MS },
  );
  const shown = await page.$$eval('#nodes tbody tr', (rows) => rows.map((r) => r.dataset.nodeId).sort());
  assert.deepEqual(shown, ids);
  const graphIds = await page.$$eval('#graph g.node', (gs) => gs.map((g) => g.dataset.nodeId).sort());
  assert.deepEqual(graphIds, ids);
  assert.equal(await page.$$eval('#graph g.node.local', (gs) => gs.length), 1);
  assert.equal(await page.textContent('#state'), 'ready');
  assert.match(await page.textContent('#summary'), /^3 nodes · 3 links/);
  assert.equal(await page.textContent('#nodes tbody tr.local td:last-child'), 'ws://127.0.0.1/n1');

  fs.mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
  await page.screenshot({ path: SCREENSHOT, fullPage: true });
  assert.ok(fs.statSync(SCREENSHOT).size > 10_000, 'a real screenshot was written');

  // Live: a crashed node goes from the page without a reload.
  const dead = nodes[2];
  const deadId = (await status(dead)).node;
  await dead.stop({ signal: 'SIGKILL' });
  await page.waitForFunction(
    (id) => !document.querySelector(`#nodes tbody tr[data-node-id="${id}"]`) &&
      document.querySelectorAll('#nodes tbody tr').length === 2,
    deadId,
    { timeout: 15_000 },
  );
  assert.equal(await page.$$eval('#graph line', (ls) => ls.length), 1);
  assert.deepEqual(errors, [], 'no page errors');
  await context.close();
});
