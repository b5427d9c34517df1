//! The edge session: connection attempts, authentication, requests, keepalive, reconnect.

use alloc::{borrow::ToOwned, string::String, vec::Vec};

use bytes::Bytes;
use signal_mesh_proto::{
    AckMode, ClientMessage, ErrorCode, Event as NodeEvent, Limits, PROTOCOL_VERSION, PeerId, RequestBody,
    RequestId, ResponseBody, ServerMessage, TopicId,
    message::{Authenticate, Challenge},
};

use super::backoff::{Rng, backoff_delay};
use super::error::{ClientError, Code, cat, hex, msg};
use super::pacer::Pacer;
use super::peers::{Handle, PeerOutput, Peers, SdpKind};
use super::servers::ServerList;
use super::signal::{Candidate, PeerMessage, PeerSignal};
use super::vecmap::VecMap;
use super::{Millis, OpId};

/// A server frame parsed, or `None` when it is too large, not protobuf or invalid. This is
/// `signal_mesh_proto::decode_server` without its error values: their `Display` (prost's
/// `DecodeError` made into a `String`) would bring `core::fmt` into the wasm for a message the
/// client never shows.
fn decode_server(frame: Bytes) -> Option<ServerMessage> {
    use prost::Message;
    if frame.len() > MAX_SERVER_FRAME {
        return None;
    }
    let wire = signal_mesh_proto::wire::ServerFrame::decode(frame).ok()?;
    ServerMessage::from_wire(wire).ok()
}

/// The earlier of two optional times.
pub(super) fn earliest(a: Option<Millis>, b: Option<Millis>) -> Option<Millis> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        _ => a.or(b),
    }
}

/// Identifies one WebSocket attempt; inputs about an older attempt are ignored.
pub type ConnId = u32;

/// Server frames larger than this are not parsed (nodes announce far smaller limits).
const MAX_SERVER_FRAME: usize = 1 << 20;
/// Most requests waiting (for a connection, a token or a free slot) at once; more fail with
/// `LIMIT_EXCEEDED`.
pub const MAX_QUEUED: usize = 1024;
/// Most requests sent and not yet answered; more wait in the queue.
pub const MAX_IN_FLIGHT: usize = 64;
/// Most failure-only signals remembered (to route a failure to its session); the oldest is
/// forgotten first.
const MAX_QUIET: usize = 256;
/// The longest lookup the client pages through for one call.
pub const MAX_LOOKUP: u32 = 10_000;

/// Settings of a [`Client`]. Every duration is in milliseconds.
#[derive(Clone, Debug)]
pub struct Config {
    /// Node `/signal` URLs, tried in order (then those the nodes announce, see [`ServerList`]).
    pub servers: Vec<String>,
    /// This client's peer id (the public key the shell signs with).
    pub peer_id: PeerId,
    /// How long `connect()` may take to reach an open data channel; also the start deadline.
    pub connect_timeout_ms: u64,
    /// How long a request may wait for its response (including time spent offline).
    pub request_timeout_ms: u64,
    /// How long a WebSocket may take from opening to `Welcome`.
    pub handshake_timeout_ms: u64,
    /// First reconnect delay.
    pub backoff_initial_ms: u64,
    /// Largest reconnect delay.
    pub backoff_max_ms: u64,
    /// Seed of the core's random source (jitter, session ids, ping nonces).
    pub seed: u64,
}

impl Config {
    /// Default [`Config::connect_timeout_ms`].
    pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 10_000;
    /// Default [`Config::request_timeout_ms`].
    pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 10_000;
    /// Default [`Config::handshake_timeout_ms`].
    pub const DEFAULT_HANDSHAKE_TIMEOUT_MS: u64 = 5_000;
    /// Default [`Config::backoff_initial_ms`].
    pub const DEFAULT_BACKOFF_INITIAL_MS: u64 = 250;
    /// Default [`Config::backoff_max_ms`].
    pub const DEFAULT_BACKOFF_MAX_MS: u64 = 10_000;

    /// A configuration with the defaults.
    pub fn new(servers: Vec<String>, peer_id: PeerId, seed: u64) -> Self {
        Config {
            servers,
            peer_id,
            connect_timeout_ms: Self::DEFAULT_CONNECT_TIMEOUT_MS,
            request_timeout_ms: Self::DEFAULT_REQUEST_TIMEOUT_MS,
            handshake_timeout_ms: Self::DEFAULT_HANDSHAKE_TIMEOUT_MS,
            backoff_initial_ms: Self::DEFAULT_BACKOFF_INITIAL_MS,
            backoff_max_ms: Self::DEFAULT_BACKOFF_MAX_MS,
            seed,
        }
    }
}

