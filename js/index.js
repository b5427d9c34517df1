// Signal Mesh: the JavaScript facade over the WebAssembly client.
//
// `SignalClient` is an EventTarget with promises for requests, like WebSocket and
// RTCPeerConnection. The wasm module is loaded lazily (once) by `SignalClient.create`, so a plain
// ES-module page needs no separate init call; bundlers (Vite) resolve the .wasm through
// `new URL(..., import.meta.url)` in the generated glue.
import init, { create, free, input, poll } from './signal_mesh.js';

let ready;
function loadWasm() {
  if (!ready) {
    ready = init().catch((e) => {
      ready = undefined;
      throw new SignalMeshError('UNSUPPORTED', `could not load the Signal Mesh wasm module: ${e && e.message}`, e);
    });
  }
  return ready;
}

/** An error with a stable `code` (see the README for the list). */
export class SignalMeshError extends Error {
  constructor(code, message, cause) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'SignalMeshError';
    this.code = code;
  }

  /** Turns anything thrown by the wasm engine into a SignalMeshError. */
  static from(e) {
    if (e instanceof SignalMeshError) return e;
    if (e && typeof e.code === 'string') return new SignalMeshError(e.code, e.message, e);
    return new SignalMeshError('INTERNAL', String((e && e.message) || e), e);
  }
}

const fail = (code, message, cause) => Promise.reject(new SignalMeshError(code, message, cause));
const closed = () => fail('CLOSED', 'the client is closed');
const aborted = (signal) => new SignalMeshError('ABORTED', 'the operation was aborted', signal.reason);
const encoder = new TextEncoder();
/** Text for the engine: UTF-8 bytes (the glue then needs no string encoder of its own). */
const utf8 = (s) => encoder.encode(s);
const NONE = new Uint8Array();
const toHex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
const invalid = (message) => new SignalMeshError('INVALID_ARGUMENT', message);
const decoder = new TextDecoder();

/**
 * Reads one output of the engine (`poll(engine)`): [kind, n1, n2, b1, b2, b3], three
 * numbers (unsigned LEB128 varints) then three byte strings (a length, then the bytes), as
 * `src/engine/out.rs` lists them.
 */
function readOutput(b) {
  let i = 0;
  const num = () => {
    let n = 0;
    let m = 1;
    let c;
    do {
      c = b[i++];
      n += (c & 127) * m;
      m *= 128;
    } while (c > 127);
    return n;
  };
  const o = [num(), num(), num()];
  for (let k = 0; k < 3; k++) {
    const n = num();
    o.push(b.subarray(i, (i += n)));
  }
  return o;
}
const text = (b) => decoder.decode(b);
const outputError = (o) => new SignalMeshError(text(o[3]), text(o[4]));

/** `options[key]` when set: a `type` (numbers: non-negative integers), else INVALID_ARGUMENT. */
function option(options, key, type) {
  const v = options == null ? undefined : options[key];
  if (v == null) return undefined;
  if (typeof v !== type || (type === 'number' && !(Number.isInteger(v) && v >= 0))) {
    throw invalid(`${key} must be a ${type === 'number' ? 'non-negative integer' : type}`);
  }
  return v;
}
/** PKCS#8 `PrivateKeyInfo` prefix of an Ed25519 key; the 32-byte seed follows it. */
const PKCS8_ED25519 = [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];

/**
 * The client's identity: an Ed25519 key held by WebCrypto (not extractable) made from a 32-byte
 * seed (random when absent), its public key (the peer id) and a `sign` for the engine. No key
 * code is in the wasm; the public key is read once from an extractable copy's JWK.
 */
