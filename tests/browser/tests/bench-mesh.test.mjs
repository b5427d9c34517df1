// Measures the time from connect() to an open data channel (page clock, performance.now()) between
// two pages on two different nodes of a two-node mesh, over fresh peer pairs: the offer, answer and
// candidates cross the mesh (node 1 -> node 2 and back). Before each trial the new peer is found by
// lookup on node 1, as an app would find it; that wait is not part of the figure. The figures are
// printed for BENCHMARKS.md and written to .tmp/bench-mesh-connect.json; timing is never a
// pass/fail criterion, only that every trial ends with an open channel that carries a message.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { Suite, TMP, onlineClient, startMesh, stats, uniqueTopic, waitLookup } from '../lib/harness.mjs';

const TRIALS = Number(process.env.SIGNAL_MESH_BENCH_TRIALS ?? 24);
const suite = new Suite('bench-mesh');
let nodes;

before(async () => {
  await suite.setup();
  nodes = await startMesh(suite, 2);
}, { timeout: 60_000 });

after(() => suite.close());

test(`connect() across two nodes to open channel, ${TRIALS} trials (measured, not asserted)`, { timeout: 240_000 }, suite.wrap(async (t) => {
  const a = await onlineClient(suite, nodes[0]);
  const b = await suite.page(nodes[1]);
  const topic = uniqueTopic('bench-mesh');
  const times = [];
  // One warm-up trial (first RTCPeerConnection in the process), then the measured ones.
  for (let i = -1; i < TRIALS; i++) {
    const name = `b${i + 1}`;
    const info = await b.call('create', { servers: [nodes[1].wsUrl] }, name);
    await b.call('join', topic, undefined, name);
    await waitLookup(a, topic, [info.peerId], { timeout: 15_000 });
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
  const line = `connect() across nodes -> open channel over ${s.n} trials (ms): median ${s.median.toFixed(1)}, ` +
    `p90 ${s.p90.toFixed(1)}, min ${s.min.toFixed(1)}, max ${s.max.toFixed(1)}`;
  t.diagnostic(line);
  console.log(line);
  console.log(`trials (ms): ${times.map((x) => x.toFixed(1)).join(' ')}`);
  fs.mkdirSync(TMP, { recursive: true });
  fs.writeFileSync(
    path.join(TMP, 'bench-mesh-connect.json'),
    JSON.stringify({ ...s, trials: times, chromium: suite.browser.version(), at: new Date().toISOString() }, null, 2),
  );
  assert.equal(times.length, TRIALS);
}));