/// The client's connection state, as JavaScript sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientState {
    /// Not yet authenticated with any node since start.
    Connecting,
    /// Authenticated with a node.
    Online,
    /// Lost the node; reconnecting.
    Offline,
    /// Closed by the application or for good (session replaced); terminal.
    Closed,
}

impl ClientState {
    /// The JavaScript spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            ClientState::Connecting => "connecting",
            ClientState::Online => "online",
            ClientState::Offline => "offline",
            ClientState::Closed => "closed",
        }
    }
}

/// What a finished operation produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpResult {
    /// Join and leave.
    Done,
    /// Lookup.
    Peers(Vec<PeerId>),
    /// Connect: the handle of the open connection.
    Connection(Handle),
}

/// A WebRTC action for the shell, executed in order per handle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RtcCommand {
    /// Create the `RTCPeerConnection`; the initiator also creates the data channel `label`.
    Create {
        /// The local connection handle.
        handle: Handle,
        /// Whether this side makes the offer.
        initiator: bool,
        /// The data channel label.
        label: String,
    },
    /// `createOffer` + `setLocalDescription`; report [`Client::rtc_local_description`].
    CreateOffer {
        /// The connection.
        handle: Handle,
        /// Restart ICE.
        ice_restart: bool,
    },
    /// `setRemoteDescription(offer)` + `createAnswer` + `setLocalDescription`; report the answer.
    ApplyOffer {
        /// The connection.
        handle: Handle,
        /// The remote offer.
        sdp: String,
    },
    /// `setRemoteDescription(answer)`.
    ApplyAnswer {
        /// The connection.
        handle: Handle,
        /// The remote answer.
        sdp: String,
    },
    /// `addIceCandidate`.
    AddCandidate {
        /// The connection.
        handle: Handle,
        /// The remote candidate.
        candidate: Candidate,
    },
    /// Close the data channel and the peer connection, and forget the handle.
    Close {
        /// The connection.
        handle: Handle,
    },
}

/// Something the application hears about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The state changed.
    StateChanged(ClientState),
    /// First authentication since start: `SignalClient.create` resolves.
    Started,
    /// No node was reached before the start deadline (or the client closed first).
    StartFailed(ClientError),
    /// An operation finished.
    OpDone {
        /// The operation.
        op: OpId,
        /// Its outcome.
        result: Result<OpResult, ClientError>,
    },
    /// An announcing peer joined a joined topic.
    PeerJoined {
        /// The topic.
        topic: TopicId,
        /// The peer.
        peer: PeerId,
    },
    /// An announcing peer left a joined topic.
    PeerLeft {
        /// The topic.
        topic: TopicId,
        /// The peer.
        peer: PeerId,
    },
    /// A peer offers a connection: answer with [`Client::decide_incoming`].
    IncomingOffer {
        /// The connection.
        handle: Handle,
        /// Who offers.
        peer: PeerId,
    },
    /// A connection that nobody was waiting for is open (the `connection` event).
    Incoming {
        /// The connection.
        handle: Handle,
        /// The remote peer.
        peer: PeerId,
    },
    /// An open connection was closed by the remote peer or failed.
    PeerClosed {
        /// The connection.
        handle: Handle,
        /// The remote peer.
        peer: PeerId,
    },
    /// An error not tied to an operation.
    Error(ClientError),
}

/// What the shell must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Open a WebSocket to `url`; report its events tagged with `conn`.
    OpenSocket {
        /// The attempt.
        conn: ConnId,
        /// The URL.
        url: String,
    },
    /// Close the WebSocket of `conn`.
    CloseSocket {
        /// The attempt.
        conn: ConnId,
    },
    /// Send one binary frame.
    Send {
        /// The attempt.
        conn: ConnId,
        /// The frame.
        frame: Bytes,
    },
    /// Sign `message` with the identity; report [`Client::handle_signed`].
    Sign {
        /// The attempt.
        conn: ConnId,
        /// The bytes to sign.
        message: Vec<u8>,
    },
    /// A WebRTC action.
    Rtc(RtcCommand),
    /// Tell the application.
    Event(Event),
}

#[derive(Clone, Debug)]
pub(super) enum Purpose {
    Op(OpId),
    Lookup { op: OpId, want: u32, peers: Vec<PeerId> },
    Rejoin,
    Signal { handle: Option<Handle> },
}

