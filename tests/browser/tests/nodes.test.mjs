// A mesh of three signal-mesh-node processes (nodes 2 and 3 bootstrapped from node 1 with the id
// `signal-mesh-node id` prints): pages on different nodes find each other by event and by lookup,
// open a data channel, and see a crashed node's peers leave.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { exchange, onlineClient, topicHex, uniqueTopic, useSuite, waitLookup } from '../lib/harness.mjs';

const TTL_MS = 4000;
const env = useSuite('nodes', {
  mesh: 3,
  meshArgs: ['--presence-ttl-ms', String(TTL_MS), '--heartbeat-ms', '500'],
  closePages: false,
  timeout: 90_000,
});
const { suite } = env;

test('(mesh 1) pages on two nodes find each other by event and lookup and open a data channel', { timeout: 90_000 }, suite.wrap(async (t) => {
  const a = await onlineClient(suite, env.nodes[0]);
  const b = await onlineClient(suite, env.nodes[1]);
  const topic = uniqueTopic('two-nodes');
  const hex = await topicHex(topic);
  await a.call('join', topic);
  const mark = await a.call('eventCount');
  await b.call('join', topic);
  // By event: a (node 1) hears that b (node 2) joined.
  await a.waitFor((T, x) => T.sawPeerJoined(x.peer, x.hex, x.from), { peer: b.peerId, hex, from: mark }, {
    timeout: 15_000,
    what: 'peer-joined from the other node',
  });
  // By lookup, both ways.
  await waitLookup(a, topic, [b.peerId], { timeout: 15_000 });
  await waitLookup(b, topic, [a.peerId], { timeout: 15_000 });
  // Offer, answer and candidates cross the mesh; the channel is direct.
  const started = Date.now();
  const conn = await a.call('connect', b.peerId);
  t.diagnostic(`connect() across nodes: ${Date.now() - started} ms`);
  assert.equal(conn.stateAtHandout, 'open');
  await b.waitFor((T, x) => T.connTo(x), a.peerId, { what: 'incoming connection on node 2' });
  await exchange(a, b, 'hello across the mesh');
  await exchange(b, a, 'and back');
}));

test('(mesh 2) a crashed node\'s page leaves: the other page gets peer-left within the TTL', { timeout: 90_000 }, suite.wrap(async (t) => {
  const a = await onlineClient(suite, env.nodes[0]);
  const c = await onlineClient(suite, env.nodes[2]);
  const topic = uniqueTopic('crash');
  const hex = await topicHex(topic);
  await a.call('join', topic);
  await c.call('join', topic);
  await waitLookup(a, topic, [c.peerId], { timeout: 15_000 });
  const mark = await a.call('eventCount');
  // The page would fail over to a node it learned from Welcome (test 3) and never leave: cut its
  // network first, so that the crash is all the mesh sees.
  await c.page.context().setOffline(true);
  const killed = Date.now();
  await env.nodes[2].stop({ signal: 'SIGKILL' });
  await a.waitFor(
    (T, x) => T.events('c', 'peer-left').slice(0).some((e) => e.detail.peerId === x.peer && e.detail.topic === x.hex),
    { peer: c.peerId, hex, from: mark },
    { timeout: TTL_MS + 3000, what: 'peer-left for the crashed node\'s page' },
  );
  const took = Date.now() - killed;
  t.diagnostic(`peer-left ${took} ms after SIGKILL (TTL ${TTL_MS} ms)`);
  assert.ok(took <= TTL_MS + 1500, `peer-left after ${took} ms`);
  const r = await a.call('lookup', topic);
  assert.ok(!r.peers.includes(c.peerId), 'gone from lookup');
}));

test('(mesh 3) a page configured with one node fails over to a node it learned from Welcome when that node dies', { timeout: 90_000 }, suite.wrap(async (t) => {
  // env.nodes[2] was killed above; env.nodes[0] and env.nodes[1] remain. The page knows only env.nodes[1]'s URL.
  const d = await onlineClient(suite, env.nodes[1]);
  const watcher = await onlineClient(suite, env.nodes[0]);
  const topic = uniqueTopic('failover');
  await d.call('join', topic);
  await waitLookup(watcher, topic, [d.peerId], { timeout: 15_000 });
  const killed = Date.now();
  await env.nodes[1].stop({ signal: 'SIGKILL' });
  // The page goes offline, then online again on env.nodes[0] (from Welcome.node_urls) and re-joins.
  await d.waitFor((T) => T.state() === 'online' && T.events('c', 'statechange').some((e) => e.detail && e.detail.state !== 'online'), undefined, {
    timeout: 30_000,
    what: 'the page back online on another node',
  });
  await waitLookup(watcher, topic, [d.peerId], { timeout: 20_000 });
  t.diagnostic(`failed over and re-joined ${Date.now() - killed} ms after SIGKILL`);
}));
