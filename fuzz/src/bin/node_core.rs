//! Fuzz target: the node's sans-IO core — edge [`Session`]s feeding one mesh [`Directory`] — driven
//! by an arbitrary script of client frames, well-formed requests, reconnects, elapsed time and
//! presence input from two other nodes (structured and raw gossip bytes).
//!
//! The harness plays the gateway's part (`gateway::act`): it registers authenticated peers,
//! hands validated requests to the directory and drains each connection's outbound queue.
//! Checks after every step:
//! - nothing panics (a panic in the node core is a bug: it would take a connection task down);
//! - every frame the node queues decodes with the protocol's own decoder;
//! - every request handed to the directory gets exactly one response with its id, unless the
//!   directory closed that connection;
//! - every lookup page is strictly ascending and no longer than the page asked for.

use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use signal_mesh_node::directory::{ConnId, Directory, Outlet, PresenceInput};
use signal_mesh_node::mesh::links::NoMesh;
use signal_mesh_node::mesh::presence::ReplicaConfig;
use signal_mesh_node::mesh::wire::{
    Delta, DeltaBatch, NodeStatus, PeerRecord, Presence, PresenceMessage, Snapshot,
};
use signal_mesh_node::outbox::{Bounds, OutboxReceiver, Received, outbox_with};
use signal_mesh_node::session::{Action, Op, Session, SessionConfig};
use signal_mesh_proto::auth::Identity;
use signal_mesh_proto::{
    AckMode, ClientMessage, NodeId, PeerId, RequestBody, ResponseBody, ServerMessage, TopicId, decode_server,
    encode_client,
};

const CLIENTS: usize = 3;
const TOPICS: usize = 3;
const MAX_STEPS: usize = 256;

/// The fuzz input, read a byte at a time (zeros once it runs out).
struct Script<'a>(&'a [u8]);

impl Script<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }

    fn u64(&mut self) -> u64 {
        u64::from(self.byte()) | (u64::from(self.byte()) << 8)
    }
}

struct Client {
    identity: Identity,
    session: Session,
    conn: ConnId,
    /// The queue once the directory registered the peer.
    queue: Option<OutboxReceiver>,
    closed: bool,
    /// Not reading: its queue fills, so the queue bounds, `PEER_BUSY` and `SLOW_CONSUMER` run.
    paused: bool,
}

struct Harness {
    node_id: NodeId,
    config: SessionConfig,
    directory: Directory,
    clients: Vec<Client>,
    origins: Vec<libp2p::PeerId>,
    topics: Vec<TopicId>,
    /// Peers other nodes may announce: some are local clients' ids (a peer that moved).
    remote_peers: Vec<PeerId>,
    next_conn: ConnId,
    next_id: u64,
    now: Instant,
}

fn main() {
    let start = Instant::now();
    afl::fuzz!(|data: &[u8]| {
        let mut h = Harness::new(start);
        let mut script = Script(data);
        for _ in 0..MAX_STEPS {
            if script.0.is_empty() {
                break;
            }
            h.step(&mut script);
        }
    });
}

impl Harness {
    fn new(now: Instant) -> Harness {
        let node_id = NodeId::new(Bytes::from_static(&[7; 32])).unwrap_or_else(|e| panic!("node id: {e}"));
        let directory = Directory::with_mesh(4, 1, ReplicaConfig::default(), Box::new(NoMesh));
        let identities: Vec<Identity> =
            (0..CLIENTS).map(|i| Identity::from_seed([i as u8 + 1; 32])).collect();
        let mut remote_peers: Vec<PeerId> = identities.iter().map(Identity::peer_id).collect();
        remote_peers.extend((0..3u8).map(|i| PeerId::from_array([0xa0 + i; 32])));
        let origins = (0..2u8)
            .map(|i| {
                libp2p::identity::Keypair::ed25519_from_bytes([i + 40; 32])
                    .unwrap_or_else(|e| panic!("origin key: {e}"))
                    .public()
                    .to_peer_id()
            })
            .collect();
        let topics = (0..TOPICS).map(|i| TopicId::from_array([i as u8 + 1; 32])).collect();
        let mut h = Harness {
            node_id,
            config: SessionConfig::default(),
            directory,
            clients: Vec::new(),
            origins,
            topics,
            remote_peers,
            next_conn: 1,
            next_id: 1,
            now,
        };
        for identity in identities {
            let client = h.connect(identity);
            h.clients.push(client);
        }
        for c in 0..CLIENTS {
            h.authenticate(c);
        }
        h
    }

