// Sends a file to every member of a room over the data channel, in chunks, with backpressure, and
// checks its SHA-256 on arrival.
import { SignalClient } from 'signal-mesh';

const CHUNK = 64 * 1024;
const HIGH_WATER = 1024 * 1024;
const LOW_WATER = 256 * 1024;

const $ = (id) => document.getElementById(id);
const hex = (buf) => Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, '0')).join('');
const params = new URLSearchParams(location.search);
const room = params.get('room') || 'file-transfer';
const server = params.get('server') || `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/signal`;

/** What the page did, for people and for the end-to-end test. */
const state = { ready: false, peers: 0, sent: null, received: null, error: null };
window.EXAMPLE = state;

function waitLow(channel) {
  return new Promise((resolve) => channel.addEventListener('bufferedamountlow', resolve, { once: true }));
}

async function sendFile(channel, file, digest) {
  channel.bufferedAmountLowThreshold = LOW_WATER;
  channel.send(JSON.stringify({ name: file.name, size: file.size, sha256: digest }));
  const bar = $('send-progress');
  for (let offset = 0; offset < file.size; offset += CHUNK) {
    if (channel.bufferedAmount > HIGH_WATER) await waitLow(channel);
    channel.send(await file.slice(offset, offset + CHUNK).arrayBuffer());
    bar.value = Math.min(1, (offset + CHUNK) / file.size);
  }
}

function receiver(channel) {
  channel.binaryType = 'arraybuffer';
  let incoming = null;
  channel.addEventListener('message', async (e) => {
    if (typeof e.data === 'string') {
      incoming = { ...JSON.parse(e.data), chunks: [], got: 0 };
      $('recv-name').textContent = `${incoming.name} (${incoming.size} bytes)`;
      $('recv-result').textContent = '';
      return;
    }
    if (!incoming) return;
    incoming.chunks.push(e.data);
    incoming.got += e.data.byteLength;
    $('recv-progress').value = incoming.got / incoming.size;
    if (incoming.got < incoming.size) return;
    const file = incoming;
    incoming = null;
    const blob = new Blob(file.chunks);
    const digest = hex(await crypto.subtle.digest('SHA-256', await blob.arrayBuffer()));
    const verified = digest === file.sha256;
    state.received = { name: file.name, size: blob.size, sha256: digest, verified };
    const result = $('recv-result');
    result.className = verified ? 'ok' : 'bad';
    result.textContent = verified ? 'verified (SHA-256 matches) ' : `corrupted: SHA-256 ${digest}`;
    if (verified) {
      const a = document.createElement('a');
      a.href = URL.createObjectURL(blob);
      a.download = file.name;
      a.textContent = 'download';
      result.append(a);
    }
  });
}

async function main() {
  const client = await SignalClient.create({ servers: [server] });
  const r = client.room(room);
  const count = () => { state.peers = r.peers.size; $('peers').textContent = String(r.peers.size); };
  r.addEventListener('peer', (e) => { receiver(e.detail.connection.channel); count(); });
  r.addEventListener('peer-left', count);
  await r.ready;
  state.peerId = client.peerId;
  $('status').textContent = `online as ${client.peerId.slice(0, 8)}…`;
  $('file').disabled = false;
  $('file').addEventListener('change', async () => {
    const file = $('file').files[0];
    if (!file) return;
    $('send-name').textContent = `${file.name} (${file.size} bytes)`;
    const digest = hex(await crypto.subtle.digest('SHA-256', await file.arrayBuffer()));
    const started = performance.now();
    await Promise.all([...r.peers.values()].map((conn) => sendFile(conn.channel, file, digest)));
    state.sent = { name: file.name, size: file.size, sha256: digest, ms: performance.now() - started };
  });
  state.ready = true;
}

main().catch((e) => {
  state.error = String(e && e.message);
  $('status').textContent = `error: ${state.error}`;
});
