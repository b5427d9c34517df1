// Six pages form a full mesh of data channels: 15 connections, each verified with a message each way.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { exchange, onlineClient, uniqueTopic, useSuite, waitLookup } from '../lib/harness.mjs';

const env = useSuite('mesh', { closePages: false });
const { suite } = env;

test('(2) six pages form a full mesh of data channels (15 connections)', { timeout: 150_000 }, suite.wrap(async (t) => {
  const N = 6;
  const pages = [];
  for (let i = 0; i < N; i++) pages.push(await onlineClient(suite, env.node, { connectTimeoutMs: 30_000 }));
  const topic = uniqueTopic('mesh');
  for (const p of pages) await p.call('join', topic);
  for (const p of pages) {
    const others = pages.filter((q) => q !== p).map((q) => q.peerId);
    const seen = await waitLookup(p, topic, others, { timeout: 15_000 });
    assert.ok(others.every((id) => seen.includes(id)));
  }

  // lookup's limit bounds the answer.
  const limited = await pages[0].call('lookup', topic, { limit: 2 });
  assert.equal(limited.peers.length, 2, `lookup limit 2 gave ${JSON.stringify(limited.peers)}`);

  // Every page connects to every page after it in the list, all at once.
  const pairs = [];
  for (let i = 0; i < N; i++) for (let j = i + 1; j < N; j++) pairs.push([i, j]);
  assert.equal(pairs.length, 15);
  const results = await Promise.all(pairs.map(([i, j]) => pages[i].try('connect', pages[j].peerId)));
  const failed = results
    .map((r, k) => (r.ok ? null : `${pairs[k]}: ${r.error.code} ${r.error.message}`))
    .filter(Boolean);
  assert.deepEqual(failed, [], 'every connect() resolved');
  for (const r of results) assert.equal(r.value.stateAtHandout, 'open');

  // Each connection carries a message both ways.
  await Promise.all(
    pairs.map(async ([i, j]) => {
      await pages[j].waitFor((T, x) => T.connTo(x), pages[i].peerId, { timeout: 15_000, what: `incoming from p${i}` });
      await exchange(pages[i], pages[j], `mesh ${i}->${j}`, { timeout: 15_000 });
      await exchange(pages[j], pages[i], `mesh ${j}->${i}`, { timeout: 15_000 });
    }),
  );

  // Exactly one open channel per peer pair on each page: 5 per page, 15 in all.
  let total = 0;
  for (const p of pages) {
    let mine = 0;
    for (const q of pages) {
      if (q === p) continue;
      const n = await p.call('openConnsTo', q.peerId);
      assert.equal(n, 1, `${p.label} has ${n} open connections to ${q.label}`);
      mine += n;
    }
    assert.equal(mine, N - 1);
    total += mine;
  }
  assert.equal(total / 2, 15);
  t.diagnostic('15 data channels open, 30 messages delivered');
}));
