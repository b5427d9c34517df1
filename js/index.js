// Signal Mesh: the JavaScript facade over the WebAssembly client.
//
// `SignalClient` is an EventTarget with promises for requests, like WebSocket and
// RTCPeerConnection. The wasm module is loaded lazily (once) by `SignalClient.create`, so a plain
// ES-module page needs no separate init call; bundlers (Vite) resolve the .wasm through
// `new URL(..., import.meta.url)` in the generated glue.
import init, { WasmClient } from './signal_mesh.js';

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

const wrap = (p) => p.catch((e) => { throw SignalMeshError.from(e); });
const fail = (code, message, cause) => Promise.reject(new SignalMeshError(code, message, cause));
const closed = () => fail('CLOSED', 'the client is closed');
const aborted = (signal) => new SignalMeshError('ABORTED', 'the operation was aborted', signal.reason);
const encoder = new TextEncoder();
const toHex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
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
  #engine;
  #handle;
  #closed = false;

  constructor(engine, raw) {
    super();
    this.#engine = engine;
    this.#handle = raw.handle;
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
    try { this.#engine.closeConnection(this.#handle); } catch { /* the client is closed */ }
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

/** A client of the Signal Mesh: discovery on topics and WebRTC signaling through signal nodes. */
export class SignalClient extends EventTarget {
  #engine;
  #closed = false;
  #connections = new Map();
  #peerId;
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
    const client = new SignalClient(CREATE);
    const emit = (type, detail) => client.#emit(type, detail);
    const incoming = async (peerId) => {
      const hook = client.onIncoming;
      const r = typeof hook === 'function' ? await hook.call(client, peerId) : true;
      if (r === null || typeof r !== 'object') return !!r;
      if (r.accept && r.streams) {
        const m = client.#answerStreams;
        m.delete(peerId);
        m.set(peerId, r.streams);
        if (m.size > 256) m.delete(m.keys().next().value);
      }
      return !!r.accept;
    };
    const ice = options && options.iceServers;
    if (ice !== undefined && !Array.isArray(ice)) {
      throw new SignalMeshError('INVALID_ARGUMENT', 'iceServers must be an array of RTCIceServer');
    }
    client.#iceServers = ice;
    const id = await identity(options && options.identity);
    const engine = { ...options, identity: undefined, peerId: id.peerId, entropy: crypto.getRandomValues(new Uint8Array(8)) };
    const rtc = (kind, h, a, b, c, d) => client.#rtc(kind, h, a, b, c, d);
    client.#engine = await wrap(WasmClient.create(engine, emit, incoming, id.sign, rtc));
    client.#peerId = client.#engine.peerId;
    return client;
  }

  /** Lowercase hex of this client's 32-byte public key. */
  get peerId() {
    return this.#peerId;
  }

  /** 'connecting' | 'online' | 'offline' | 'closed' */
  get state() {
    if (this.#closed) return 'closed';
    return this.#engine ? this.#engine.state : 'connecting';
  }

  /** Joins (and by default announces on) a topic: a string name or 32 bytes. */
  join(topic, options) {
    return this.#topicOp(topic, (e, id) => e.join(id, options));
  }

  /** Leaves a topic. */
  leave(topic) {
    return this.#topicOp(topic, (e, id) => e.leave(id));
  }

  /** Peer ids announced on a topic; `options.signal` aborts it. */
  lookup(topic, options) {
    return this.#topicOp(topic, (e, id) => e.lookup(id, options), options && options.signal);
  }

  /**
   * Opens a WebRTC data channel to a peer; `options.streams` are sent as media (added once the
   * channel is open), `options.signal` aborts it.
   */
  async connect(peerId, options) {
    const raw = await this.#abortable(options && options.signal, (e) => e.connect(peerId, options));
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
    this.#engine = undefined;
    engine.close();
    for (const c of this.#connections.values()) c._closed();
    this.#connections.clear();
    for (const r of this.#pcs.values()) r.pc.close();
    this.#pcs.clear();
    this.#names.clear();
    // Freed once the current call into the engine (an event listener may be running inside one)
    // has returned: the engine's callbacks capture this client, a cycle no GC can break.
    queueMicrotask(() => engine.free());
  }

  /** `await using client = await SignalClient.create(...)` closes it at the end of the scope. */
  [Symbol.asyncDispose ?? Symbol.for('Symbol.asyncDispose')]() {
    return this.close();
  }

  /** Calls the engine; `signal` aborts the operation (its promise rejects with `ABORTED`). */
  #abortable(signal, call) {
    const engine = this.#engine;
    if (!engine) return closed();
    if (signal && signal.aborted) return Promise.reject(aborted(signal));
    const p = wrap(call(engine));
    if (!signal) return p;
    const op = engine.lastOp;
    const abort = () => { if (this.#engine) this.#engine.cancel(op); };
    signal.addEventListener('abort', abort, { once: true });
    return p.finally(() => signal.removeEventListener('abort', abort));
  }

  /** Resolves `topic` to its 32 bytes (names hashed with SHA-256 in call order), then calls. */
  #topicOp(topic, call, signal) {
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
    } else {
      id = this.#topics.then(() => topic);
    }
    this.#topics = id.catch(() => {});
    return id.then(
      (b) => this.#abortable(signal, (e) => call(e, b)),
      (e) => fail('BROWSER_ERROR', `hashing the topic name failed: ${e && e.message}`, e),
    );
  }

  /**
   * Carries out one WebRTC command of the engine on the `RTCPeerConnection` of handle `h`, in
   * order per connection, and reports back what the browser does (see `rtcReport` in the Rust
   * bindings for the numbering).
   */
  #rtc(kind, h, a, b, c, d) {
    let r = this.#pcs.get(h);
    const report = (k, x, y, z, w) => {
      if (this.#engine && this.#pcs.get(h) === r) this.#engine.rtcReport(h, k, x, y, z, w);
    };
    if (kind === 0) {
      let pc;
      try {
        pc = new RTCPeerConnection(this.#iceServers ? { iceServers: this.#iceServers } : undefined);
      } catch (e) {
        this.#engine?.rtcReport(h, 7, `new RTCPeerConnection failed: ${e && e.message}`);
        return;
      }
      r = { pc, channel: null, queue: Promise.resolve() };
      this.#pcs.set(h, r);
      const attach = (ch) => {
        r.channel = ch;
        ch.addEventListener('open', () => report(2));
        ch.addEventListener('close', () => report(6, 'the data channel closed'));
        if (ch.readyState === 'open') report(2);
      };
      pc.addEventListener('icecandidate', ({ candidate: x }) => {
        if (x && x.candidate) report(1, x.candidate, x.sdpMid, x.sdpMLineIndex, x.usernameFragment);
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
      report(0, desc.type === 'offer', pc.localDescription.sdp);
    };
    r.queue = r.queue.then(async () => {
      if (this.#pcs.get(h) !== r) return;
      if (kind === 1) {
        await local(await pc.createOffer({ iceRestart: a }));
      } else if (kind === 2) {
        await pc.setRemoteDescription({ type: 'offer', sdp: a });
        await local(await pc.createAnswer());
        connected();
      } else if (kind === 3) {
        await pc.setRemoteDescription({ type: 'answer', sdp: a });
        connected();
      } else if (kind === 4) {
        // A candidate the browser cannot use is not fatal: others may work.
        await pc.addIceCandidate({ candidate: a, sdpMid: b, sdpMLineIndex: c, usernameFragment: d || undefined }).catch(() => {});
      }
    }).catch((e) => report(7, `WebRTC failed: ${e && e.message}`));
  }

  #wrapConnection(raw) {
    let conn = this.#connections.get(raw.handle);
    if (!conn) {
      const r = this.#pcs.get(raw.handle);
      if (!r || !r.channel) throw new SignalMeshError('CLOSED', 'the connection closed');
      conn = new PeerConnection(this.#engine, { ...raw, pc: r.pc, channel: r.channel });
      this.#connections.set(raw.handle, conn);
      conn.addEventListener('close', () => this.#connections.delete(raw.handle));
    }
    return conn;
  }

  #emit(type, detail) {
    switch (type) {
      case 'connection': {
        const conn = this.#wrapConnection(detail.connection);
        addStreams(conn, this.#answerStreams.get(conn.peerId));
        this.#answerStreams.delete(conn.peerId);
        detail = { connection: conn };
        break;
      }
      case 'connection-closed': {
        const conn = this.#connections.get(detail.handle);
        if (conn) conn._closed();
        return;
      }
      case 'error':
        detail = { error: SignalMeshError.from(detail.error) };
        break;
      case 'peer-joined':
      case 'peer-left': {
        const name = this.#names.get(detail.topic);
        if (name !== undefined) detail.topicName = name;
        break;
      }
      default:
    }
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

const CREATE = Symbol('create');

export default SignalClient;