#[derive(Clone, Debug)]
pub(super) struct Pending {
    pub(super) body: RequestBody,
    pub(super) purpose: Purpose,
    pub(super) deadline: Millis,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Link {
    /// Waiting to (re)connect at this time.
    Waiting { at: Millis },
    /// Socket opening or authenticating.
    Handshake { conn: ConnId, deadline: Millis, challenge: Option<Challenge> },
    /// Authenticated.
    Up { conn: ConnId, next_ping: Millis, last_rx: Millis },
    /// Closed for good.
    Down,
}

/// The sans-IO edge client. Feed it inputs with the current time, then drain
/// [`Client::poll_output`] and arm a timer for [`Client::poll_timeout`].
#[derive(Debug)]
pub struct Client {
    pub(super) config: Config,
    pub(super) rng: Rng,
    state: ClientState,
    link: Link,
    next_conn: ConnId,
    servers: ServerList,
    failures: u32,
    last_failure: Option<ClientError>,
    start_deadline: Option<Millis>,
    limits: Limits,
    pacer: Pacer,
    next_request: RequestId,
    next_op: OpId,
    in_flight: VecMap<RequestId, Pending>,
    /// Signals sent with `AckMode::FailuresOnly` (no response on delivery): the session a failure
    /// goes to and when to forget them. They take no in-flight slot.
    quiet: VecMap<RequestId, (Option<Handle>, Millis)>,
    /// Requests waiting, oldest first. A `Vec` rather than a `VecDeque`: one container type less
    /// in the wasm, and each operation on it is a batch (see [`Client::flush`]).
    queued: Vec<Pending>,
    /// Topics joined (confirmed by the node), with their announce flag; re-joined on reconnect.
    topics: VecMap<TopicId, bool>,
    /// Every peer session (negotiation state); reached only through its methods.
    peers: Peers,
    /// Outputs not yet handed out, oldest first; `ready` holds the batch being handed out, newest
    /// first (so each [`Client::poll_output`] is a `pop`). Plain `Vec`s, not a `VecDeque`: see
    /// `queued`.
    out: Vec<Output>,
    ready: Vec<Output>,
}

impl Client {
    /// A client that starts connecting to the first server at `now`.
    pub fn new(mut config: Config, now: Millis) -> Client {
        let mut rng = Rng::new(config.seed);
        let peers = Peers::new(config.peer_id, config.connect_timeout_ms, rng.next_u64());
        let mut c = Client {
            rng,
            state: ClientState::Connecting,
            link: Link::Waiting { at: now },
            next_conn: 1,
            // The URLs move into the failover list (`Client::servers`), not cloned.
            servers: ServerList::new(core::mem::take(&mut config.servers)),
            failures: 0,
            last_failure: None,
            start_deadline: Some(now + config.connect_timeout_ms),
            limits: Limits::default(),
            pacer: Pacer::for_limits(&Limits::default(), now),
            next_request: 1,
            next_op: 1,
            in_flight: VecMap::new(),
            quiet: VecMap::new(),
            queued: Vec::new(),
            topics: VecMap::new(),
            peers,
            out: Vec::new(),
            ready: Vec::new(),
            config,
        };
        if c.servers.is_empty() {
            c.shutdown(ClientError::invalid("no servers given"));
        } else {
            c.handle_timeout(now);
        }
        c
    }

    /// The current state.
    pub fn state(&self) -> ClientState {
        self.state
    }

    /// This client's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.config.peer_id
    }

    /// The limits of the current (or last) node.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The index in the server list of the node in use or being tried.
    pub fn server_index(&self) -> usize {
        self.servers.index()
    }

    /// The failover list: the configured URLs, then those learned from nodes' `Welcome`.
    pub fn servers(&self) -> &[String] {
        self.servers.urls()
    }