    fn connect(&mut self, identity: Identity) -> Client {
        let conn = self.next_conn;
        self.next_conn += 1;
        let nonce = [conn as u8; 32];
        let session = Session::new(self.config, self.node_id.clone(), nonce, self.now);
        Client { identity, session, conn, queue: None, closed: false, paused: false }
    }

    /// Answers the session's challenge through the codec, as a client would.
    fn authenticate(&mut self, c: usize) {
        let ServerMessage::Challenge(challenge) = self.clients[c].session.challenge() else {
            panic!("a new session's first frame is not a challenge");
        };
        let auth = self.clients[c].identity.authenticate(&challenge);
        let frame = encode_client(ClientMessage::Authenticate(auth));
        let action = self.clients[c].session.handle_frame(frame, self.now);
        assert!(matches!(action, Action::Authenticated(_)), "a correct answer was refused: {action:?}");
        self.act(c, action);
    }

    fn step(&mut self, s: &mut Script<'_>) {
        let op = s.byte();
        let c = usize::from(s.byte()) % CLIENTS;
        match op % 11 {
            0 => {
                let n = usize::from(s.byte());
                let frame = Bytes::copy_from_slice(s.bytes(n));
                self.input(c, |session, now| session.handle_frame(frame, now));
            }
            1 => {
                let topic = self.topic(s);
                let announce = s.byte() % 2 == 0;
                self.request(c, RequestBody::Join { topic, announce });
            }
            2 => {
                let topic = self.topic(s);
                self.request(c, RequestBody::Leave { topic });
            }
            3 => {
                let topic = self.topic(s);
                let limit = u32::from(s.byte());
                let cursor = self.maybe_peer(s);
                self.request(c, RequestBody::Lookup { topic, limit, cursor });
            }
            4 => {
                let to = self.peer(s);
                let len = s.byte();
                let payload = Bytes::from(vec![0x5a; usize::from(len) * 4]);
                let ack = if len % 2 == 0 { AckMode::Always } else { AckMode::FailuresOnly };
                self.request(c, RequestBody::Signal { to, payload, ack });
            }
            5 => self.advance(Duration::from_millis(u64::from(s.byte()) * 97)),
            6 => self.reconnect(c),
            7 => {
                let input = self.presence_input(s);
                self.directory.presence(input, self.now);
                self.drain_all();
            }
            8 => {
                let origin = self.origins[usize::from(s.byte()) % self.origins.len()];
                let n = usize::from(s.byte());
                if let Ok(m) = PresenceMessage::decode(s.bytes(n)) {
                    let input = match m.body {
                        Presence::Deltas(batch) => {
                            PresenceInput::Deltas { origin, incarnation: m.incarnation, batch }
                        }
                        Presence::Heartbeat { seq, status } => {
                            PresenceInput::Heartbeat { origin, incarnation: m.incarnation, seq, status }
                        }
                        Presence::Farewell { .. } => {
                            PresenceInput::Farewell { origin, incarnation: m.incarnation }
                        }
                    };
                    self.directory.presence(input, self.now);
                    self.drain_all();
                }
            }
            9 => {
                let nonce = s.u64();
                let frame = encode_client(ClientMessage::Ping(nonce));
                self.input(c, |session, now| session.handle_frame(frame, now));
            }
            _ => match s.byte() % 4 {
                0 => self.input(c, |session, now| session.handle_text(now)),
                1 => {
                    let len = s.u64() << 8;
                    self.input(c, |session, now| session.handle_oversize(len, now));
                }
                2 => self.input(c, |session, now| {
                    session.touch(now);
                    Action::None
                }),
                _ => self.clients[c].paused = !self.clients[c].paused,
            },
        }
    }

