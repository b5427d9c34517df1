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

/** A direct connection to another peer; `channel` is open when handed out. Fires `close`. */
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
  }

  /** Whether the connection is closed. */
  get closed() {
    return this.#closed;
  }

  /** Closes the connection; the remote peer is told and sees its channel close. */
  close() {
    if (this.#closed) return;
    this.#engine.closeConnection(this.#handle);
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

/** A client of the Signal Mesh: discovery on topics and WebRTC signaling through signal nodes. */
export class SignalClient extends EventTarget {
  #engine;
  #connections = new Map();
  #peerId;

  /**
   * Called for every incoming connection offer with the remote peer id; return (or resolve to)
   * `false` to reject. Accepts everything when unset.
   * @type {((peerId: string) => boolean | Promise<boolean>) | null}
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
    const incoming = (peerId) => {
      const hook = client.onIncoming;
      return typeof hook === 'function' ? hook.call(client, peerId) : true;
    };
    client.#engine = await wrap(WasmClient.create(options, emit, incoming));
    client.#peerId = client.#engine.peerId;
    return client;
  }

  /** Lowercase hex of this client's 32-byte public key. */
  get peerId() {
    return this.#peerId;
  }

  /** 'connecting' | 'online' | 'offline' | 'closed' */
  get state() {
    return this.#engine ? this.#engine.state : 'connecting';
  }

  /** Joins (and by default announces on) a topic: a string name or 32 bytes. */
  join(topic, options) {
    return wrap(this.#engine.join(topic, options));
  }

  /** Leaves a topic. */
  leave(topic) {
    return wrap(this.#engine.leave(topic));
  }

  /** Peer ids announced on a topic. */
  lookup(topic, options) {
    return wrap(this.#engine.lookup(topic, options));
  }

  /** Opens a WebRTC data channel to a peer. */
  async connect(peerId, options) {
    const raw = await wrap(this.#engine.connect(peerId, options));
    return this.#wrapConnection(raw);
  }

  /** Closes every connection and the link to the node. */
  async close() {
    if (!this.#engine) return;
    this.#engine.close();
    for (const c of this.#connections.values()) c._closed();
    this.#connections.clear();
  }

  #wrapConnection(raw) {
    let conn = this.#connections.get(raw.handle);
    if (!conn) {
      conn = new PeerConnection(this.#engine, raw);
      this.#connections.set(raw.handle, conn);
      conn.addEventListener('close', () => this.#connections.delete(raw.handle));
    }
    return conn;
  }

  #emit(type, detail) {
    switch (type) {
      case 'connection':
        detail = { connection: this.#wrapConnection(detail.connection) };
        break;
      case 'connection-closed': {
        const conn = this.#connections.get(detail.handle);
        if (conn) conn._closed();
        return;
      }
      case 'error':
        detail = { error: SignalMeshError.from(detail.error) };
        break;
      default:
    }
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

const CREATE = Symbol('create');

export default SignalClient;