async function identity(seed) {
  if (seed != null && !(seed instanceof Uint8Array && seed.length === 32)) {
    const got = seed instanceof Uint8Array ? `, got ${seed.length} bytes` : '';
    throw new SignalMeshError('INVALID_ARGUMENT', `identity must be a 32-byte Ed25519 seed${got}`);
  }
  const subtle = crypto.subtle;
  const pkcs8 = new Uint8Array(48);
  pkcs8.set(PKCS8_ED25519);
  pkcs8.set(seed ?? crypto.getRandomValues(new Uint8Array(32)), 16);
  try {
    const key = (extractable) => subtle.importKey('pkcs8', pkcs8, 'Ed25519', extractable, ['sign']);
    const { x } = await subtle.exportKey('jwk', await key(true));
    const signer = await key(false);
    const peerId = Uint8Array.from(atob(x.replace(/-/g, '+').replace(/_/g, '/')), (c) => c.charCodeAt(0));
    return { peerId, sign: async (m) => new Uint8Array(await subtle.sign('Ed25519', signer, m)) };
  } catch (e) {
    throw new SignalMeshError('UNSUPPORTED', `this browser's WebCrypto lacks Ed25519 (${e && e.message})`, e);
  } finally {
    pkcs8.fill(0);
  }
}

/** Most topic names remembered for `detail.topicName` (the oldest is forgotten first). */
const MAX_NAMES = 1024;
/** The longest topic name, in UTF-8 bytes (the protocol's limit). */
const MAX_TOPIC_NAME_BYTES = 1024;

/** Adds the tracks of `streams` that `pc` does not send yet. */
function addStreams(conn, streams) {
  if (!streams) return;
  const sending = new Set(conn.pc.getSenders().map((s) => s.track));
  for (const stream of streams) {
    for (const track of stream.getTracks()) if (!sending.has(track)) conn.addTrack(track, stream);
  }
}

/**
 * A direct connection to another peer; `channel` is open when handed out. Fires `close`, and
 * `track` (an `RTCTrackEvent`) for every remote track. Adding or removing tracks, or data
 * channels on `pc`, renegotiates through the signal nodes (perfect negotiation).
 */
export class PeerConnection extends EventTarget {
  #bye;
  #closed = false;

  constructor(bye, raw) {
    super();
    this.#bye = bye;
    this.peerId = raw.peerId;
    this.pc = raw.pc;
    this.channel = raw.channel;
    Object.defineProperty(this, 'peerId', { writable: false });
    Object.defineProperty(this, 'pc', { writable: false });
    Object.defineProperty(this, 'channel', { writable: false });
    this.channel.addEventListener('close', () => this._closed());
    this.pc.addEventListener('track', (e) => {
      const { receiver, track, streams, transceiver } = e;
      this.dispatchEvent(new RTCTrackEvent('track', { receiver, track, streams, transceiver }));
    });
  }

  /** Sends `track` to the peer (as `RTCPeerConnection.addTrack`); renegotiates. */
  addTrack(track, ...streams) {
    return this.pc.addTrack(track, ...streams);
  }

  /** Stops sending the track of `sender`; renegotiates. */
  removeTrack(sender) {
    this.pc.removeTrack(sender);
  }

  /** Whether the connection is closed. */
  get closed() {
    return this.#closed;
  }

