// The fixes of issue 10's review, each in real Chromium against a real node:
// close() frees the wasm engine; requests are paced by the node's announced token bucket;
// AbortSignal in connect() and lookup(); `detail.topicName`.

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { describe, test } from 'node:test';
import { onlineClient, topicHex, uniqueTopic, useSuite } from '../lib/harness.mjs';

const env = useSuite('review');
const { suite } = env;

describe('review fixes of the SignalClient', { timeout: 240_000 }, () => {
  test('close() frees the engine: 200 clients created and closed leave none alive and memory flat', { timeout: 120_000 }, suite.wrap(async (t) => {
    const page = await suite.page(env.node);
    const r = await page.eval(async (T, url) => {
      const glue = await import('/pkg/signal_mesh.js');
      const wasm = await glue.default();
      const cycle = async (n) => {
        for (let i = 0; i < n; i++) {
          const c = await T.SM.SignalClient.create({ servers: [url] });
          await c.join(`t${i}`);
          await c.close();
          if (c.state !== 'closed') throw new Error(`state after close: ${c.state}`);
        }
        await new Promise((res) => setTimeout(res, 0));
      };
      await cycle(20);
      const warm = { live: glue.liveEngines(), bytes: wasm.memory.buffer.byteLength };
      await cycle(200);
      const end = { live: glue.liveEngines(), bytes: wasm.memory.buffer.byteLength };
      // A call after close() rejects with CLOSED instead of touching the freed engine.
      const c = await T.SM.SignalClient.create({ servers: [url] });
      await c.close();
      let code = null;
      try { await c.join('x'); } catch (e) { code = e.code; }
      const afterAll = glue.liveEngines();
      return { warm, end, code, afterAll };
    }, env.node.wsUrl);
    t.diagnostic(`wasm memory after 20 clients ${r.warm.bytes} B, after 200 more ${r.end.bytes} B`);
    assert.equal(r.warm.live, 0, 'engines alive after 20 create/close');
    assert.equal(r.end.live, 0, 'engines alive after 220 create/close');
    assert.equal(r.afterAll, 0);
    assert.ok(r.end.bytes - r.warm.bytes <= 64 * 1024, `wasm memory grew ${r.end.bytes - r.warm.bytes} B over 200 clients`);
    assert.equal(r.code, 'CLOSED');
  }));

  test('16 simultaneous connects stay inside the announced token bucket (no RATE_LIMITED)', { timeout: 120_000 }, suite.wrap(async (t) => {
    // A tight bucket: 10 back to back, 10 per second. The 16 offers alone exceed it.
    const tight = await suite.node({ args: ['--requests-per-second', '10', '--request-burst', '10'] });
    const page = await suite.page(tight);
    const r = await page.eval(async (T, url) => {
      const { SignalClient } = T.SM;
      const errors = [];
      const hub = await SignalClient.create({ servers: [url], connectTimeoutMs: 30_000 });
      hub.addEventListener('error', (e) => errors.push(e.detail.error.code));
      const spokes = [];
      for (let i = 0; i < 16; i++) {
        const s = await SignalClient.create({ servers: [url], connectTimeoutMs: 30_000 });
        s.addEventListener('error', (e) => errors.push(e.detail.error.code));
        spokes.push(s);
      }
      const t0 = performance.now();
      const results = await Promise.allSettled(spokes.map((s) => hub.connect(s.peerId)));
      const ms = performance.now() - t0;
      const failed = results.filter((x) => x.status === 'rejected').map((x) => x.reason.code);
      const open = results.filter((x) => x.status === 'fulfilled' && x.value.channel.readyState === 'open').length;
      const state = hub.state;
      await hub.close();
      for (const s of spokes) await s.close();
      return { failed, open, ms, errors, state };
    }, tight.wsUrl);
    t.diagnostic(`16 connects through a 10/s bucket: ${Math.round(r.ms)} ms`);
    assert.deepEqual(r.failed, [], 'connects failed');
    assert.equal(r.open, 16);
    assert.deepEqual(r.errors, [], 'error events (RATE_LIMITED, POLICY_VIOLATION)');
    assert.equal(r.state, 'online');
  }));

  test('an AbortSignal aborts connect() and lookup() with ABORTED, and the client goes on', { timeout: 60_000 }, suite.wrap(async () => {
    const a = await onlineClient(suite, env.node);
    const b = await onlineClient(suite, env.node);
    // b never answers offers: a's connect waits until aborted.
    await b.eval((T) => { T.clients.get('c').client.onIncoming = () => new Promise(() => {}); });
    const r = await a.eval(async (T, peer) => {
      const c = T.clients.get('c').client;
      const out = {};
      const ac = new AbortController();
      const p = c.connect(peer, { signal: ac.signal });
      setTimeout(() => ac.abort(), 200);
      const t0 = performance.now();
      try { await p; out.connect = 'resolved'; } catch (e) { out.connect = e.code; out.isSme = e instanceof T.SM.SignalMeshError; }
      out.connectMs = performance.now() - t0;
      try { await c.connect(peer, { signal: AbortSignal.abort() }); } catch (e) { out.pre = e.code; }
      try { await c.lookup('some-topic', { signal: AbortSignal.abort() }); } catch (e) { out.lookupPre = e.code; }
      const ac2 = new AbortController();
      const lp = c.lookup('some-topic', { signal: ac2.signal });
      ac2.abort();
      try { out.lookup = (await lp).length; } catch (e) { out.lookup = e.code; }
      out.lookupAfter = (await c.lookup('some-topic')).length;
      out.state = c.state;
      return out;
    }, b.peerId);
    assert.equal(r.connect, 'ABORTED');
    assert.equal(r.isSme, true);
    assert.ok(r.connectMs < 2000, `abort took ${r.connectMs} ms`);
    assert.equal(r.pre, 'ABORTED');
    assert.equal(r.lookupPre, 'ABORTED');
    assert.equal(r.lookup, 'ABORTED');
    assert.equal(r.lookupAfter, 0);
    assert.equal(r.state, 'online');
  }));

  test('the identity (WebCrypto in the facade) is the Ed25519 key of the seed, and nodes accept its signatures', { timeout: 60_000 }, suite.wrap(async () => {
    const page = await suite.page(env.node);
    const seeds = ['01'.repeat(32), 'a5'.repeat(32)];
    for (const seedHex of seeds) {
      const prefix = Buffer.from('302e020100300506032b657004220420', 'hex');
      const key = crypto.createPrivateKey({ key: Buffer.concat([prefix, Buffer.from(seedHex, 'hex')]), format: 'der', type: 'pkcs8' });
      const expected = Buffer.from(crypto.createPublicKey(key).export({ format: 'jwk' }).x, 'base64url').toString('hex');
      // create() resolves only after the node verified the signature of its challenge.
      const info = await page.call('create', { servers: [env.node.wsUrl], identityHex: seedHex }, `id-${seedHex.slice(0, 2)}`);
      assert.equal(info.peerId, expected, 'peer id = Ed25519 public key of the seed (Node crypto)');
      assert.equal(info.state, 'online');
    }
    const r = await page.eval(async (T) => {
      const out = {};
      for (const [what, identity] of [['short', new Uint8Array(31)], ['string', 'x'.repeat(32)]]) {
        try { await T.SM.SignalClient.create({ servers: ['ws://127.0.0.1:9/signal'], identity }); out[what] = 'created'; } catch (e) { out[what] = e.code; }
      }
      return out;
    });
    assert.deepEqual(r, { short: 'INVALID_ARGUMENT', string: 'INVALID_ARGUMENT' });
  }));

  test('peer events carry detail.topicName when the app joined by name, and only then', { timeout: 60_000 }, suite.wrap(async () => {
    const a = await onlineClient(suite, env.node);
    const b = await onlineClient(suite, env.node);
    const name = uniqueTopic('named');
    const hex = await topicHex(name);
    await a.call('join', name);
    await b.call('join', { hex });
    await a.waitFor((T, x) => T.sawPeerJoined(x.peer, x.hex), { peer: b.peerId, hex }, { what: 'peer-joined on A' });
    await b.call('leave', { hex });
    await a.waitFor((T, x) => T.events('c', 'peer-left').some((e) => e.detail.peerId === x), b.peerId, { what: 'peer-left on A' });
    const joined = (await a.call('events', 'c', 'peer-joined')).find((e) => e.detail.peerId === b.peerId);
    const left = (await a.call('events', 'c', 'peer-left')).find((e) => e.detail.peerId === b.peerId);
    assert.equal(joined.detail.topic, hex);
    assert.equal(joined.detail.topicName, name);
    assert.equal(left.detail.topicName, name);
    // b joined by bytes: its events have no name.
    await b.call('join', { hex });
    await a.call('leave', name);
    await a.call('join', { hex });
    await b.waitFor((T, x) => T.sawPeerJoined(x.peer, x.hex), { peer: a.peerId, hex }, { what: 'peer-joined on B' });
    const bJoined = (await b.call('events', 'c', 'peer-joined')).find((e) => e.detail.peerId === a.peerId);
    assert.equal(bJoined.detail.topicName, undefined);
  }));
});
