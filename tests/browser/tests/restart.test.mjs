// Recovery: the node restarts under live clients, and failover across two server URLs.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  exchange,
  freePort,
  onlineClient,
  topicHex,
  uniqueTopic,
  useSuite,
  waitLookup,
} from '../lib/harness.mjs';

const { suite } = useSuite('restart', { node: false });

async function restartScenario(t, signal) {
  const node = await suite.node({ name: `restart-node-${signal}` });
  const a = await onlineClient(suite, node);
  const b = await onlineClient(suite, node);
  const topic = uniqueTopic('restart');
  const hex = await topicHex(topic);
  await a.call('join', topic);
  await b.call('join', topic);
  await waitLookup(a, topic, [b.peerId]);
  const before = await a.call('connect', b.peerId);
  await b.waitFor((T, x) => T.connTo(x), a.peerId, { what: 'connection event on B' });
  await exchange(a, b, 'before restart');

  const port = node.port;
  const marks = { a: await a.call('eventCount'), b: await b.call('eventCount') };
  const stateMarks = await Promise.all([a, b].map((p) => p.eval((T) => T.clients.get('c').states.length)));
  await node.stop({ signal });
  // 'offline' may be brief (the client retries at once), so look for it in the statechange history.
  for (const [k, p] of [a, b].entries()) {
    await p.waitFor((T, from) => T.clients.get('c').states.slice(from).includes('offline'), stateMarks[k], {
      timeout: 15_000,
      what: "statechange to 'offline'",
    });
  }
  // The direct channel does not need the node.
  await exchange(a, b, 'while the node is down');

  await node.restart({ signal, downMs: 500 });
  assert.equal(node.port, port, 'restarted on the same port');
  for (const p of [a, b]) {
    await p.waitFor((T) => T.state() === 'online', undefined, { timeout: 30_000, what: "state 'online' again" });
  }
  for (const p of [a, b]) {
    const states = await p.eval((T) => T.clients.get('c').states);
    t.diagnostic(`${p.label} states: ${states.join(' -> ')}`);
    assert.equal(states.at(-1), 'online');
  }

  // Both re-joined by themselves: the later one is announced to the earlier, and lookups work.
  await waitLookup(a, topic, [b.peerId], { timeout: 15_000 });
  await waitLookup(b, topic, [a.peerId], { timeout: 15_000 });
  const seenA = await a.call('sawPeerJoined', b.peerId, hex, marks.a);
  const seenB = await b.call('sawPeerJoined', a.peerId, hex, marks.b);
  t.diagnostic(`peer-joined after restart: A saw B ${seenA}, B saw A ${seenB}`);
  if (!seenA && !seenB) {
    await Promise.race([
      a.waitFor((T, x) => T.sawPeerJoined(x.peer, x.hex, x.from), { peer: b.peerId, hex, from: marks.a }, { timeout: 5000 }),
      b.waitFor((T, x) => T.sawPeerJoined(x.peer, x.hex, x.from), { peer: a.peerId, hex, from: marks.b }, { timeout: 5000 }),
    ]);
  }

  // Connect again through the restarted node.
  await a.call('closeConn', before.id);
  await b.waitFor((T, x) => T.conns().every((c) => c.peerId !== x || c.closed), a.peerId, {
    timeout: 15_000,
    what: 'the old channel closing on B',
  });
  const again = await a.call('connect', b.peerId);
  assert.equal(again.stateAtHandout, 'open');
  assert.notEqual(again.pcId, before.pcId, 'a new RTCPeerConnection');
  await b.waitFor((T, x) => T.connTo(x), a.peerId, { what: 'the new connection on B' });
  await exchange(a, b, 'after restart');
  await exchange(b, a, 'after restart, back');
  await node.stop();
}

test('(3) the node restarts mid-session (SIGTERM): clients go offline, reconnect, re-join and connect again', { timeout: 120_000 }, suite.wrap((t) => restartScenario(t, 'SIGTERM')));

test('(3b) the node crashes mid-session (SIGKILL) and comes back on the same port: the same recovery', { timeout: 120_000 }, suite.wrap((t) => restartScenario(t, 'SIGKILL')));

test('(4) with two server URLs and the first down, the client lands on the second', { timeout: 60_000 }, suite.wrap(async () => {
  const node = await suite.node({ name: 'failover-node' });
  const dead = `ws://127.0.0.1:${await freePort()}/signal`;
  const page = await suite.page(node);
  const info = await page.call('create', { servers: [dead, node.wsUrl] });
  assert.equal(info.state, 'online');
  page.peerId = info.peerId;

  // It is really served by the second node: a client there finds it and connects.
  const other = await onlineClient(suite, node);
  const topic = uniqueTopic('failover');
  await page.call('join', topic);
  await waitLookup(other, topic, [page.peerId]);
  await other.call('connect', page.peerId);
  await page.waitFor((T, x) => T.connTo(x), other.peerId, { what: 'incoming connection' });
  await exchange(other, page, 'via the second server');
}));
