// Checks a running demo (scripts/start.sh) by hand-free: two headless Chromium tabs join a room,
// exchange a chat message, and screenshots go to tests/browser/.tmp/screenshots/.
//
//   node tests/browser/demo-check.mjs [http://127.0.0.1:4000/]
import fs from 'node:fs';
import path from 'node:path';
import { TMP, launchBrowser } from './lib/harness.mjs';

const base = process.argv[2] ?? 'http://127.0.0.1:4000/';
const room = `check-${Date.now().toString(36)}`;
const dir = path.join(TMP, 'screenshots');
fs.mkdirSync(dir, { recursive: true });
const browser = await launchBrowser();
try {
  const tabs = [];
  for (const nick of ['alice', 'bob']) {
    const context = await browser.newContext({ viewport: { width: 1000, height: 640 } });
    const page = await context.newPage();
    page.on('pageerror', (e) => console.error(`${nick}: page error: ${e.message}`));
    await page.goto(`${base}#${room}`, { timeout: 10_000 });
    await page.waitForFunction(() => window.demo && window.demo.client.state === 'online', null, { timeout: 10_000 });
    await page.fill('#nick', nick);
    await page.dispatchEvent('#nick', 'change');
    tabs.push(page);
  }
  const [alice, bob] = tabs;
  for (const page of tabs) await page.waitForSelector('#peer-list li[data-status="connected"]', { timeout: 15_000 });
  await alice.fill('#text', 'Hello Bob, this went over a direct data channel.');
  await alice.press('#text', 'Enter');
  await bob.waitForSelector('.log .theirs .bubble >> text=Hello Bob', { timeout: 10_000 });
  await bob.fill('#text', 'Hi Alice! Received loud and clear.');
  await bob.click('#send');
  await alice.waitForSelector('.log .theirs .bubble >> text=Hi Alice', { timeout: 10_000 });
  await alice.screenshot({ path: path.join(dir, 'check-alice.png') });
  await bob.screenshot({ path: path.join(dir, 'check-bob.png') });
  console.log(`demo OK at ${base} (room ${room}); screenshots: ${dir}/check-{alice,bob}.png`);
} finally {
  await browser.close();
}
