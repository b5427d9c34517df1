// Type declarations of the Signal Mesh package entry (handwritten for the handwritten facade in
// index.js; the wasm-bindgen declarations of the internal engine are in signal_mesh.d.ts).
// tests/types/ type-checks them with tsc, and checks that the code list below is exactly the
// proto's `ErrorCode` plus the client's own codes (`src/core/error.rs`).

/** Stable error codes: the node's protocol codes plus the client's own. */
export type SignalMeshErrorCode =
  | 'INVALID_ARGUMENT'
  | 'PEER_NOT_FOUND'
  | 'REJECTED'
  | 'TIMEOUT'
  | 'CLOSED'
  | 'BROWSER_ERROR'
  | 'UNSUPPORTED'
  | 'ABORTED'
  | 'BAD_REQUEST'
  | 'UNSUPPORTED_VERSION'
  | 'AUTH_FAILED'
  | 'NOT_AUTHENTICATED'
  | 'TOO_LARGE'
  | 'LIMIT_EXCEEDED'
  | 'RATE_LIMITED'
  | 'SESSION_REPLACED'
  | 'IDLE_TIMEOUT'
  | 'SLOW_CONSUMER'
  | 'SHUTTING_DOWN'
  | 'INTERNAL'
  | 'POLICY_VIOLATION'
  | 'OVERLOADED'
  | 'NOT_JOINED'
  | 'PEER_UNREACHABLE'
  | 'PEER_BUSY';

/** The error every rejected promise and `error` event carries. */
export class SignalMeshError extends Error {
  constructor(code: SignalMeshErrorCode, message: string, cause?: unknown);
  readonly name: 'SignalMeshError';
  /** A code of a newer node that this client does not know yet still arrives as a string. */
  readonly code: SignalMeshErrorCode | (string & {});
}

export type ClientState = 'connecting' | 'online' | 'offline' | 'closed';

export interface SignalClientOptions {
  /** ws:// or wss:// URLs of nodes' /signal endpoints, tried in order. */
  servers: string[];
  /** 32-byte Ed25519 secret seed, for a stable peer id; generated if absent. */
  identity?: Uint8Array;
  iceServers?: RTCIceServer[];
  /** How long `connect()` may take (and how long `create()` tries to reach a node); default 10000. */
  connectTimeoutMs?: number;
}

export interface PeerEventDetail {
  /** Topic id, lowercase hex of 32 bytes. */
  topic: string;
  /** The name the app joined (or looked up) the topic by, when it used a name. */
  topicName?: string;
  peerId: string;
}

export interface LookupOptions {
  /** How many peers at most (paged through); default one page of the node's size. */
  limit?: number;
  /** Aborts the lookup: the promise rejects with `ABORTED`. */
  signal?: AbortSignal;
}

export interface ConnectOptions {
  /** The data channel label; default 'signal-mesh'. */
  label?: string;
  /** Aborts the attempt (the peer is told): the promise rejects with `ABORTED`. */
  signal?: AbortSignal;
  /** Media to send: every track is added once the data channel is open (renegotiating). */
  streams?: MediaStream[];
}

export interface PeerConnectionEventMap {
  close: Event;
  /** A remote track arrived (forwarded from `pc`). */
  track: RTCTrackEvent;
}

/** What `onIncoming` returns: accept or not, or accept and send `streams`. */
export type IncomingDecision = boolean | { accept: boolean; streams?: MediaStream[] };

/** A direct WebRTC connection to another peer (made by `connect()` and `connection` events). */
export class PeerConnection extends EventTarget {
  private constructor();
  readonly peerId: string;
  readonly pc: RTCPeerConnection;
  /** Open when handed out. */
  readonly channel: RTCDataChannel;
  readonly closed: boolean;
  /** Sends `track` (as `RTCPeerConnection.addTrack`); renegotiates with the peer. */
  addTrack(track: MediaStreamTrack, ...streams: MediaStream[]): RTCRtpSender;
  /** Stops sending the track of `sender`; renegotiates with the peer. */
  removeTrack(sender: RTCRtpSender): void;
  close(): void;
  addEventListener<K extends keyof PeerConnectionEventMap>(
    type: K,
    listener: (this: PeerConnection, ev: PeerConnectionEventMap[K]) => unknown,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void;
}

export interface SignalClientEventMap {
  'peer-joined': CustomEvent<PeerEventDetail>;
  'peer-left': CustomEvent<PeerEventDetail>;
  connection: CustomEvent<{ connection: PeerConnection }>;
  statechange: CustomEvent<{ state: ClientState }>;
  error: CustomEvent<{ error: SignalMeshError }>;
}

export interface RoomOptions {
  /** Be listed and seen by the other members (default true). */
  announce?: boolean;
  /** Keep one connection to every member (default true); the lower peer id dials. */
  autoConnect?: boolean;
  /** Most members tracked and connected (default and maximum 256). */
  maxPeers?: number;
}

export interface RoomEventMap {
  /** A member's connection is open (and in `room.peers`). */
  peer: CustomEvent<{ peerId: string; connection: PeerConnection }>;
  /** A member left the topic; its connection was closed. */
  'peer-left': CustomEvent<{ peerId: string }>;
}

/** The members of one topic and a connection to each (`client.room(topic)`). */
export class Room extends EventTarget {
  private constructor();
  /** The topic as given. */
  readonly topic: string | Uint8Array;
  /** Resolves once joined and the members already there are known. */
  readonly ready: Promise<void>;
  /** Member peer id -> its open connection. */
  readonly peers: Map<string, PeerConnection>;
  /** Sends on every open member connection's data channel; returns how many. */
  send(data: string | Blob | ArrayBuffer | ArrayBufferView): number;
  /** Leaves the topic and closes the members' connections. */
  leave(): Promise<void>;
  addEventListener<K extends keyof RoomEventMap>(
    type: K,
    listener: (this: Room, ev: RoomEventMap[K]) => unknown,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void;
}

export class SignalClient extends EventTarget {
  private constructor();
  /** Resolves when authenticated with a node. */
  static create(options: SignalClientOptions): Promise<SignalClient>;
  /** Lowercase hex of the 32-byte public key. */
  readonly peerId: string;
  readonly state: ClientState;
  /** Decides on incoming connection offers; unset accepts all. */
  onIncoming: ((peerId: string) => IncomingDecision | Promise<IncomingDecision>) | null;
  join(topic: string | Uint8Array, options?: { announce?: boolean }): Promise<void>;
  leave(topic: string | Uint8Array): Promise<void>;
  lookup(topic: string | Uint8Array, options?: LookupOptions): Promise<string[]>;
  connect(peerId: string, options?: ConnectOptions): Promise<PeerConnection>;
  /** Joins `topic` as a room: its members and one connection to each. */
  room(topic: string | Uint8Array, options?: RoomOptions): Room;
  /** Closes every connection and the link to the node, and frees the wasm engine. */
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
  addEventListener<K extends keyof SignalClientEventMap>(
    type: K,
    listener: (this: SignalClient, ev: SignalClientEventMap[K]) => unknown,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void;
  removeEventListener<K extends keyof SignalClientEventMap>(
    type: K,
    listener: (this: SignalClient, ev: SignalClientEventMap[K]) => unknown,
    options?: boolean | EventListenerOptions,
  ): void;
  removeEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | EventListenerOptions): void;
}

export default SignalClient;
