// Rooms in headless Chromium against a real node: 8 pages in one room form the full mesh (28
// connections, none doubled); a page leaves and the others see `peer-left` and drop its
// connection; a page reloads with the same identity and rejoins.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { uniqueTopic, useSuite } from '../lib/harness.mjs';

const env = useSuite('rooms');
const { suite } = env;

/** Creates a client in `page` (optionally with an identity seed) and records everything in `window.R`. */
async function roomClient(page, identityHex) {
  await page.eval(async (T, arg) => {
    const identity = arg.identityHex ? Uint8Array.from(arg.identityHex.match(/../g).map((h) => parseInt(h, 16))) : undefined;
    const client = await T.SM.SignalClient.create({ servers: [arg.url], identity });
    const R = { client, room: null, peerEvents: [], leftEvents: [], conns: 0, pcs: new Set(), msgs: [] };
    client.addEventListener('connection', () => { R.conns += 1; });
    window.R = R;
  }, { url: env.node.wsUrl, identityHex });
  page.peerId = await page.eval(() => window.R.client.peerId);
}

/** Starts the room in `page` (at wall time `at`, so all pages start together). */
async function startRoom(page, topic, at) {
  await page.eval(async (T, arg) => {
    const R = window.R;
    while (Date.now() < arg.at) await new Promise((r) => setTimeout(r, 1));
    R.startedAt = Date.now();
    R.room = R.client.room(arg.topic);
    R.room.addEventListener('peer', (e) => {
      R.peerEvents.push(e.detail.peerId);
      R.pcs.add(e.detail.connection.pc);
      e.detail.connection.channel.addEventListener('message', (m) => R.msgs.push(m.data));
      if (R.room.peers.size === arg.want) R.fullAt = Date.now();
    });
    R.room.addEventListener('peer-left', (e) => R.leftEvents.push(e.detail.peerId));
    await R.room.ready;
  }, { topic, at, want: 7 });
}

const roomState = (p) => p.eval(() => ({
  peers: [...window.R.room.peers.keys()].sort(),
  open: [...window.R.room.peers.values()].filter((c) => c.channel.readyState === 'open').length,
  peerEvents: window.R.peerEvents.length,
  pcs: window.R.pcs.size,
  startedAt: window.R.startedAt,
  fullAt: window.R.fullAt,
  left: window.R.leftEvents,
}));

describe('rooms', { timeout: 300_000 }, () => {
  test('8 pages form the full mesh: 28 connections, none doubled; leave and reload', { timeout: 240_000 }, suite.wrap(async (t) => {
    const N = 8;
    const pages = [];
    for (let i = 0; i < N; i++) {
      const p = await suite.page(env.node);
      await roomClient(p, i === N - 1 ? '42'.repeat(32) : undefined);
      pages.push(p);
    }
    const topic = uniqueTopic('room8');
    const at = Date.now() + 1000;
    await Promise.all(pages.map((p) => startRoom(p, topic, at)));
    for (const p of pages) {
      await p.waitFor(() => window.R.room.peers.size === 7
        && [...window.R.room.peers.values()].every((c) => c.channel.readyState === 'open'), null, {
        timeout: 60_000,
        what: 'a full room (7 open connections)',
      });
    }
    const states = await Promise.all(pages.map(roomState));
    const ids = pages.map((p) => p.peerId);
    const pairs = new Set();
    for (const [i, s] of states.entries()) {
      assert.deepEqual(s.peers, ids.filter((x) => x !== ids[i]).sort(), `page ${i} is connected to every other page`);
      // None doubled: exactly 7 peer events and 7 distinct RTCPeerConnections per page.
      assert.equal(s.peerEvents, 7, `page ${i}: ${s.peerEvents} peer events`);
      assert.equal(s.pcs, 7, `page ${i}: ${s.pcs} RTCPeerConnections`);
      for (const x of s.peers) pairs.add([ids[i], x].sort().join('-'));
    }
    assert.equal(pairs.size, 28, 'distinct connected pairs');
    const formation = Math.max(...states.map((s) => s.fullAt)) - Math.min(...states.map((s) => s.startedAt));
    t.diagnostic(`room of 8 pages: full mesh (28 connections) ${formation} ms after the rooms started`);

    // room.send reaches every other member.
    assert.equal(await pages[0].eval(() => window.R.room.send('hello room')), 7);
    for (const p of pages.slice(1)) {
      await p.waitFor(() => window.R.msgs.includes('hello room'), null, { what: 'the room message' });
    }

    // A page leaves: the others see peer-left and drop its connection.
    const leaver = pages[3];
    await leaver.eval(() => window.R.room.leave());
    assert.equal(await leaver.eval(() => window.R.room.peers.size), 0);
    for (const p of pages.filter((x) => x !== leaver)) {
      await p.waitFor((T, id) => window.R.leftEvents.includes(id) && !window.R.room.peers.has(id)
        && window.R.room.peers.size === 6, leaver.peerId, { what: 'peer-left for the page that left' });
    }

    // The last page reloads with the same identity and rejoins: everyone is connected to it again.
    const reloader = pages[N - 1];
    await reloader.page.reload();
    await reloader.ready();
    await roomClient(reloader, '42'.repeat(32));
    assert.equal(reloader.peerId, ids[N - 1], 'same identity after the reload');
    await startRoom(reloader, topic, 0);
    await reloader.waitFor(() => window.R.room.peers.size === 6
      && [...window.R.room.peers.values()].every((c) => c.channel.readyState === 'open'), null, {
      timeout: 60_000,
      what: 'the reloaded page connected to the 6 members',
    });
    for (const p of pages.filter((x) => x !== leaver && x !== reloader)) {
      await p.waitFor((T, id) => {
        const c = window.R.room.peers.get(id);
        return window.R.room.peers.size === 6 && c && c.channel.readyState === 'open';
      }, reloader.peerId, { timeout: 60_000, what: 'an open connection to the reloaded page' });
    }
    await reloader.eval(() => window.R.room.send('back'));
    for (const p of pages.filter((x) => x !== leaver && x !== reloader)) {
      await p.waitFor(() => window.R.msgs.includes('back'), null, { what: 'a message from the reloaded page' });
    }
  }));
});
