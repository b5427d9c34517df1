// Measures the time from connect() to an open data channel (page clock, performance.now()) between
// two pages on two different nodes of a two-node mesh, over fresh peer pairs: the offer, answer and
// candidates cross the mesh (node 1 -> node 2 and back). Before each trial the new peer is found by
// lookup on node 1, as an app would find it; that wait is not part of the figure. The figures are
// printed for BENCHMARKS.md and written to .tmp/bench-mesh-connect.json; timing is never a
// pass/fail criterion, only that every trial ends with an open channel that carries a message.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { connectTrials, onlineClient, reportTrials, uniqueTopic, useSuite, waitLookup } from '../lib/harness.mjs';

const TRIALS = Number(process.env.SIGNAL_MESH_BENCH_TRIALS ?? 24);
const env = useSuite('bench-mesh', { mesh: 2, closePages: false });
const { suite } = env;

test(`connect() across two nodes to open channel, ${TRIALS} trials (measured, not asserted)`, { timeout: 240_000 }, suite.wrap(async (t) => {
  const { nodes } = env;
  const a = await onlineClient(suite, nodes[0]);
  const b = await suite.page(nodes[1]);
  const topic = uniqueTopic('bench-mesh');
  const times = await connectTrials(a, b, nodes[1].wsUrl, TRIALS, async (info, name) => {
    await b.call('join', topic, undefined, name);
    await waitLookup(a, topic, [info.peerId], { timeout: 15_000 });
  });
  reportTrials(t, suite, 'connect() across nodes -> open channel', times, 'bench-mesh-connect.json');
  console.log(`trials (ms): ${times.map((x) => x.toFixed(1)).join(' ')}`);
  assert.equal(times.length, TRIALS);
}));
