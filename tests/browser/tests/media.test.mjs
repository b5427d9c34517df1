// Media and renegotiation in headless Chromium with a fake camera and microphone
// (--use-fake-device-for-media-stream --use-fake-ui-for-media-stream): a call with audio and video
// both ways, tracks added by both sides at the same moment, a second data channel opened later.
// Frames are proven to arrive by `getStats()`: inbound-rtp `framesDecoded` grows.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { FAKE_MEDIA_ARGS, Suite, sleep, useSuite } from '../lib/harness.mjs';

const env = useSuite(new Suite('media', { browserArgs: FAKE_MEDIA_ARGS }));
const { suite } = env;

/** A page with a client in `window.M` that records connections, remote tracks and channels. */
async function mediaPage() {
  const page = await suite.page(env.node);
  await page.eval(async (T, url) => {
    const M = { conns: new Map(), tracks: [], channels: [], messages: [] };
    window.M = M;
    M.client = await T.SM.SignalClient.create({ servers: [url] });
    M.track = (conn) => {
      M.conns.set(conn.peerId, conn);
      conn.addEventListener('track', (e) => M.tracks.push({ kind: e.track.kind, streams: e.streams.length }));
      conn.pc.addEventListener('datachannel', (e) => {
        M.channels.push(e.channel.label);
        e.channel.onmessage = (m) => M.messages.push(`${e.channel.label}:${m.data}`);
      });
    };
    M.client.addEventListener('connection', (e) => M.track(e.detail.connection));
    /** framesDecoded of every inbound video stream, and audio packets received. */
    M.stats = async (peer) => {
      const out = { framesDecoded: 0, audioPackets: 0, videoInbound: 0 };
      const report = await M.conns.get(peer).pc.getStats();
      report.forEach((s) => {
        if (s.type !== 'inbound-rtp') return;
        if (s.kind === 'video') { out.framesDecoded += s.framesDecoded || 0; out.videoInbound += 1; }
        if (s.kind === 'audio') out.audioPackets += s.packetsReceived || 0;
      });
      return out;
    };
  }, env.node.wsUrl);
  page.peerId = await page.eval(() => window.M.client.peerId);
  return page;
}

/** Waits until `page` decodes more video frames from `peer` than `above`; returns the stats. */
async function framesGrow(page, peer, above, what) {
  const deadline = Date.now() + 20_000;
  let last;
  while (Date.now() < deadline) {
    last = await page.eval((T, p) => window.M.stats(p), peer);
    if (last.framesDecoded > above) return last;
    await sleep(250);
  }
  throw new Error(`${page.label}: ${what}: framesDecoded stayed at ${JSON.stringify(last)}`);
}

async function decodedTwice(t, page, peer, what) {
  const first = await framesGrow(page, peer, 0, what);
  const second = await framesGrow(page, peer, first.framesDecoded, what);
  t.diagnostic(`${what}: framesDecoded ${first.framesDecoded} -> ${second.framesDecoded}, audio packets ${second.audioPackets}`);
  return second;
}

describe('media and renegotiation', { timeout: 240_000 }, () => {
  test('a call with audio and video both ways: frames decode on both sides', { timeout: 90_000 }, suite.wrap(async (t) => {
    const a = await mediaPage();
    const b = await mediaPage();
    await b.eval(async () => {
      const M = window.M;
      M.media = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
      M.client.onIncoming = () => ({ accept: true, streams: [M.media] });
    });
    await a.eval(async (T, peer) => {
      const M = window.M;
      M.media = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
      M.track(await M.client.connect(peer, { streams: [M.media] }));
    }, b.peerId);
    for (const [page, what] of [[a, 'A'], [b, 'B']]) {
      await page.waitFor(() => {
        const kinds = window.M.tracks.map((x) => x.kind).sort().join(',');
        return kinds === 'audio,video';
      }, null, { timeout: 20_000, what: `${what}: one remote audio and one remote video track` });
    }
    const sa = await decodedTwice(t, a, b.peerId, 'A receives B');
    const sb = await decodedTwice(t, b, a.peerId, 'B receives A');
    assert.ok(sa.audioPackets > 0 && sb.audioPackets > 0, 'audio packets arrive both ways');
    // One connection each side, still up.
    for (const p of [a, b]) {
      assert.equal(await p.eval(() => window.M.conns.size), 1);
      assert.equal(await p.eval(() => [...window.M.conns.values()][0].closed), false);
    }
  }));

  test('both sides add a video track at the same moment: both get the other\'s frames', { timeout: 90_000 }, suite.wrap(async (t) => {
    const a = await mediaPage();
    const b = await mediaPage();
    await a.eval(async (T, peer) => { window.M.track(await window.M.client.connect(peer)); }, b.peerId);
    await b.waitFor(() => window.M.conns.size === 1, null, { what: 'B has the connection' });
    // Both add at one agreed instant: their offers cross (perfect negotiation resolves it).
    const at = Date.now() + 1500;
    const add = async (T, arg) => {
      const M = window.M;
      const media = await navigator.mediaDevices.getUserMedia({ video: true });
      while (Date.now() < arg.at) await new Promise((r) => setTimeout(r, 1));
      M.conns.get(arg.peer).addTrack(media.getVideoTracks()[0], media);
    };
    await Promise.all([a.eval(add, { at, peer: b.peerId }), b.eval(add, { at, peer: a.peerId })]);
    await decodedTwice(t, a, b.peerId, 'A receives B (added together)');
    await decodedTwice(t, b, a.peerId, 'B receives A (added together)');
    // The data channel still works both ways and nobody saw a close.
    await a.eval(() => [...window.M.conns.values()][0].channel.send('after'));
    for (const p of [a, b]) {
      assert.equal(await p.eval(() => window.M.conns.size), 1);
      assert.equal(await p.eval(() => [...window.M.conns.values()][0].closed), false);
    }
  }));

  test('a second data channel opened later on pc reaches the peer', { timeout: 60_000 }, suite.wrap(async () => {
    const a = await mediaPage();
    const b = await mediaPage();
    await a.eval(async (T, peer) => { window.M.track(await window.M.client.connect(peer, { label: 'first' })); }, b.peerId);
    await b.waitFor(() => window.M.conns.size === 1, null, { what: 'B has the connection' });
    await a.eval((T, peer) => {
      const ch = window.M.conns.get(peer).pc.createDataChannel('second');
      ch.onopen = () => ch.send('over the second channel');
    }, b.peerId);
    await b.waitFor(() => window.M.messages.includes('second:over the second channel'), null, {
      timeout: 15_000,
      what: 'a message on the second channel',
    });
    assert.deepEqual(await b.eval(() => window.M.channels), ['second']);
  }));
});