    fn topic(&self, s: &mut Script<'_>) -> TopicId {
        self.topics[usize::from(s.byte()) % self.topics.len()]
    }

    fn peer(&self, s: &mut Script<'_>) -> PeerId {
        self.remote_peers[usize::from(s.byte()) % self.remote_peers.len()]
    }

    fn maybe_peer(&self, s: &mut Script<'_>) -> Option<PeerId> {
        let b = s.byte();
        (b % 2 == 1).then(|| self.remote_peers[usize::from(b / 2) % self.remote_peers.len()])
    }

    fn presence_input(&self, s: &mut Script<'_>) -> PresenceInput {
        let origin = self.origins[usize::from(s.byte()) % self.origins.len()];
        let incarnation = u64::from(s.byte() % 3);
        match s.byte() % 6 {
            0 => {
                let first_seq = u64::from(s.byte() % 8);
                let n = usize::from(s.byte() % 6);
                let deltas = (0..n).map(|_| self.delta(s)).collect();
                PresenceInput::Deltas { origin, incarnation, batch: DeltaBatch { first_seq, deltas } }
            }
            1 => {
                let seq = u64::from(s.byte() % 8);
                PresenceInput::Heartbeat { origin, incarnation, seq, status: NodeStatus::default() }
            }
            2 => PresenceInput::Farewell { origin, incarnation },
            3 => {
                let seq = u64::from(s.byte() % 8);
                let n = usize::from(s.byte() % 5);
                let peers = (0..n)
                    .map(|_| {
                        let peer = self.peer(s);
                        let since_ms = u64::from(s.byte());
                        let k = usize::from(s.byte() % 3);
                        let topics = (0..k).map(|_| self.topic(s)).collect();
                        PeerRecord { peer, since_ms, topics }
                    })
                    .collect();
                PresenceInput::Snapshot { origin, snapshot: Snapshot { incarnation, seq, peers } }
            }
            4 => PresenceInput::SnapshotFailed { origin },
            _ => PresenceInput::LinkDown { node: origin },
        }
    }

    fn delta(&self, s: &mut Script<'_>) -> Delta {
        let peer = self.peer(s);
        match s.byte() % 4 {
            0 => Delta::Up { peer, since_ms: u64::from(s.byte()) },
            1 => Delta::Down { peer },
            2 => Delta::Announce { peer, topic: self.topic(s) },
            _ => Delta::Withdraw { peer, topic: self.topic(s) },
        }
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        for c in 0..CLIENTS {
            if !self.clients[c].closed && self.clients[c].session.deadline() <= self.now {
                self.input(c, |session, now| session.handle_timeout(now));
            }
        }
        let _report = self.directory.tick(self.now);
        let _ = self.directory.take_outbound();
        self.drain_all();
    }

    fn reconnect(&mut self, c: usize) {
        let old = &self.clients[c];
        if let Some(peer) = old.session.peer() {
            self.directory.unregister(peer, old.conn);
        }
        let identity = old.identity.clone();
        self.clients[c] = self.connect(identity);
        self.authenticate(c);
        self.drain_all();
    }

    fn request(&mut self, c: usize, body: RequestBody) {
        let id = self.next_id;
        self.next_id += 1;
        let frame = encode_client(ClientMessage::Request { id, body });
        self.input(c, |session, now| session.handle_frame(frame, now));
    }

    /// Feeds one input to client `c`'s session and carries out the action.
    fn input(&mut self, c: usize, f: impl FnOnce(&mut Session, Instant) -> Action) {
        if self.clients[c].closed {
            return;
        }
        let now = self.now;
        let action = f(&mut self.clients[c].session, now);
        self.act(c, action);
    }