  /** Closes the connection; the remote peer is told and sees its channel close. */
  close() {
    if (this.#closed) return;
    this.#bye();
    this._closed();
  }

  /** @internal */
  _closed() {
    if (this.#closed) return;
    this.#closed = true;
    try { this.channel.close(); } catch { /* already closed */ }
    try { this.pc.close(); } catch { /* already closed */ }
    this.dispatchEvent(new Event('close'));
  }
}

/** Most members a room tracks (and connects to) unless `maxPeers` says fewer. */
const MAX_ROOM_PEERS = 256;
/** First and largest delay before a room dials a member again after a failure. */
const ROOM_RETRY_MS = 250;
const ROOM_RETRY_MAX_MS = 10_000;

/**
 * The members of one topic and a connection to each (`SignalClient.room`). With `autoConnect`
 * the lower peer id of each pair dials, so a pair never connects twice; a connection lost while
 * both are still members is dialed again. Fires `peer` ({ peerId, connection }) when a member's
 * connection is open and `peer-left` ({ peerId }) when a member leaves (its connection is closed).
 */
export class Room extends EventTarget {
  #client;
  #topic;
  #hex;
  #auto;
  #max;
  #announce;
  #left = false;
  #members = new Set();
  #dialing = new Set();
  #timers = new Map();
  #attempts = new Map();
  #off = [];

  /** Member peer id -> its open `PeerConnection`. */
  peers = new Map();

  constructor(client, topic, options = {}, token) {
    super();
    if (token !== CREATE) throw new TypeError('use client.room(topic, options)');
    this.#client = client;
    this.#topic = topic;
    this.#auto = options.autoConnect !== false;
    this.#announce = options.announce !== false;
    this.#max = Math.max(1, Math.min(options.maxPeers ?? MAX_ROOM_PEERS, MAX_ROOM_PEERS));
    /** Resolves once joined and the members already there are known. */
    this.ready = this.#start();
    this.ready.catch(() => {});
  }

  /** The topic as given. */
  get topic() {
    return this.#topic;
  }

  async #start() {
    const t = this.#topic;
    const bytes = typeof t === 'string' ? new Uint8Array(await crypto.subtle.digest('SHA-256', encoder.encode(t))) : t;
    this.#hex = toHex(bytes);
    const on = (type, f) => {
      this.#client.addEventListener(type, f);
      this.#off.push(() => this.#client.removeEventListener(type, f));
    };
    on('peer-joined', (e) => { if (e.detail.topic === this.#hex) this.#add(e.detail.peerId); });
    on('peer-left', (e) => { if (e.detail.topic === this.#hex) this.#remove(e.detail.peerId); });
    on('connection', (e) => this.#claim(e.detail.connection));
    await this.#client.join(t, { announce: this.#announce });
    for (const p of await this.#client.lookup(t, { limit: this.#max + 1 })) this.#add(p);
  }

  #add(peer) {
    if (this.#left || peer === this.#client.peerId || this.#members.has(peer)) return;
    if (this.#members.size >= this.#max) return;
    this.#members.add(peer);
    const conn = this.#client._connectionTo(peer);
    if (conn) this.#claim(conn);
    else this.#dial(peer);
  }

  #remove(peer) {
    if (!this.#members.delete(peer)) return;
    clearTimeout(this.#timers.get(peer));
    this.#timers.delete(peer);
    this.#attempts.delete(peer);
    const conn = this.peers.get(peer);
    this.peers.delete(peer);
    if (conn) conn.close();
    this.dispatchEvent(new CustomEvent('peer-left', { detail: { peerId: peer } }));
  }

  async #dial(peer) {
    if (!this.#auto || this.#left || !(this.#client.peerId < peer) || !this.#members.has(peer)) return;
    if (this.peers.has(peer) || this.#dialing.has(peer) || this.#timers.has(peer)) return;
    this.#dialing.add(peer);
    try {
      this.#claim(await this.#client.connect(peer));
      this.#attempts.delete(peer);
    } catch {
      this.#retry(peer);
    } finally {
      this.#dialing.delete(peer);
    }
  }

  #retry(peer) {
    if (this.#left || !this.#members.has(peer) || this.#timers.has(peer)) return;
    const n = this.#attempts.get(peer) ?? 0;
    this.#attempts.set(peer, n + 1);
    const delay = Math.min(ROOM_RETRY_MS * 2 ** n, ROOM_RETRY_MAX_MS);
    this.#timers.set(peer, setTimeout(() => { this.#timers.delete(peer); this.#dial(peer); }, delay));
  }

  #claim(conn) {
    const peer = conn.peerId;
    if (this.#left || !this.#members.has(peer) || conn.closed || this.peers.get(peer) === conn) return;
    this.peers.set(peer, conn);
    conn.addEventListener('close', () => {
      if (this.peers.get(peer) !== conn) return;
      this.peers.delete(peer);
      this.#retry(peer);
    });
    this.dispatchEvent(new CustomEvent('peer', { detail: { peerId: peer, connection: conn } }));
  }

  /** Sends `data` on the data channel of every open member connection; returns how many. */
  send(data) {
    let n = 0;
    for (const conn of this.peers.values()) {
      if (conn.channel.readyState === 'open') {
        conn.channel.send(data);
        n++;
      }
    }
    return n;
  }

  /** Leaves the topic and closes the members' connections. */
  async leave() {
    if (this.#left) return;
    this.#left = true;
    for (const off of this.#off) off();
    for (const t of this.#timers.values()) clearTimeout(t);
    this.#timers.clear();
    const conns = [...this.peers.values()];
    this.peers.clear();
    this.#members.clear();
    for (const c of conns) c.close();
    await this.ready.catch(() => {});
    await this.#client.leave(this.#topic).catch(() => {});
  }
}

/**
 * A client of the Signal Mesh: discovery on topics and WebRTC signaling through signal nodes.
 *
 * It drives its wasm engine (a number), which decides everything and does nothing: each
 * input goes in with the time (`#call`), then `#pump` carries out the engine's outputs (open,
 * close and write the WebSocket, sign, drive the `RTCPeerConnection`s, settle promises, dispatch
 * events) and arms one `setTimeout` for its next deadline.
 */
export class SignalClient extends EventTarget {
  #engine;
  #closed = false;
  #state = 'connecting';
  #connections = new Map();
  #peerId;
  #sign;
  /** [resolve, reject] of `create()` until the first authentication. */
  #start;
  /** Operation id -> [resolve, reject]. */
  #ops = new Map();
  /** The WebSocket of the current attempt: { conn, ws }. */
  #socket;
  #timer;
  #at = 0;
  /** Topic id hex -> the name the app used, for `detail.topicName`. */
  #names = new Map();
  /** Topic ids in call order: `join(name); leave(name)` joins before it leaves. */
  #topics = Promise.resolve();
  /** Peer id -> streams `onIncoming` answered with, added once the connection is open. */
  #answerStreams = new Map();
  /** Engine handle -> { pc, channel, queue }: the RTCPeerConnections the engine drives. */
  #pcs = new Map();
  #iceServers;

  /**
   * Called for every incoming connection offer with the remote peer id; return (or resolve to)
   * `false` to reject, or `{ accept: true, streams }` to accept and send media. Accepts
   * everything when unset.
   * @type {((peerId: string) => IncomingDecision | Promise<IncomingDecision>) | null}
   */
  onIncoming = null;

  constructor(token) {
    super();
    if (token !== CREATE) throw new TypeError('use SignalClient.create(options)');
  }

  /** Connects and authenticates with the first reachable node of `options.servers`. */
  static async create(options) {
    await loadWasm();
    const servers = options && options.servers;
    if (!Array.isArray(servers) || !servers.length || !servers.every((u) => /^wss?:\/\/\S+$/.test(u))) {
      throw invalid('servers must be a non-empty array of ws:// or wss:// URLs');
    }
    const timeout = option(options, 'connectTimeoutMs', 'number');
    if (timeout === 0 || timeout >= 2 ** 32) throw invalid('connectTimeoutMs must be positive (and below 2^32)');
    const ice = options.iceServers;
    if (ice !== undefined && !Array.isArray(ice)) throw invalid('iceServers must be an array of RTCIceServer');
    const id = await identity(options.identity);
    const client = new SignalClient(CREATE);
    client.#iceServers = ice;
    client.#sign = id.sign;
    client.#peerId = toHex(id.peerId);
    // The engine's config: the public key, 8 random bytes (its seed), the URLs one per line.
    const urls = utf8(servers.join('\n'));
    const config = new Uint8Array(40 + urls.length);
    config.set(id.peerId);
    crypto.getRandomValues(config.subarray(32, 40));
    config.set(urls, 40);
    client.#engine = create(Date.now(), config, timeout || 0);
    await new Promise((resolve, reject) => {
      client.#start = [resolve, reject];
      client.#pump();
    });
    return client;
  }

  /** Lowercase hex of this client's 32-byte public key. */
  get peerId() {
    return this.#peerId;
  }

  /** 'connecting' | 'online' | 'offline' | 'closed' */
  get state() {
    return this.#closed ? 'closed' : this.#state;
  }

  /** Joins (and by default announces on) a topic: a string name or 32 bytes. */
  join(topic, options) {
    return this.#topicOp(topic, (id) => [16, +(option(options, 'announce', 'boolean') ?? true), 0, id]);
  }

  /** Leaves a topic. */
  leave(topic) {
    return this.#topicOp(topic, (id) => [17, 0, 0, id]);
  }

  /** Peer ids announced on a topic; `options.signal` aborts it. */
  lookup(topic, options) {
    return this.#topicOp(topic, (id) => [18, 0, option(options, 'limit', 'number') ?? -1, id], options && options.signal);
  }

  /**
   * Opens a WebRTC data channel to a peer; `options.streams` are sent as media (added once the
   * channel is open), `options.signal` aborts it.
   */
  async connect(peerId, options) {
    const raw = await this.#op(options && options.signal, () => {
      if (!/^[0-9a-f]{64}$/i.test(peerId)) throw invalid('a peer id must be a string of 64 hex characters');
      const label = option(options, 'label', 'string') ?? 'signal-mesh';
      // The peer id's 32 bytes, then the label.
      return [19, 0, 0, Uint8Array.of(...peerId.match(/../g).map((h) => parseInt(h, 16)), ...utf8(label))];
    });
    const conn = this.#wrapConnection(raw);
    addStreams(conn, options && options.streams);
    return conn;
  }

  /**
   * The members of `topic` with a connection to each: joins, finds who is there and keeps up
   * with joins and leaves. Options: `announce` (true), `autoConnect` (true), `maxPeers` (256).
   */
  room(topic, options) {
    return new Room(this, topic, options, CREATE);
  }

  /** @internal The open connection to `peerId`, if any. */
  _connectionTo(peerId) {
    for (const c of this.#connections.values()) if (c.peerId === peerId && !c.closed) return c;
    return undefined;
  }

  /** Closes every connection and the link to the node, and frees the wasm engine. */
  async close() {
    const engine = this.#engine;
    if (this.#closed || !engine) return;
    this.#closed = true;
    // Says bye to connected peers and settles what is pending, then stops.
    this.#call(15);
    this.#engine = undefined;
    clearTimeout(this.#timer);
    this.#closeSocket();
    for (const c of this.#connections.values()) c._closed();
    this.#connections.clear();
    for (const r of this.#pcs.values()) r.pc.close();
    this.#pcs.clear();
    this.#names.clear();
    // The engine holds no JavaScript value and is never on the stack while JavaScript runs.
    free(engine);
  }

  /** `await using client = await SignalClient.create(...)` closes it at the end of the scope. */
  [Symbol.asyncDispose ?? Symbol.for('Symbol.asyncDispose')]() {
    return this.close();
  }

  /**
   * Feeds one input to the engine (`kind`, two numbers, bytes: see `Engine::input` in
   * `src/engine/mod.rs`), then carries out what it produced.
   */
  #call(kind, a = 0, b = 0, bytes = NONE) {
    const e = this.#engine;
    if (!e) return;
    input(e, Date.now(), kind, a, b, bytes);
    this.#pump();
  }

  /**
   * Carries out the engine's outputs in order; the last one (kind 23) says when to tick next
   * (its time + 1; 0: no timer).
   */
  #pump() {
    const e = this.#engine;
    // An output may close the client (a listener calls close()): then the rest is dropped.
    while (e && this.#engine === e) {
      const o = readOutput(poll(e));
      if (o[0] === 23) {
        const at = o[1];
        if (at === this.#at) return;
        clearTimeout(this.#timer);
        this.#at = at;
        if (at) {
          const tick = () => {
            this.#at = 0;
            this.#call(8);
          };
          this.#timer = setTimeout(tick, Math.min(at - 1 - Date.now(), 2 ** 31 - 1));
        }
        return;
      }
      // A browser call that throws must not strand the outputs after it.
      try {
        this.#out(o);
      } catch (error) {
        this.#dispatch('error', { error: SignalMeshError.from(error) });
      }
    }
  }

  /** Carries out one output: [kind, n1, n2, b1, b2, b3] as `src/engine/out.rs` numbers them. */
  #out(o) {
    const [kind, n, m, a, b, c] = o;
    if (kind < 4) {
      const s = this.#socket;
      if (kind === 0) this.#open(n, text(a));
      else if (kind === 3) this.#signChallenge(n, a.slice());
      else if (s && s.conn === n) {
        if (kind === 1) this.#closeSocket();
        else {
          // Dropped when the socket is not open; the engine times out what it waits for.
          try { s.ws.send(a); } catch { /* not open */ }
        }
      }
      return;
    }
    if (kind < 10) {
      const k = kind - 4;
      // 0 create (initiator, label), 1 create an offer (ICE restart), 2 / 3 apply an offer / an
      // answer (SDP), 4 add a candidate (candidate, mid, m-line index or -1, username fragment),
      // 5 close
      if (k < 2) this.#rtc(k, n, m, text(a));
      else this.#rtc(k, n, text(a), text(b), m - 1, text(c));
      return;
    }
    switch (kind) {
      case 10:
        this.#state = text(a);
        this.#dispatch('statechange', { state: this.#state });
        break;
      case 11:
      case 12: {
        const start = this.#start;
        this.#start = undefined;
        if (kind === 11) start?.[0]();
        else {
          start?.[1](outputError(o));
          this.close();
        }
        break;
      }
      case 13:
      case 14:
      case 15:
      case 16: {
        const p = this.#ops.get(n);
        if (!p) break;
        this.#ops.delete(n);
        if (kind === 16) p[1](outputError(o));
        else if (kind === 15) p[0]({ handle: m, peerId: toHex(a) });
        else if (kind === 13) p[0]();
        else {
          const peers = [];
          for (let i = 0; i < a.length; i += 32) peers.push(toHex(a.subarray(i, i + 32)));
          p[0](peers);
        }
        break;
      }
      case 17:
      case 18: {
        const detail = { topic: toHex(a), peerId: toHex(b) };
        const name = this.#names.get(detail.topic);
        if (name !== undefined) detail.topicName = name;
        this.#dispatch(kind === 17 ? 'peer-joined' : 'peer-left', detail);
        break;
      }
      case 19:
        this.#incoming(n, toHex(a));
        break;
      case 20: {
        let conn;
        try {
          conn = this.#wrapConnection({ handle: n, peerId: toHex(a) });
        } catch {
          break; // its RTCPeerConnection is gone already
        }
        addStreams(conn, this.#answerStreams.get(conn.peerId));
        this.#answerStreams.delete(conn.peerId);
        this.#dispatch('connection', { connection: conn });
        break;
      }
      case 21:
        this.#connections.get(n)?._closed();
        break;
      case 22:
        this.#dispatch('error', { error: outputError(o) });
        break;
      default:
    }
  }

  #dispatch(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  /** Opens the WebSocket of attempt `conn` (the previous one is closed). */
  #open(conn, url) {
    this.#closeSocket();
    let ws;
    try {
      ws = new WebSocket(url);
    } catch {
      // An invalid URL fails like an unreachable node: the engine moves on to the next.
      this.#call(10, conn, 0);
      return;
    }
    ws.binaryType = 'arraybuffer';
    // Text frames are not part of the protocol; they are ignored.
    ws.onmessage = ({ data }) => {
      if (data instanceof ArrayBuffer) this.#call(9, conn, 0, new Uint8Array(data));
    };
    ws.onclose = ({ code }) => this.#call(10, conn, code);
    this.#socket = { conn, ws };
  }

  #closeSocket() {
    const s = this.#socket;
    if (!s) return;
    this.#socket = undefined;
    s.ws.onmessage = s.ws.onclose = null;
    s.ws.close(1000);
  }

  /** Signs the challenge of attempt `conn` with the identity. */
  #signChallenge(conn, message) {
    this.#sign(message).then(
      (sig) => this.#call(11, conn, 0, sig),
      (error) => {
        if (this.#engine) this.#dispatch('error', { error: new SignalMeshError('BROWSER_ERROR', 'signing the challenge failed', error) });
      },
    );
  }

  /** Asks `onIncoming` about an offer from `peerId` (a throw or a rejection refuses it). */
  async #incoming(handle, peerId) {
    let accept = false;
    try {
      const hook = this.onIncoming;
      const r = await (typeof hook === 'function' ? hook.call(this, peerId) : true);
      accept = r !== null && typeof r === 'object' ? !!r.accept : !!r;
      if (accept && r.streams) {
        const m = this.#answerStreams;
        m.delete(peerId);
        m.set(peerId, r.streams);
        if (m.size > 256) m.delete(m.keys().next().value);
      }
    } catch (error) {
      this.#dispatch('error', { error: SignalMeshError.from(error) });
    }
    this.#call(12, handle, +accept);
  }

  /**
   * Starts an operation, the input `start()` returns ([kind, a, b, bytes]; it may throw for bad
   * arguments), and returns its promise; `signal` aborts it (the promise rejects with `ABORTED`).
   */
  #op(signal, start) {
    const e = this.#engine;
    if (!e) return closed();
    if (signal && signal.aborted) return Promise.reject(aborted(signal));
    let op;
    // Registered before any output runs: an operation may complete at once. One that failed at
    // once is operation 0, and its failure the next output.
    const p = new Promise((resolve, reject) => {
      op = input(e, Date.now(), ...start());
      this.#ops.set(op, [resolve, reject]);
    });
    this.#pump();
    if (!signal || !op) return p;
    const abort = () => this.#call(13, op);
    signal.addEventListener('abort', abort, { once: true });
    return p.finally(() => signal.removeEventListener('abort', abort));
  }

  /**
   * Resolves `topic` to its 32 bytes (names hashed with SHA-256 in call order), then starts the
   * operation `start(bytes)` returns (see `#op`).
   */
  #topicOp(topic, start, signal) {
    if (!this.#engine) return closed();
    let id;
    if (typeof topic === 'string') {
      const bytes = encoder.encode(topic);
      if (bytes.length > MAX_TOPIC_NAME_BYTES) {
        return fail('INVALID_ARGUMENT', `topic name is ${bytes.length} bytes; at most ${MAX_TOPIC_NAME_BYTES} are allowed`);
      }
      id = this.#topics.then(() => crypto.subtle.digest('SHA-256', bytes)).then((d) => {
        const b = new Uint8Array(d);
        const hex = toHex(b);
        this.#names.delete(hex);
        this.#names.set(hex, topic);
        if (this.#names.size > MAX_NAMES) this.#names.delete(this.#names.keys().next().value);
        return b;
      });
    } else if (topic instanceof Uint8Array && topic.length === 32) {
      id = this.#topics.then(() => topic);
    } else {
      return fail('INVALID_ARGUMENT', 'a topic must be a string or a 32-byte Uint8Array');
    }
    this.#topics = id.catch(() => {});
    return id.then(
      (b) => this.#op(signal, () => start(b)),
      (e) => fail('BROWSER_ERROR', `hashing the topic name failed: ${e && e.message}`, e),
    );
  }

  /**
   * Carries out one WebRTC command of the engine on the `RTCPeerConnection` of handle `h`, in
   * order per connection, and reports back what the browser does (inputs 0-7): `kind`
   * 0 create (`a` initiator, `b` label), 1 create an offer (`a` ICE restart), 2 apply an offer
   * (`a` SDP), 3 apply an answer (`a` SDP), 4 add a candidate (`a` candidate, `b` mid, `c` m-line
   * index or -1, `d` username fragment), 5 close.
   */
  #rtc(kind, h, a, b, c, d) {
    let r = this.#pcs.get(h);
    const report = (k, n = 0, x = '', y = '', z = '') => {
      if (this.#pcs.get(h) === r) this.#call(k, h, n, utf8(`${x}\0${y}\0${z}`));
    };
    if (kind === 0) {
      let pc;
      try {
        pc = new RTCPeerConnection(this.#iceServers ? { iceServers: this.#iceServers } : undefined);
      } catch (e) {
        report(7, 0, `new RTCPeerConnection failed: ${e && e.message}`);
        return;
      }
      r = { pc, channel: null, queue: Promise.resolve() };
      this.#pcs.set(h, r);
      const attach = (ch) => {
        r.channel = ch;
        ch.addEventListener('open', () => report(2));
        ch.addEventListener('close', () => report(6, 0, 'the data channel closed'));
        if (ch.readyState === 'open') report(2);
      };
      pc.addEventListener('icecandidate', ({ candidate: x }) => {
        if (x && x.candidate) report(1, x.sdpMLineIndex ?? -1, x.candidate, x.sdpMid ?? '', x.usernameFragment ?? '');
      });
      pc.addEventListener('negotiationneeded', () => report(5));
      pc.addEventListener('iceconnectionstatechange', () => {
        const s = pc.iceConnectionState;
        if (s === 'failed') report(3);
        else if (s === 'connected' || s === 'completed') report(4);
      });
      if (a) attach(pc.createDataChannel(b));
      else pc.addEventListener('datachannel', (e) => { if (!r.channel) attach(e.channel); });
      return;
    }
    if (!r) return;
    if (kind === 5) {
      this.#pcs.delete(h);
      if (r.channel) r.channel.close();
      r.pc.close();
      return;
    }
    const { pc } = r;
    // After a renegotiation ICE may simply stay connected: report it so the engine stops waiting.
    const connected = () => {
      if (/^(connected|completed)$/.test(pc.iceConnectionState)) report(4);
    };
    const local = async (desc) => {
      await pc.setLocalDescription(desc);
      report(0, desc.type === 'offer' ? 1 : 0, pc.localDescription.sdp);
    };
    r.queue = r.queue.then(async () => {
      if (this.#pcs.get(h) !== r) return;
      if (kind === 1) {
        await local(await pc.createOffer({ iceRestart: !!a }));
      } else if (kind === 2) {
        await pc.setRemoteDescription({ type: 'offer', sdp: a });
        await local(await pc.createAnswer());
        connected();
      } else if (kind === 3) {
        await pc.setRemoteDescription({ type: 'answer', sdp: a });
        connected();
      } else if (kind === 4) {
        // A candidate the browser cannot use is not fatal: others may work.
        await pc.addIceCandidate({ candidate: a, sdpMid: b, sdpMLineIndex: c < 0 ? null : c, usernameFragment: d || undefined }).catch(() => {});
      }
    }).catch((e) => report(7, 0, `WebRTC failed: ${e && e.message}`));
  }

  #wrapConnection(raw) {
    const h = raw.handle;
    let conn = this.#connections.get(h);
    if (!conn) {
      const r = this.#pcs.get(h);
      if (!r || !r.channel) throw new SignalMeshError('CLOSED', 'the connection closed');
      conn = new PeerConnection(() => this.#call(14, h), { ...raw, pc: r.pc, channel: r.channel });
      this.#connections.set(h, conn);
      conn.addEventListener('close', () => this.#connections.delete(h));
    }
    return conn;
  }
}

const CREATE = Symbol('create');

export default SignalClient;