    /// The next thing for the shell to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        if self.ready.is_empty() {
            self.ready = core::mem::take(&mut self.out);
            self.ready.reverse();
        }
        self.ready.pop()
    }

    /// When [`Client::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Millis> {
        let link = match &self.link {
            Link::Waiting { at } => Some(*at),
            Link::Handshake { deadline, .. } => Some(*deadline),
            Link::Up { next_ping, last_rx, .. } => Some((*next_ping).min(last_rx + self.idle_timeout())),
            Link::Down => None,
        };
        let paced = (matches!(self.link, Link::Up { .. })
            && !self.queued.is_empty()
            && self.in_flight.len() < MAX_IN_FLIGHT)
            .then(|| self.pacer.next_token());
        // Plain loops: iterator chains over these cost noticeably more wasm.
        let mut at = earliest(link, paced);
        at = earliest(at, self.peers.poll_timeout());
        at = earliest(at, self.start_deadline);
        for p in self.in_flight.values().chain(&self.queued) {
            at = earliest(at, Some(p.deadline));
        }
        at
    }

    fn push(&mut self, o: Output) {
        self.out.push(o);
    }

    fn emit(&mut self, e: Event) {
        self.out.push(Output::Event(e));
    }

    fn new_op(&mut self) -> OpId {
        let op = self.next_op;
        self.next_op += 1;
        op
    }

    /// Carries out what the peer sessions want: signals become requests, the rest outputs.
    fn route(&mut self, now: Millis) {
        for o in self.peers.take_outputs() {
            match o {
                PeerOutput::Signal { to, signal, handle } => {
                    // Trickled candidates need no acknowledgement: only a failure is answered.
                    let ack = match signal.message {
                        PeerMessage::Candidate(_) => AckMode::FailuresOnly,
                        _ => AckMode::Always,
                    };
                    let body = RequestBody::Signal { to, payload: signal.encode(), ack };
                    // Fails only when closed or the queue is full; the session deadline covers both.
                    let _ = self.request(body, Purpose::Signal { handle }, now);
                }
                PeerOutput::Rtc(c) => self.push(Output::Rtc(c)),
                PeerOutput::Event(e) => self.emit(e),
            }
        }
    }

    fn set_state(&mut self, s: ClientState) {
        if self.state != s {
            self.state = s;
            self.emit(Event::StateChanged(s));
        }
    }

    // ---- timers --------------------------------------------------------------------------------

    /// Runs everything due at `now`.
    pub fn handle_timeout(&mut self, now: Millis) {
        if let Some(d) = self.start_deadline
            && now >= d
        {
            self.start_deadline = None;
            let why = self.last_failure.take().map(|e| e.message).unwrap_or_else(|| "no answer".into());
            let err = ClientError::timeout(cat(&["no signal node reachable in time (", &why, ")"]));
            self.emit(Event::StartFailed(err.clone()));
            self.shutdown(err);
            return;
        }
        // Not `self.link.clone()`: cloning the handshake's challenge costs wasm for nothing.
        match self.link {
            Link::Waiting { at } if now >= at => self.open_socket(now),
            Link::Handshake { conn, deadline, .. } if now >= deadline => {
                self.push(Output::CloseSocket { conn });
                self.link_lost(now, ClientError::timeout("the node did not complete the handshake in time"));
            }
            Link::Up { conn, next_ping, last_rx } => {
                if now >= last_rx + self.idle_timeout() {
                    self.push(Output::CloseSocket { conn });
                    self.link_lost(now, ClientError::timeout("the node went silent"));
                } else if now >= next_ping {
                    let nonce = self.rng.next_u64();
                    // A ping takes a token from the node's bucket too; the pacer keeps two for it.
                    let _ = self.pacer.try_take(now);
                    self.send(conn, ClientMessage::Ping(nonce));
                    let next_ping = now + self.ping_interval();
                    self.link = Link::Up { conn, next_ping, last_rx };
                }
            }
            _ => {}
        }
        self.expire_requests(now);
        self.peers.handle_timeout(now);
        self.route(now);
        self.flush(now);
    }

    /// The node's idle timeout (the default when a node announces none).
    fn idle_timeout(&self) -> u64 {
        match self.limits.idle_timeout_ms {
            0 => u64::from(Limits::DEFAULT_IDLE_TIMEOUT_MS),
            ms => u64::from(ms),
        }
    }

    /// Pings go out every third of the idle timeout.
    fn ping_interval(&self) -> u64 {
        (self.idle_timeout() / 3).max(100)
    }

    fn expire_requests(&mut self, now: Millis) {
        self.quiet.retain(|_, (_, deadline)| *deadline > now);
        // Loops, not iterator chains: less wasm, and the lists are short.
        let mut dead = Vec::new();
        loop {
            let Some(id) = self.in_flight.iter().find(|(_, p)| p.deadline <= now).map(|(id, _)| *id) else {
                break;
            };
            if let Some(p) = self.in_flight.remove(&id) {
                dead.push(p);
            }
        }
        let mut i = 0;
        while i < self.queued.len() {
            if self.queued[i].deadline <= now {
                dead.push(self.queued.remove(i));
            } else {
                i += 1;
            }
        }
        for p in dead {
            self.fail_request(p, ClientError::timeout("no response from the signal node in time"), now);
        }
    }

    // ---- the link ------------------------------------------------------------------------------

    fn open_socket(&mut self, now: Millis) {
        let conn = self.next_conn;
        self.next_conn += 1;
        let url = self.servers.current().to_owned();
        self.link =
            Link::Handshake { conn, deadline: now + self.config.handshake_timeout_ms, challenge: None };
        self.push(Output::OpenSocket { conn, url });
    }

    fn current_conn(&self) -> Option<ConnId> {
        match &self.link {
            Link::Handshake { conn, .. } | Link::Up { conn, .. } => Some(*conn),
            _ => None,
        }
    }

    /// The WebSocket of `conn` opened. Nothing to do until the node's challenge arrives.
    pub fn handle_socket_open(&mut self, _conn: ConnId, _now: Millis) {}

    /// The WebSocket of `conn` closed (or failed to open) with close `code`.
    pub fn handle_socket_closed(&mut self, conn: ConnId, code: Option<u16>, now: Millis) {
        if self.current_conn() != Some(conn) {
            return;
        }
        match code.and_then(ErrorCode::from_close_code) {
            Some(ErrorCode::SessionReplaced) => self.replaced(),
            Some(c) => self.link_lost(now, ClientError::new(Code::Node(c), "the node closed the connection")),
            None => self.link_lost(now, ClientError::closed("the connection to the node closed")),
        }
    }

    fn replaced(&mut self) {
        let err = ClientError::new(
            Code::Node(ErrorCode::SessionReplaced),
            "another connection with this peer id replaced this one; not reconnecting",
        );
        self.emit(Event::Error(err.clone()));
        self.shutdown(err);
    }

    /// The link failed or dropped: schedule the next attempt (same node after a drop from an
    /// established session, else the next node in the list).
    fn link_lost(&mut self, now: Millis, why: ClientError) {
        let was_up = matches!(self.link, Link::Up { .. });
        if was_up {
            self.failures = 1;
            // Requests on the lost connection are sent again on the next one.
            // `in_flight` is in insertion order, which is request id order.
            let mut back = Vec::new();
            for (_, p) in self.in_flight.take_all() {
                if !matches!(p.purpose, Purpose::Rejoin) {
                    back.push(p);
                }
            }
            back.append(&mut self.queued);
            self.queued = back;
            // Failure-only signals are not sent again: whether they arrived is unknown.
            self.quiet.take_all();
            self.set_state(ClientState::Offline);
        } else {
            self.failures = self.failures.saturating_add(1);
            self.servers.advance();
            self.in_flight.retain(|_, p| !matches!(p.purpose, Purpose::Rejoin));
        }
        self.last_failure = Some(why);
        let delay = backoff_delay(
            self.failures,
            self.config.backoff_initial_ms,
            self.config.backoff_max_ms,
            self.rng.next_u64(),
        );
        self.link = Link::Waiting { at: now + delay };
    }

    /// A binary frame arrived on `conn`.
    pub fn handle_frame(&mut self, conn: ConnId, frame: Bytes, now: Millis) {
        if self.current_conn() != Some(conn) {
            return;
        }
        if let Link::Up { last_rx, .. } = &mut self.link {
            *last_rx = now;
        }
        let msg = match decode_server(frame) {
            Some(m) => m,
            None => {
                let err =
                    ClientError::new(Code::Node(ErrorCode::BadRequest), "the node sent a malformed frame");
                self.emit(Event::Error(err));
                return;
            }
        };
        match msg {
            ServerMessage::Challenge(c) => self.on_challenge(conn, c, now),
            ServerMessage::Welcome(w) => {
                if matches!(self.link, Link::Handshake { challenge: Some(_), .. }) {
                    self.limits = w.limits;
                    self.pacer = Pacer::for_limits(&w.limits, now);
                    self.servers.learn(&w.node_urls);
                    self.on_welcome(conn, now);
                }
            }
            ServerMessage::Response { id, body } => self.on_response(id, body, now),
            ServerMessage::Event(e) => self.on_event(e, now),
            ServerMessage::Ping(n) => self.send(conn, ClientMessage::Pong(n)),
            ServerMessage::Pong(_) => {}
            ServerMessage::Error { code, message } => {
                self.emit(Event::Error(ClientError::new(Code::Node(code), message)));
            }
            ServerMessage::Goodbye { code, reason } => {
                self.push(Output::CloseSocket { conn });
                if code == ErrorCode::SessionReplaced {
                    self.replaced();
                } else {
                    self.link_lost(now, ClientError::new(Code::Node(code), reason));
                }
            }
        }
        // A response frees a slot; anything may have queued requests.
        self.flush(now);
    }

    fn on_challenge(&mut self, conn: ConnId, c: Challenge, now: Millis) {
        let Link::Handshake { challenge, .. } = &mut self.link else { return };
        if challenge.is_some() {
            return;
        }
        if !c.protocol_versions.contains(&PROTOCOL_VERSION) {
            self.push(Output::CloseSocket { conn });
            let err = ClientError::new(Code::Node(ErrorCode::UnsupportedVersion), msg::UNSUPPORTED_VERSION);
            self.link_lost(now, err);
            return;
        }
        let message = signal_mesh_proto::auth::signed_message(&c.node_id, &c.nonce);
        *challenge = Some(c);
        self.push(Output::Sign { conn, message });
    }

    /// The shell signed the challenge of `conn`.
    pub fn handle_signed(&mut self, conn: ConnId, signature: [u8; 64], _now: Millis) {
        let Link::Handshake { conn: c, challenge: Some(ch), .. } = &self.link else { return };
        if *c != conn {
            return;
        }
        let auth = Authenticate {
            protocol_version: PROTOCOL_VERSION,
            peer_id: self.config.peer_id,
            nonce: ch.nonce,
            signature,
        };
        self.send(conn, ClientMessage::Authenticate(auth));
    }

    fn on_welcome(&mut self, conn: ConnId, now: Millis) {
        self.link = Link::Up { conn, next_ping: now + self.ping_interval(), last_rx: now };
        self.failures = 0;
        self.last_failure = None;
        self.set_state(ClientState::Online);
        if self.start_deadline.take().is_some() {
            self.emit(Event::Started);
        }
        let deadline = now + self.config.request_timeout_ms;
        // Re-joins go first, then what waited for the connection, all paced.
        let mut rejoin = Vec::new();
        for (&topic, &announce) in self.topics.iter() {
            rejoin.push(Pending {
                body: RequestBody::Join { topic, announce },
                purpose: Purpose::Rejoin,
                deadline,
            });
        }
        rejoin.append(&mut self.queued);
        self.queued = rejoin;
        self.flush(now);
    }

    fn send(&mut self, conn: ConnId, msg: ClientMessage) {
        self.push(Output::Send { conn, frame: signal_mesh_proto::encode_client(msg) });
    }

    // ---- requests ------------------------------------------------------------------------------

    /// Sends `p` now when online, else queues it for the next connection.
    pub(super) fn request(
        &mut self,
        body: RequestBody,
        purpose: Purpose,
        now: Millis,
    ) -> Result<(), ClientError> {
        if self.state == ClientState::Closed {
            return Err(ClientError::closed("the client is closed"));
        }
        if self.queued.len() >= MAX_QUEUED {
            return Err(ClientError::new(Code::Node(ErrorCode::LimitExceeded), "too many requests waiting"));
        }
        self.queued.push(Pending { body, purpose, deadline: now + self.config.request_timeout_ms });
        self.flush(now);
        Ok(())
    }

    /// Sends queued requests, in order, while online, a slot is free and the pacer has a token.
    fn flush(&mut self, now: Millis) {
        let Link::Up { conn, .. } = self.link else { return };
        let mut n = 0;
        while n < self.queued.len() && self.in_flight.len() + n < MAX_IN_FLIGHT && self.pacer.try_take(now) {
            n += 1;
        }
        let rest = self.queued.split_off(n);
        let batch = core::mem::replace(&mut self.queued, rest);
        for p in batch {
            let id = self.next_request;
            self.next_request += 1;
            self.send(conn, ClientMessage::Request { id, body: p.body.clone() });
            match (&p.body, &p.purpose) {
                (RequestBody::Signal { ack: AckMode::FailuresOnly, .. }, Purpose::Signal { handle }) => {
                    let oldest = self.quiet.keys().next().copied();
                    if self.quiet.len() >= MAX_QUIET
                        && let Some(oldest) = oldest
                    {
                        self.quiet.remove(&oldest);
                    }
                    self.quiet.insert(id, (*handle, p.deadline));
                }
                _ => {
                    self.in_flight.insert(id, p);
                }
            }
        }
    }

    fn on_response(&mut self, id: RequestId, body: ResponseBody, now: Millis) {
        // A failure-only signal is answered only when it failed (a node that predates
        // `AckMode` answers it with `Ok`, which is ignored).
        if let Some((handle, _)) = self.quiet.remove(&id) {
            if let (ResponseBody::Error { code, message }, Some(h)) = (body, handle) {
                self.peers.signal_failed(h, ClientError::new(Code::Node(code), message));
                self.route(now);
            }
            return;
        }
        // A reply to nothing we wait for (duplicate, or late after a timeout) is ignored.
        let Some(p) = self.in_flight.remove(&id) else { return };
        match body {
            ResponseBody::Error { code, message } => {
                self.fail_request(p, ClientError::new(Code::Node(code), message), now);
            }
            ResponseBody::Ok => match p.purpose {
                Purpose::Op(op) => {
                    match p.body {
                        RequestBody::Join { topic, announce } => {
                            self.topics.insert(topic, announce);
                        }
                        RequestBody::Leave { topic } => {
                            self.topics.remove(&topic);
                        }
                        _ => {}
                    }
                    self.emit(Event::OpDone { op, result: Ok(OpResult::Done) });
                }
                Purpose::Lookup { op, .. } => {
                    self.emit(Event::OpDone { op, result: Ok(OpResult::Peers(Vec::new())) });
                }
                Purpose::Rejoin | Purpose::Signal { .. } => {}
            },
            ResponseBody::Lookup { peers: mut page, next_cursor } => {
                let Purpose::Lookup { op, want, mut peers } = p.purpose else { return };
                peers.append(&mut page);
                let RequestBody::Lookup { topic, .. } = p.body else { return };
                match next_cursor {
                    Some(cursor) if (peers.len() as u64) < u64::from(want) => {
                        let left = want - peers.len() as u32;
                        let limit = left.min(self.limits.max_lookup_page.max(1));
                        let body = RequestBody::Lookup { topic, limit, cursor: Some(cursor) };
                        if let Err(e) = self.request(body, Purpose::Lookup { op, want, peers }, now) {
                            self.emit(Event::OpDone { op, result: Err(e) });
                        }
                    }
                    _ => {
                        peers.truncate(want as usize);
                        self.emit(Event::OpDone { op, result: Ok(OpResult::Peers(peers)) });
                    }
                }
            }
        }
    }

    fn fail_request(&mut self, p: Pending, err: ClientError, now: Millis) {
        match p.purpose {
            Purpose::Op(op) | Purpose::Lookup { op, .. } => self.emit(Event::OpDone { op, result: Err(err) }),
            Purpose::Rejoin => {
                if let RequestBody::Join { topic, .. } = p.body {
                    self.topics.remove(&topic);
                    let hex = hex(topic.as_bytes());
                    let msg = cat(&["re-joining topic ", &hex, " failed: ", &err.message]);
                    self.emit(Event::Error(ClientError::new(err.code, msg)));
                }
            }
            Purpose::Signal { handle } => {
                if let Some(h) = handle {
                    self.peers.signal_failed(h, err);
                    self.route(now);
                }
            }
        }
    }

    fn on_event(&mut self, e: NodeEvent, now: Millis) {
        match e {
            NodeEvent::PeerJoined { topic, peer } => self.emit(Event::PeerJoined { topic, peer }),
            NodeEvent::PeerLeft { topic, peer } => self.emit(Event::PeerLeft { topic, peer }),
            NodeEvent::Signal { from, payload } => {
                // Payloads that are not ours to read are dropped: any peer can send anything.
                if let Ok(signal) = PeerSignal::decode(payload)
                    && self.state != ClientState::Closed
                {
                    self.peers.on_signal(from, signal, now);
                    self.route(now);
                }
            }
        }
    }

    // ---- application operations ---------------------------------------------------------------

    /// Joins `topic` (announcing unless `announce` is false). Completes with [`Event::OpDone`].
    pub fn join(&mut self, topic: TopicId, announce: bool, now: Millis) -> Result<OpId, ClientError> {
        let op = self.new_op();
        self.request(RequestBody::Join { topic, announce }, Purpose::Op(op), now)?;
        Ok(op)
    }

    /// Leaves `topic`; it is no longer re-joined after a reconnect.
    pub fn leave(&mut self, topic: TopicId, now: Millis) -> Result<OpId, ClientError> {
        let op = self.new_op();
        self.request(RequestBody::Leave { topic }, Purpose::Op(op), now)?;
        self.topics.remove(&topic);
        Ok(op)
    }

    /// Looks up to `limit` announced peers of `topic` (`None`: one page of the node's size).
    pub fn lookup(&mut self, topic: TopicId, limit: Option<u32>, now: Millis) -> Result<OpId, ClientError> {
        let want = match limit {
            Some(0) => return Err(ClientError::invalid("lookup limit must be at least 1")),
            Some(n) if n > MAX_LOOKUP => {
                return Err(ClientError::invalid(msg::LOOKUP_LIMIT));
            }
            Some(n) => n,
            None => self.limits.max_lookup_page.max(1),
        };
        let op = self.new_op();
        let limit = want.min(self.limits.max_lookup_page.max(1));
        let body = RequestBody::Lookup { topic, limit, cursor: None };
        self.request(body, Purpose::Lookup { op, want, peers: Vec::new() }, now)?;
        Ok(op)
    }

    /// The application gave up on `op` (a lookup or a connect): it completes at once with
    /// `ABORTED`. A connection attempt nobody else waits for is dropped (the peer is told); a
    /// lookup's late reply is ignored. Join and leave are not abortable (they are quick and change
    /// state on the node either way); for them, and for finished operations, this does nothing.
    pub fn cancel(&mut self, op: OpId, now: Millis) {
        let is_op = |p: &Pending| matches!(p.purpose, Purpose::Lookup { op: o, .. } if o == op);
        let request = self.in_flight.iter().find(|(_, p)| is_op(p)).map(|(id, _)| *id);
        let found = match request {
            Some(id) => self.in_flight.remove(&id).is_some(),
            None => {
                let before = self.queued.len();
                self.queued.retain(|p| !is_op(p));
                self.queued.len() != before || self.peers.cancel(op)
            }
        };
        self.route(now);
        if found {
            let err = ClientError::new(Code::Aborted, "the operation was aborted");
            self.emit(Event::OpDone { op, result: Err(err) });
        }
    }

    /// The topics joined (confirmed by the node); these are re-joined after a reconnect.
    pub fn topics(&self) -> Vec<TopicId> {
        self.topics.keys().copied().collect()
    }

    /// Closes the client: says bye to connected peers, closes the socket, fails everything pending.
    pub fn close(&mut self, now: Millis) {
        if self.state == ClientState::Closed {
            return;
        }
        self.peers.close_all(true, &ClientError::closed("the client was closed"));
        self.route(now);
        self.shutdown(ClientError::closed("the client was closed"));
    }

    fn shutdown(&mut self, err: ClientError) {
        if let Some(conn) = self.current_conn() {
            self.push(Output::CloseSocket { conn });
        }
        self.link = Link::Down;
        if self.start_deadline.take().is_some() {
            self.emit(Event::StartFailed(err.clone()));
        }
        let mut ops = Vec::new();
        for (_, p) in self.in_flight.take_all() {
            if let Purpose::Op(op) | Purpose::Lookup { op, .. } = p.purpose {
                ops.push(op);
            }
        }
        for p in core::mem::take(&mut self.queued) {
            if let Purpose::Op(op) | Purpose::Lookup { op, .. } = p.purpose {
                ops.push(op);
            }
        }
        for op in ops {
            self.emit(Event::OpDone { op, result: Err(err.clone()) });
        }
        // No byes: there is no link left to carry them.
        self.peers.close_all(false, &err);
        for o in self.peers.take_outputs() {
            match o {
                PeerOutput::Signal { .. } => {}
                PeerOutput::Rtc(c) => self.push(Output::Rtc(c)),
                PeerOutput::Event(e) => self.emit(e),
            }
        }
        self.set_state(ClientState::Closed);
    }

    // ---- peer connections (negotiation is in `Peers`) -----------------------------------------

    /// Starts (or joins) a connection to `peer` with a data channel `label`. Completes with
    /// [`Event::OpDone`] carrying [`OpResult::Connection`] once the data channel is open.
    pub fn connect(&mut self, peer: PeerId, label: &str, now: Millis) -> Result<OpId, ClientError> {
        if self.state == ClientState::Closed {
            return Err(ClientError::closed("the client is closed"));
        }
        let op = self.new_op();
        self.peers.connect(peer, label, op, now)?;
        self.route(now);
        Ok(op)
    }

    /// The application accepted (`true`) or rejected an [`Event::IncomingOffer`].
    pub fn decide_incoming(&mut self, handle: Handle, accept: bool, now: Millis) {
        self.peers.decide_incoming(handle, accept);
        self.route(now);
    }

    /// The application closed the connection `handle`.
    pub fn close_connection(&mut self, handle: Handle, now: Millis) {
        self.peers.close_connection(handle);
        self.route(now);
    }

    /// The remote peer of `handle`, while the session lives.
    pub fn session_peer(&self, handle: Handle) -> Option<PeerId> {
        self.peers.peer_of(handle)
    }

    /// Whether `handle` has no offer or answer in progress (`None`: no such session).
    pub fn negotiation_stable(&self, handle: Handle) -> Option<bool> {
        self.peers.is_stable(handle)
    }

    /// The handles of every peer session (open or not).
    pub fn peer_handles(&self) -> Vec<Handle> {
        self.peers.handles()
    }

    /// The browser wants to renegotiate `handle` (a track or a data channel was added or removed).
    pub fn rtc_negotiation_needed(&mut self, handle: Handle, now: Millis) {
        self.peers.rtc_negotiation_needed(handle);
        self.route(now);
    }

    /// The local description (`kind`) of `handle` is set: send it.
    pub fn rtc_local_description(&mut self, handle: Handle, kind: SdpKind, sdp: String, now: Millis) {
        self.peers.rtc_local_description(handle, kind, sdp);
        self.route(now);
    }

    /// A local ICE candidate of `handle` was gathered: trickle it.
    pub fn rtc_local_candidate(&mut self, handle: Handle, candidate: Candidate, now: Millis) {
        self.peers.rtc_local_candidate(handle, candidate);
        self.route(now);
    }

    /// The data channel of `handle` is open.
    pub fn rtc_channel_open(&mut self, handle: Handle, now: Millis) {
        self.peers.rtc_channel_open(handle);
        self.route(now);
    }

    /// ICE of `handle` failed: restart once, then give up.
    pub fn rtc_ice_failed(&mut self, handle: Handle, now: Millis) {
        self.peers.rtc_ice_failed(handle, now);
        self.route(now);
    }

    /// ICE of `handle` is connected (again).
    pub fn rtc_ice_connected(&mut self, handle: Handle, now: Millis) {
        self.peers.rtc_ice_connected(handle);
        self.route(now);
    }

    /// The data channel or peer connection of `handle` closed, or a WebRTC call failed.
    pub fn rtc_closed(&mut self, handle: Handle, err: ClientError, now: Millis) {
        self.peers.drop_session(handle, true, err);
        self.route(now);
    }
}
