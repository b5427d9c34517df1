// Measures the time from connect() to an open data channel (page clock, performance.now()) over
// fresh peer pairs. The figures are printed for BENCHMARKS.md; timing is never a pass/fail criterion
// here, only that every trial ends with an open channel that carries a message.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { Suite, TMP, onlineClient, stats } from '../lib/harness.mjs';

const TRIALS = Number(process.env.SIGNAL_MESH_BENCH_TRIALS ?? 24);
const suite = new Suite('bench');
let node;

before(async () => {
  await suite.setup();
  node = await suite.node();
}, { timeout: 60_000 });

after(() => suite.close());

test(`connect() to open channel, ${TRIALS} trials (measured, not asserted)`, { timeout: 180_000 }, suite.wrap(async (t) => {
  const a = await onlineClient(suite, node);
  const b = await suite.page(node);
  const times = [];
  // One warm-up trial (first RTCPeerConnection in the process), then the measured ones.
  for (let i = -1; i < TRIALS; i++) {
    const name = `b${i + 1}`;
    const info = await b.call('create', { servers: [node.wsUrl] }, name);
    const conn = await a.call('connect', info.peerId);
    assert.equal(conn.stateAtHandout, 'open');
    await a.call('send', conn.id, `trial ${i}`);
    await b.waitFor((T, x) => T.received(x.peer, x.text, x.name), { peer: a.peerId, text: `trial ${i}`, name }, {
      what: `trial ${i} message`,
    });
    if (i >= 0) times.push(conn.ms);
    await a.call('closeConn', conn.id);
    await b.call('close', name);
  }
  const s = stats(times);
  const line = `connect() -> open channel over ${s.n} trials (ms): median ${s.median.toFixed(1)}, ` +
    `p90 ${s.p90.toFixed(1)}, min ${s.min.toFixed(1)}, max ${s.max.toFixed(1)}`;
  t.diagnostic(line);
  console.log(line);
  fs.mkdirSync(TMP, { recursive: true });
  fs.writeFileSync(
    path.join(TMP, 'bench-connect.json'),
    JSON.stringify({ ...s, trials: times, chromium: suite.browser.version(), at: new Date().toISOString() }, null, 2),
  );
  assert.equal(times.length, TRIALS);
}));
