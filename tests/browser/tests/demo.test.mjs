// The demo chat in www/, served as scripts/start.sh serves it (www/ + pkg/, import map pointed at
// the package entry): two tabs in a room see each other, connect and chat. Screenshots of both
// tabs go to tests/browser/.tmp/screenshots/ for a look.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { REPO, TMP, assembleSite, uniqueTopic, useSuite } from '../lib/harness.mjs';

const env = useSuite('demo', {
  node: () => ({ staticDir: assembleSite('demo-site', path.join(REPO, 'www')) }),
  closePages: false,
});
const { suite } = env;

test('the demo chat: two tabs in a room connect and exchange messages', { timeout: 60_000 }, suite.wrap(async (t) => {
  const room = uniqueTopic('demo');
  const open = async (nick) => {
    const context = await suite.browser.newContext({ viewport: { width: 1000, height: 640 } });
    suite.contexts.push(context);
    const page = await context.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`${env.node.httpUrl}/#${encodeURIComponent(room)}`, { timeout: 10_000 });
    await page.waitForFunction(() => window.demo && window.demo.client.state === 'online', null, { timeout: 10_000 });
    await page.fill('#nick', nick);
    await page.dispatchEvent('#nick', 'change');
    return { page, errors };
  };
  const alice = await open('alice');
  const bob = await open('bob');

  // Each sees the other as connected in the peer list.
  for (const { page } of [alice, bob]) {
    await page.waitForSelector('#peer-list li[data-status="connected"]', { timeout: 15_000 });
  }
  assert.equal(await alice.page.inputValue('#room'), room);
  await bob.page.waitForFunction(() => document.querySelector('#peer-list .name')?.textContent === 'alice', null, { timeout: 10_000 });

  await alice.page.fill('#text', 'Hello Bob, this went over a direct data channel.');
  await alice.page.press('#text', 'Enter');
  await bob.page.waitForSelector('.log .theirs .bubble >> text=Hello Bob', { timeout: 10_000 });
  await bob.page.fill('#text', 'Hi Alice! Received loud and clear.');
  await bob.page.click('#send');
  await alice.page.waitForSelector('.log .theirs .bubble >> text=Hi Alice', { timeout: 10_000 });
  assert.equal(await bob.page.textContent('.log .theirs .who'), 'alice');

  const dir = path.join(TMP, 'screenshots');
  fs.mkdirSync(dir, { recursive: true });
  await alice.page.screenshot({ path: path.join(dir, 'demo-alice.png') });
  await bob.page.screenshot({ path: path.join(dir, 'demo-bob.png') });
  t.diagnostic(`screenshots in ${dir}`);
  assert.deepEqual([...alice.errors, ...bob.errors], [], 'no uncaught page errors');
}));
