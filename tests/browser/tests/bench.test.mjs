// Measures the time from connect() to an open data channel (page clock, performance.now()) over
// fresh peer pairs. The figures are printed for BENCHMARKS.md; timing is never a pass/fail criterion
// here, only that every trial ends with an open channel that carries a message.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { connectTrials, onlineClient, reportTrials, useSuite } from '../lib/harness.mjs';

const TRIALS = Number(process.env.SIGNAL_MESH_BENCH_TRIALS ?? 24);
const env = useSuite('bench', { closePages: false });
const { suite } = env;

test(`connect() to open channel, ${TRIALS} trials (measured, not asserted)`, { timeout: 180_000 }, suite.wrap(async (t) => {
  const { node } = env;
  const a = await onlineClient(suite, node);
  const b = await suite.page(node);
  const times = await connectTrials(a, b, node.wsUrl, TRIALS);
  reportTrials(t, suite, 'connect() -> open channel', times, 'bench-connect.json');
  assert.equal(times.length, TRIALS);
}));
