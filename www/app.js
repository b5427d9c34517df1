// Signal Mesh demo chat: everyone in a room (a topic) gets a direct RTCDataChannel to everyone else;
// messages go to all open channels. Uses the npm package exactly as an app would.
//
// URL: http://host:port/#room-name            (room from the hash, default "lobby")
//      ...?servers=ws://a/signal,ws://b/signal (signal nodes to try in order; default this origin)

import { SignalClient } from 'signal-mesh';

const $ = (id) => document.getElementById(id);
const ui = {
  state: $('state'),
  me: $('me'),
  room: $('room'),
  roomForm: $('room-form'),
  peerList: $('peer-list'),
  peerCount: $('peer-count'),
  noPeers: $('no-peers'),
  log: $('log'),
  sendForm: $('send-form'),
  nick: $('nick'),
  text: $('text'),
};

const params = new URLSearchParams(location.search);
const servers = params.get('servers')
  ? params.get('servers').split(',').map((s) => s.trim()).filter(Boolean)
  : [`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/signal`];

/** peerId -> { peerId, nick, status, conn, retry, timer } */
const peers = new Map();
let client = null;
let room = null; // { name, hex }
const RETRY_MAX_MS = 30_000;

// ----------------------------------------------------------------------------------------------
// Helpers

const short = (peerId) => peerId.slice(0, 8);
const hue = (peerId) => parseInt(peerId.slice(0, 6), 16) % 360;
const time = (ts) => new Date(ts).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });

function roomFromHash() {
  const raw = decodeURIComponent(location.hash.replace(/^#/, '')).trim();
  return raw || 'lobby';
}

async function topicHex(name) {
  // The package hashes string topics with SHA-256; events report topics as hex.
  if (!globalThis.crypto || !crypto.subtle) return null; // not a secure context: no filtering
  const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(name));
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
}

function myNick() {
  return ui.nick.value.trim() || `guest-${client ? client.peerId.slice(0, 4) : ''}`;
}

function logLine(kind, parts) {
  const li = document.createElement('li');
  li.className = kind;
  if (kind === 'system') {
    li.textContent = parts.text;
  } else {
    const head = document.createElement('div');
    head.className = 'meta';
    const who = document.createElement('span');
    who.className = 'who';
    who.textContent = parts.nick;
    if (parts.peerId) who.style.setProperty('--hue', hue(parts.peerId));
    const when = document.createElement('time');
    when.textContent = time(parts.ts);
    head.append(who, when);
    const body = document.createElement('div');
    body.className = 'bubble';
    body.textContent = parts.text;
    li.append(head, body);
  }
  const atBottom = ui.log.scrollHeight - ui.log.scrollTop - ui.log.clientHeight < 40;
  ui.log.append(li);
  while (ui.log.children.length > 500) ui.log.firstElementChild.remove();
  if (atBottom || kind === 'mine') ui.log.scrollTop = ui.log.scrollHeight;
}

const system = (text) => logLine('system', { text });

function render() {
  ui.peerList.replaceChildren();
  const list = [...peers.values()].sort((a, b) => a.peerId.localeCompare(b.peerId));
  for (const p of list) {
    const li = document.createElement('li');
    li.dataset.status = p.status;
    li.style.setProperty('--hue', hue(p.peerId));
    const dot = document.createElement('span');
    dot.className = 'dot';
    const name = document.createElement('span');
    name.className = 'name';
    name.textContent = p.nick || 'unknown';
    const id = document.createElement('code');
    id.textContent = short(p.peerId);
    id.title = p.peerId;
    const status = document.createElement('span');
    status.className = 'status';
    status.textContent = p.status;
    li.append(dot, name, id, status);
    ui.peerList.append(li);
  }
  const connected = list.filter((p) => p.status === 'connected').length;
  ui.peerCount.textContent = list.length ? `${connected}/${list.length}` : '0';
  ui.noPeers.hidden = list.length > 0;
}

function setState(state) {
  ui.state.textContent = state;
  ui.state.dataset.state = state;
}

// ----------------------------------------------------------------------------------------------
// Peers and channels

function peer(peerId) {
  let p = peers.get(peerId);
  if (!p) {
    p = { peerId, nick: null, status: 'found', conn: null, retry: 0, timer: null };
    peers.set(peerId, p);
  }
  return p;
}

function discovered(peerId) {
  if (!client || peerId === client.peerId) return;
  const isNew = !peers.has(peerId);
  const p = peer(peerId);
  if (isNew) render();
  maybeConnect(p);
}

function forget(peerId) {
  const p = peers.get(peerId);
  if (!p) return;
  clearTimeout(p.timer);
  peers.delete(peerId);
  if (p.conn) p.conn.close();
  if (p.nick) system(`${p.nick} left`);
  render();
}

/** The lower peer id dials; the other waits, and dials itself only if nothing arrives. */
function maybeConnect(p, delayMs = 0) {
  if (p.conn || p.status === 'connecting' || p.timer) return;
  const iDial = client.peerId < p.peerId;
  const wait = iDial ? delayMs : Math.max(delayMs, 4000);
  if (!iDial) {
    p.status = 'waiting';
    render();
  }
  p.timer = setTimeout(() => {
    p.timer = null;
    if (peers.get(p.peerId) === p && !p.conn) dial(p);
  }, wait);
}

async function dial(p) {
  p.status = 'connecting';
  render();
  try {
    const conn = await client.connect(p.peerId, { label: 'chat' });
    adopt(conn);
  } catch (err) {
    if (peers.get(p.peerId) !== p || p.conn) return;
    console.warn(`connect to ${short(p.peerId)} failed:`, err.code, err.message);
    if (err.code === 'PEER_NOT_FOUND') {
      forget(p.peerId);
      return;
    }
    p.status = err.code === 'REJECTED' ? 'rejected' : 'retrying';
    p.retry += 1;
    render();
    const backoff = Math.min(RETRY_MAX_MS, 1000 * 2 ** p.retry) * (0.75 + Math.random() / 2);
    maybeConnect(p, backoff);
  }
}

function adopt(conn) {
  const p = peer(conn.peerId);
  if (p.conn === conn) return;
  clearTimeout(p.timer);
  p.timer = null;
  p.conn = conn;
  p.status = 'connected';
  p.retry = 0;
  const ch = conn.channel;
  ch.addEventListener('message', (e) => onMessage(p, e.data));
  ch.addEventListener('close', () => {
    if (p.conn !== conn) return;
    p.conn = null;
    p.status = 'disconnected';
    render();
    if (peers.get(p.peerId) === p) maybeConnect(p, 1000);
  });
  sendTo(p, { t: 'hello', nick: myNick() });
  render();
}

function sendTo(p, msg) {
  if (p.conn && p.conn.channel.readyState === 'open') {
    p.conn.channel.send(JSON.stringify(msg));
    return true;
  }
  return false;
}

function broadcast(msg) {
  let n = 0;
  for (const p of peers.values()) if (sendTo(p, msg)) n += 1;
  return n;
}

function onMessage(p, data) {
  let msg;
  try {
    msg = JSON.parse(data);
  } catch {
    return;
  }
  if (!msg || typeof msg !== 'object') return;
  const nick = typeof msg.nick === 'string' ? msg.nick.slice(0, 24) : null;
  if (msg.t === 'hello' || msg.t === 'nick') {
    const before = p.nick;
    p.nick = nick || `guest-${p.peerId.slice(0, 4)}`;
    if (!before) system(`${p.nick} is here`);
    else if (before !== p.nick) system(`${before} is now ${p.nick}`);
    render();
  } else if (msg.t === 'msg' && typeof msg.text === 'string') {
    if (nick) p.nick = nick;
    logLine('theirs', { nick: p.nick || short(p.peerId), peerId: p.peerId, text: msg.text.slice(0, 2000), ts: Date.now() });
  }
}

// ----------------------------------------------------------------------------------------------
// Rooms

async function refresh() {
  if (!room || !client || client.state !== 'online') return;
  try {
    const ids = await client.lookup(room.name);
    for (const id of ids) discovered(id);
  } catch (err) {
    console.warn('lookup failed:', err.code, err.message);
  }
}

async function enterRoom(name) {
  if (room && room.name === name) return;
  if (room) {
    const old = room;
    room = null;
    for (const id of [...peers.keys()]) forget(id);
    try {
      await client.leave(old.name);
    } catch (err) {
      console.warn('leave failed:', err.code, err.message);
    }
  }
  ui.room.value = name;
  document.title = `${name} · Signal Mesh chat`;
  try {
    await client.join(name);
  } catch (err) {
    system(`Could not join "${name}": ${err.message}`);
    return;
  }
  room = { name, hex: await topicHex(name) };
  system(`You joined room "${name}"`);
  await refresh();
}

// ----------------------------------------------------------------------------------------------
// Start

async function main() {
  ui.nick.value = localStorage.getItem('signal-mesh-nick') || '';
  try {
    client = await SignalClient.create({ servers });
  } catch (err) {
    setState('offline');
    system(`Could not reach a signal node (${servers.join(', ')}): ${err.message}`);
    return;
  }
  ui.me.textContent = short(client.peerId);
  ui.me.title = client.peerId;
  ui.nick.placeholder = `guest-${client.peerId.slice(0, 4)}`;
  setState(client.state);

  client.addEventListener('statechange', (e) => {
    setState(e.detail.state);
    if (e.detail.state === 'online') refresh();
  });
  client.addEventListener('peer-joined', (e) => {
    if (room && (!room.hex || e.detail.topic === room.hex)) discovered(e.detail.peerId);
  });
  client.addEventListener('peer-left', (e) => {
    if (room && (!room.hex || e.detail.topic === room.hex)) forget(e.detail.peerId);
  });
  client.addEventListener('connection', (e) => adopt(e.detail.connection));
  client.addEventListener('error', (e) => console.warn('signal-mesh:', e.detail.error));

  ui.roomForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const name = ui.room.value.trim();
    if (name) location.hash = encodeURIComponent(name);
  });
  window.addEventListener('hashchange', () => enterRoom(roomFromHash()));

  ui.nick.addEventListener('change', () => {
    localStorage.setItem('signal-mesh-nick', ui.nick.value.trim());
    broadcast({ t: 'nick', nick: myNick() });
  });
  ui.sendForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const text = ui.text.value.trim();
    if (!text) return;
    const n = broadcast({ t: 'msg', nick: myNick(), text });
    logLine('mine', { nick: myNick(), peerId: client.peerId, text, ts: Date.now() });
    if (n === 0) system('Nobody is connected yet; the message went nowhere.');
    ui.text.value = '';
  });
  setInterval(refresh, 15_000);
  window.addEventListener('beforeunload', () => client.close());

  // For automated checks of the demo.
  window.demo = { client, peers, broadcast };
  await enterRoom(roomFromHash());
}

main();
