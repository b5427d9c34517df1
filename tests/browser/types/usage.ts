// Type-checked (not run) by tests/types.test.mjs with `tsc --noEmit --strict` against the built
// package's index.d.ts: everything an app does with the package must type-check, and the
// `@ts-expect-error` lines prove that the declarations reject what the runtime rejects (tsc fails
// when an expected error does not occur).
import SignalClientDefault, {
  PeerConnection,
  SignalClient,
  SignalMeshError,
  type ClientState,
  type PeerEventDetail,
  Room,
  type SignalMeshErrorCode,
} from 'signal-mesh';

export async function app(): Promise<void> {
  const client: SignalClient = await SignalClient.create({
    servers: ['ws://127.0.0.1:4000/signal'],
    identity: new Uint8Array(32),
    iceServers: [{ urls: 'stun:stun.example.org' }],
    connectTimeoutMs: 5000,
  });
  const same: typeof SignalClient = SignalClientDefault;
  void same;
  const id: string = client.peerId;
  const state: ClientState = client.state;
  void id;
  void state;
  client.onIncoming = async (peerId: string) => peerId.length === 64;
  client.onIncoming = null;
  const media: MediaStream = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
  client.onIncoming = () => ({ accept: true, streams: [media] });
  const call = await client.connect('00'.repeat(32), { streams: [media] });
  call.addEventListener('track', (e) => {
    const remote: MediaStream | undefined = e.streams[0];
    void remote;
  });
  const sender: RTCRtpSender = call.addTrack(media.getVideoTracks()[0]!, media);
  call.removeTrack(sender);
  const extra: RTCDataChannel = call.pc.createDataChannel('files');
  void extra;

  client.addEventListener('peer-joined', (e) => {
    const d: PeerEventDetail = e.detail;
    const name: string | undefined = d.topicName;
    void name;
    void client.connect(d.peerId, { label: 'chat' });
  });
  client.addEventListener('connection', (e) => {
    const conn: PeerConnection = e.detail.connection;
    conn.channel.send('hi');
    conn.addEventListener('close', () => {});
  });
  client.addEventListener('statechange', (e) => {
    const s: ClientState = e.detail.state;
    void s;
  });
  client.addEventListener('error', (e) => {
    const err: SignalMeshError = e.detail.error;
    if (err.code === 'SESSION_REPLACED') return;
  });

  const room: Room = client.room('lobby', { maxPeers: 8 });
  await room.ready;
  room.addEventListener('peer', (e) => {
    const c: PeerConnection = e.detail.connection;
    void c;
  });
  room.addEventListener('peer-left', (e) => void e.detail.peerId);
  const sent: number = room.send('to all');
  void sent;
  for (const [peerId, c] of room.peers) void [peerId, c.channel];
  await room.leave();
  await client.join('room');
  await client.join(new Uint8Array(32), { announce: false });
  await client.leave('room');
  const ac = new AbortController();
  const peers: string[] = await client.lookup('room', { limit: 10, signal: ac.signal });
  const conn = await client.connect(peers[0] ?? '', { signal: AbortSignal.timeout(1000) });
  const ok: boolean = conn.closed;
  void ok;
  conn.close();

  try {
    await client.connect('00'.repeat(32));
  } catch (e) {
    if (e instanceof SignalMeshError) {
      // The code narrows to the known union and still admits codes of newer nodes.
      const code: SignalMeshErrorCode | (string & {}) = e.code;
      switch (e.code) {
        case 'PEER_NOT_FOUND':
        case 'PEER_UNREACHABLE':
        case 'PEER_BUSY':
        case 'ABORTED':
          break;
        default:
      }
      void code;
    }
  }
  {
    await using scoped = await SignalClient.create({ servers: ['ws://127.0.0.1:4000/signal'] });
    void scoped.peerId;
  }
  await client.close();
}

export function rejected(client: SignalClient): void {
  // @ts-expect-error: the constructor is private (use SignalClient.create)
  new SignalClient();
  // @ts-expect-error: PeerConnection objects come from connect() and `connection` events
  new PeerConnection();
  // @ts-expect-error: not an error code
  const bad: SignalMeshErrorCode = 'NO_SUCH_CODE';
  void bad;
  // @ts-expect-error: peerId is read-only
  client.peerId = 'x';
  // @ts-expect-error: topics are strings or bytes
  void client.join(42);
  // @ts-expect-error: servers is required
  void SignalClient.create({});
  client.addEventListener('peer-left', (e) => {
    // @ts-expect-error: the detail has no such field
    void e.detail.nope;
  });
  // @ts-expect-error: onIncoming answers with a decision, not a string
  client.onIncoming = () => 'yes';
  // @ts-expect-error: a SignalMeshError is made with a known code
  new SignalMeshError('NO_SUCH_CODE', 'm');
}