    fn act(&mut self, c: usize, action: Action) {
        match action {
            Action::None => {}
            Action::Send(msg) => {
                check_frame(&signal_mesh_proto::encode_server(msg));
            }
            Action::Close { reply, .. } => {
                if let Some(reply) = reply {
                    check_frame(&signal_mesh_proto::encode_server(reply));
                }
                let client = &mut self.clients[c];
                client.closed = true;
                if let Some(peer) = client.session.peer() {
                    self.directory.unregister(peer, client.conn);
                }
            }
            Action::Authenticated(peer) => {
                // Small bounds, so a paused client fills its queue within a few steps.
                let (tx, rx) = outbox_with(Bounds { frames: 16, bytes: 8 * 1024 });
                let ServerMessage::Welcome(welcome) = self.clients[c].session.welcome(peer) else {
                    panic!("no welcome for an authenticated session");
                };
                let welcome = signal_mesh_proto::encode_server(ServerMessage::Welcome(welcome));
                let conn = self.clients[c].conn;
                self.directory.register_since(peer, Outlet { conn, queue: tx }, welcome, 100);
                self.clients[c].queue = Some(rx);
                self.drain_all();
            }
            Action::Request { id, op } => {
                let limit = match &op {
                    Op::Lookup { limit, .. } => Some(limit.get()),
                    _ => None,
                };
                // A failure-only signal is answered only when it fails.
                let quiet = matches!(op, Op::Signal { ack: AckMode::FailuresOnly, .. });
                let Some(peer) = self.clients[c].session.peer() else {
                    panic!("a request from a session that never authenticated");
                };
                self.directory.request(peer, self.clients[c].conn, id, op);
                let _ = self.directory.take_outbound();
                // The response goes to this client's queue; other clients get events.
                let (frames, closed) = self.drain(c);
                let mut responses = 0;
                for msg in frames {
                    if let ServerMessage::Response { id: rid, body } = msg
                        && rid == id
                    {
                        responses += 1;
                        assert!(
                            !quiet || matches!(body, ResponseBody::Error { .. }),
                            "a failure-only signal was answered with {body:?}"
                        );
                        if let (ResponseBody::Lookup { peers, .. }, Some(limit)) = (&body, limit) {
                            assert!(
                                peers.len() <= limit as usize,
                                "a page of {} for a limit of {limit}",
                                peers.len()
                            );
                            assert!(peers.windows(2).all(|w| w[0] < w[1]), "a page out of order: {peers:?}");
                        }
                    }
                }
                let expected = if quiet { responses <= 1 } else { responses == 1 };
                assert!(closed || expected, "request {id} got {responses} responses");
                self.drain_all();
            }
        }
    }

    fn drain_all(&mut self) {
        for c in 0..CLIENTS {
            if !self.clients[c].paused {
                let _ = self.drain(c);
            }
        }
    }

    /// Takes every queued frame of client `c` (each must decode) and whether the directory
    /// closed the connection.
    fn drain(&mut self, c: usize) -> (Vec<ServerMessage>, bool) {
        let mut frames = Vec::new();
        let Some(queue) = &self.clients[c].queue else { return (frames, false) };
        let mut cx = Context::from_waker(Waker::noop());
        let closed = loop {
            let mut recv = std::pin::pin!(queue.recv());
            match recv.as_mut().poll(&mut cx) {
                Poll::Ready(Received::Frame(bytes)) => frames.push(check_frame(&bytes)),
                Poll::Ready(Received::Close(_) | Received::Gone) => break true,
                Poll::Pending => break false,
            }
        };
        if closed {
            let client = &mut self.clients[c];
            client.closed = true;
            client.queue = None;
        }
        (frames, closed)
    }
}

/// Every frame the node sends must decode with the protocol's own decoder.
fn check_frame(bytes: &Bytes) -> ServerMessage {
    match decode_server(bytes.clone(), usize::MAX) {
        Ok(msg) => msg,
        Err(e) => panic!("the node queued a frame its own protocol refuses: {e}"),
    }
}
