// Two-party scenarios against one real node: discovery by event and lookup, a data channel both
// ways, reject, simultaneous connect, bad input, topic hashing and the plain ES-module import.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  BAD_INPUT_CODES,
  exchange,
  onlineClient,
  sleep,
  topicHex,
  uniqueTopic,
  useSuite,
  waitLookup,
} from '../lib/harness.mjs';

const env = useSuite('basic');
const { suite } = env;

const HEX64 = /^[0-9a-f]{64}$/;

describe('signal-mesh in headless Chromium, one node', { timeout: 120_000 }, () => {
  test('(1) two pages join a topic, see each other by event and by lookup, and talk both ways', { timeout: 60_000 }, suite.wrap(async () => {
    const a = await onlineClient(suite, env.node);
    const b = await onlineClient(suite, env.node);
    assert.match(a.peerId, HEX64);
    assert.match(b.peerId, HEX64);
    assert.notEqual(a.peerId, b.peerId);

    const topic = uniqueTopic('two');
    const hex = await topicHex(topic);
    await a.call('join', topic);
    await b.call('join', topic);

    // A was there first: it learns of B by event, with the topic as hex.
    await a.waitFor((T, x) => T.sawPeerJoined(x.peer, x.hex), { peer: b.peerId, hex }, {
      what: 'peer-joined for B',
    });
    const joined = (await a.call('events', 'c', 'peer-joined')).find((e) => e.detail.peerId === b.peerId);
    assert.equal(joined.detail.topic, hex, 'peer-joined detail.topic is the topic as hex');
    assert.equal(joined.detail.peerId, b.peerId);
    assert.equal(joined.isCustomEvent, true, 'events are CustomEvents');

    // Both find each other by lookup.
    assert.ok((await waitLookup(a, topic, [b.peerId])).includes(b.peerId));
    const bLook = await b.call('lookup', topic);
    assert.equal(bLook.isArray, true, 'lookup resolves to an Array');
    assert.ok(bLook.peers.includes(a.peerId), `B's lookup ${JSON.stringify(bLook.peers)} lacks A`);

    // A connects; the channel is open when handed out; B is told by a `connection` event.
    const conn = await a.call('connect', b.peerId, { label: 'chat' });
    assert.equal(conn.peerId, b.peerId);
    assert.equal(conn.stateAtHandout, 'open');
    assert.equal(conn.label, 'chat');
    const incoming = await b.waitFor((T, x) => T.connTo(x), a.peerId, { what: 'connection event on B' });
    assert.equal(incoming.dir, 'in');
    assert.equal(incoming.peerId, a.peerId);
    assert.equal(incoming.label, 'chat');

    await exchange(a, b, 'ping from A');
    await exchange(b, a, 'pong from B');

    // Leaving is seen as peer-left by the other member.
    await b.call('leave', topic);
    await a.waitFor((T, x) => T.events('c', 'peer-left').some((e) => e.detail.peerId === x.peer && e.detail.topic === x.hex),
      { peer: b.peerId, hex }, { what: 'peer-left for B' });
    const afterLeave = await a.call('lookup', topic);
    assert.ok(!afterLeave.peers.includes(b.peerId), 'B is gone from the lookup after leave()');
  }));

  test('closing a connection on one side is reported on the other', { timeout: 60_000 }, suite.wrap(async () => {
    const a = await onlineClient(suite, env.node);
    const b = await onlineClient(suite, env.node);
    const conn = await a.call('connect', b.peerId);
    await b.waitFor((T, x) => T.connTo(x), a.peerId, { what: 'connection event on B' });
    await exchange(a, b, 'before close');
    await a.call('closeConn', conn.id);
    await b.waitFor((T, x) => T.conns().every((c) => c.peerId !== x || c.closed), a.peerId, {
      timeout: 15_000,
      what: "B's channel to A closing",
    });
  }));

  test('(5) a rejected offer reaches the initiator as REJECTED within a second', { timeout: 60_000 }, suite.wrap(async () => {
    // A timeout would take 15 s; REJECTED must come from the reject itself.
    const a = await onlineClient(suite, env.node, { connectTimeoutMs: 15_000 });
    const b = await onlineClient(suite, env.node);

    for (const mode of ['reject', 'reject-async']) {
      await b.call('setIncoming', mode);
      const t0 = performance.now();
      const r = await a.try('connect', b.peerId);
      const elapsed = performance.now() - t0;
      assert.equal(r.ok, false, `connect() to a rejecting peer (${mode}) resolved`);
      assert.equal(r.error.code, 'REJECTED', `error ${JSON.stringify(r.error)}`);
      assert.equal(r.error.isError, true);
      assert.equal(r.error.isSignalMeshError, true, 'rejection is a SignalMeshError');
      assert.ok(elapsed < 1000, `REJECTED after ${elapsed.toFixed(0)} ms (${mode}), want < 1000 ms`);
      assert.deepEqual(await b.call('incomingCalls'), [a.peerId], 'onIncoming was asked with the peer id');
    }
    assert.equal((await b.call('events', 'c', 'connection')).length, 0, 'no connection event on the rejecting side');

    // The pair is not poisoned: once B accepts, the same connect works.
    await b.call('setIncoming', 'accept-async');
    const conn = await a.call('connect', b.peerId);
    assert.equal(conn.stateAtHandout, 'open');
    await b.waitFor((T, x) => T.connTo(x), a.peerId, { what: 'connection event on B' });
    await exchange(a, b, 'accepted now');
  }));

  test('(6) simultaneous connect from both sides ends with exactly one connection each side', { timeout: 60_000 }, suite.wrap(async () => {
    const a = await onlineClient(suite, env.node);
    const b = await onlineClient(suite, env.node);
    const at = Date.now() + 400;
    const [ra, rb] = await Promise.all([
      a.try('connectAt', b.peerId, at),
      b.try('connectAt', a.peerId, at),
    ]);
    assert.equal(ra.ok, true, `A's connect(): ${JSON.stringify(ra.error)}`);
    assert.equal(rb.ok, true, `B's connect(): ${JSON.stringify(rb.error)}`);
    assert.equal(ra.value.stateAtHandout, 'open');
    assert.equal(rb.value.stateAtHandout, 'open');
    // Let any late duplicate show up before counting.
    await sleep(1500);
    assert.equal(await a.call('openConnsTo', b.peerId), 1, `A: ${JSON.stringify(await a.call('conns'))}`);
    assert.equal(await b.call('openConnsTo', a.peerId), 1, `B: ${JSON.stringify(await b.call('conns'))}`);
    await exchange(a, b, 'glare A->B');
    await exchange(b, a, 'glare B->A');
  }));

  test('(7) bad input from the app gets typed errors and the client survives', { timeout: 60_000 }, suite.wrap(async () => {
    const a = await onlineClient(suite, env.node);
    const b = await onlineClient(suite, env.node);
    const expectCode = async (what, r, codes) => {
      assert.equal(r.ok, false, `${what} succeeded`);
      assert.ok(codes.includes(r.error.code), `${what}: code ${r.error.code} not in ${codes} (${JSON.stringify(r.error)})`);
      assert.equal(r.error.isError, true, `${what}: not an Error`);
      assert.equal(r.error.isSignalMeshError, true, `${what}: not a SignalMeshError`);
      assert.ok(r.error.message.length > 0, `${what}: empty message`);
    };

    await expectCode('connect("not-a-peer-id")', await a.try('connect', 'not-a-peer-id'), BAD_INPUT_CODES);
    await expectCode('connect(31-byte hex)', await a.try('connect', 'ab'.repeat(31)), BAD_INPUT_CODES);
    await expectCode('connect(non-hex)', await a.try('connect', 'zz'.repeat(32)), BAD_INPUT_CODES);
    await expectCode('connect(self)', await a.try('connect', a.peerId), BAD_INPUT_CODES);

    const oversize = [
      ['1025 ASCII bytes', 'x'.repeat(1025)],
      ['513 two-byte chars (1026 bytes)', '\u00e9'.repeat(513)],
    ];
    for (const [what, name] of oversize) {
      await expectCode(`join(${what})`, await a.try('join', name), [...BAD_INPUT_CODES, 'TOO_LARGE']);
      await expectCode(`lookup(${what})`, await a.try('lookup', name), [...BAD_INPUT_CODES, 'TOO_LARGE']);
    }
    await expectCode('join(31-byte topic)', await a.try('join', { hex: 'ab'.repeat(31) }), BAD_INPUT_CODES);

    await expectCode('lookup(limit 0)', await a.try('lookup', 'some-topic', { limit: 0 }), BAD_INPUT_CODES);
    await expectCode('create(http:// server)', await a.try('create', { servers: [env.node.httpUrl] }, 'http'), BAD_INPUT_CODES);
    await expectCode('create({ servers: [] })', await a.try('create', { servers: [] }, 'empty'), BAD_INPUT_CODES);
    await expectCode('create(16-byte identity)', await a.try('create', { servers: [env.node.wsUrl], identityHex: '01'.repeat(16) }, 'short-id'), BAD_INPUT_CODES);

    // An unknown but well-formed peer id is PEER_NOT_FOUND, not a timeout.
    await expectCode('connect(unknown peer)', await a.try('connect', '5a'.repeat(32)), ['PEER_NOT_FOUND']);

    // The client is still online and works; a 1024-byte name is the largest allowed.
    assert.equal(await a.call('state'), 'online');
    const longest = 'y'.repeat(1024);
    await a.call('join', longest);
    await b.call('join', longest);
    assert.ok((await waitLookup(b, longest, [a.peerId])).includes(a.peerId));
    await a.call('connect', b.peerId);
    await exchange(a, b, 'still fine');
  }));

  test('a string topic is the SHA-256 of its UTF-8 name (crypto.subtle.digest in the page)', { timeout: 60_000 }, suite.wrap(async () => {
    const a = await onlineClient(suite, env.node);
    const b = await onlineClient(suite, env.node);
    const name = `${uniqueTopic('sha')}-gr\u00fc\u00dfe-\u{1f600}`;
    const pageHex = await b.call('sha256Hex', name);
    assert.equal(pageHex, await topicHex(name));

    // A joins by name; B finds it by the 32 raw bytes, and the other way round.
    await a.call('join', name);
    assert.ok((await waitLookup(b, { hex: pageHex }, [a.peerId])).includes(a.peerId));
    await b.call('join', { hex: pageHex });
    await a.waitFor((T, x) => T.sawPeerJoined(x.peer, x.hex), { peer: b.peerId, hex: pageHex }, {
      what: 'peer-joined with the hashed topic',
    });
    assert.ok((await waitLookup(a, name, [b.peerId])).includes(b.peerId));
  }));

  test('a 32-byte identity seed gives a stable peer id across clients', { timeout: 60_000 }, suite.wrap(async () => {
    const page = await suite.page(env.node);
    const seed = '07'.repeat(32);
    const first = await page.call('create', { servers: [env.node.wsUrl], identityHex: seed }, 'first');
    assert.equal(first.state, 'online');
    assert.equal(await page.call('close', 'first'), 'closed');
    const again = await page.call('create', { servers: [env.node.wsUrl], identityHex: seed }, 'again');
    assert.equal(again.peerId, first.peerId);
    const other = await page.call('create', { servers: [env.node.wsUrl], identityHex: '08'.repeat(32) }, 'other');
    assert.notEqual(other.peerId, first.peerId);
  }));

  test('the package imports in a plain ES-module page with no bundler and no init call', { timeout: 60_000 }, suite.wrap(async () => {
    const page = await suite.page(env.node, '/plain.html', { waitReady: false });
    await page.page.waitForFunction(() => window.PLAIN && window.PLAIN.loaded, null, { timeout: 10_000 });
    assert.equal(await page.page.evaluate(() => window.PLAIN.imported), 'function');
    const info = await page.page.evaluate((servers) => window.plainCreate(servers), [env.node.wsUrl]);
    assert.equal(info.state, 'online');
    assert.match(info.peerId, HEX64);
    assert.equal(info.isEventTarget, true, 'SignalClient is an EventTarget');

    // The package's named exports include the client and the error class.
    const t = await suite.page(env.node);
    const names = await t.call('exports');
    assert.ok(names.includes('SignalClient'), `exports: ${names}`);
    assert.ok(names.includes('SignalMeshError'), `exports: ${names}`);
  }));
});
