//! The per-connection protocol state machine, sans IO.
//!
//! A [`Session`] never reads the clock, never touches a socket and never awaits: the driver
//! ([`crate::gateway`]) hands it each received frame with the current time and carries out the
//! [`Action`] it returns. That keeps every protocol rule (authentication, version check, rate
//! limiting, request validation, idle and authentication timeouts, abuse detection) testable with
//! plain function calls and simulated time.
//!
//! State machine: `Challenged` (the node sent its challenge) -> `Authenticated` (a valid
//! `Authenticate` arrived) -> `Closing` (the session decided to close; every later input is
//! ignored). The driver sends [`Session::challenge`] first, and [`Session::welcome`] once it has
//! registered the peer after [`Action::Authenticated`].

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use bytes::Bytes;
use signal_mesh_proto::auth::{self, AuthError, NONCE_LEN};
use signal_mesh_proto::message::Authenticate;
use signal_mesh_proto::{
    AckMode, Challenge, ClientMessage, DecodeError, ErrorCode, Limits, NodeId, PROTOCOL_VERSION, PeerId,
    RequestBody, RequestId, ResponseBody, ServerMessage, TopicId, Welcome, decode_client,
};

/// Settings of a session that are not announced to the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    /// The limits enforced and announced in the `Welcome`.
    pub limits: Limits,
    /// How long a client may take to authenticate after the challenge.
    pub auth_timeout: Duration,
    /// How many protocol errors in a row (bad frames, rate-limited or unauthenticated requests)
    /// a client may cause before it is disconnected with `POLICY_VIOLATION`.
    pub max_consecutive_errors: u32,
}

impl SessionConfig {
    /// Default [`SessionConfig::auth_timeout`].
    pub const DEFAULT_AUTH_TIMEOUT: Duration = Duration::from_secs(10);
    /// Default [`SessionConfig::max_consecutive_errors`].
    pub const DEFAULT_MAX_CONSECUTIVE_ERRORS: u32 = 32;
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            limits: Limits::default(),
            auth_timeout: Self::DEFAULT_AUTH_TIMEOUT,
            max_consecutive_errors: Self::DEFAULT_MAX_CONSECUTIVE_ERRORS,
        }
    }
}

/// Where a session is in the connection state machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// The challenge is out; the client must authenticate.
    Challenged,
    /// The client proved it owns this peer id.
    Authenticated(PeerId),
    /// The session decided to close; inputs are ignored.
    Closing,
}

/// A validated request for the directory: the protocol's [`RequestBody`] after the session's
/// checks. It cannot hold what the checks refuse: a `Lookup`'s page is a [`PageLimit`] (between 1
/// and the node's maximum page), and a `Signal`'s payload has passed the size limit (it stays a
/// slice of the received frame).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Join `topic`, announcing this peer in it or not.
    Join {
        /// The topic.
        topic: TopicId,
        /// Whether other members see this peer.
        announce: bool,
    },
    /// Leave `topic`.
    Leave {
        /// The topic.
        topic: TopicId,
    },
    /// A page of `topic`'s announced peers after `cursor`.
    Lookup {
        /// The topic.
        topic: TopicId,
        /// How many peers at most.
        limit: PageLimit,
        /// The last peer id of the previous page.
        cursor: Option<PeerId>,
    },
    /// Relay `payload` to `to`.
    Signal {
        /// The receiving peer.
        to: PeerId,
        /// The opaque payload, within the size limit.
        payload: Bytes,
        /// Whether a delivered signal is answered (`Ok`) or only a failed one.
        ack: AckMode,
    },
}

/// The size of a lookup page: at least 1 and at most the node's maximum page. Only
/// [`PageLimit::new`] and [`PageLimit::up_to`] make one, so a directory never sees 0 or an
/// unbounded page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PageLimit(NonZeroU32);

/// A lookup asked for a larger page than the node serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("lookup limit {requested} exceeds the maximum page of {max}")]
pub struct PageTooLarge {
    /// What was asked for.
    pub requested: u32,
    /// The node's maximum page.
    pub max: u32,
}

impl PageLimit {
    /// The page a client asked for (`requested`; 0 means "as many as the node allows"), checked
    /// against the node's maximum page `max` (at least 1).
    pub fn new(requested: u32, max: u32) -> Result<PageLimit, PageTooLarge> {
        match NonZeroU32::new(requested) {
            None => Ok(PageLimit::up_to(max)),
            Some(n) if requested <= max => Ok(PageLimit(n)),
            Some(_) => Err(PageTooLarge { requested, max }),
        }
    }

    /// The full page of `max` peers (at least 1).
    pub fn up_to(max: u32) -> PageLimit {
        PageLimit(NonZeroU32::new(max).unwrap_or(NonZeroU32::MIN))
    }

    /// The number of peers.
    pub fn get(self) -> u32 {
        self.0.get()
    }
}

/// What the driver must do after an input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing.
    None,
    /// Send this frame to the client.
    Send(ServerMessage),
    /// The client authenticated as this peer: register it, then send [`Session::welcome`].
    Authenticated(PeerId),
    /// Hand this validated request to the directory, which sends the one response.
    Request {
        /// The request id to answer.
        id: RequestId,
        /// What to do.
        op: Op,
    },
    /// Send `reply` (if any), then a `Goodbye` with `code` and `reason`, then close the
    /// WebSocket with `code.close_code()`.
    Close {
        /// A last frame before the goodbye (for example the error answering a request).
        reply: Option<ServerMessage>,
        /// Why.
        code: ErrorCode,
        /// A human-readable reason.
        reason: String,
    },
}

/// A token bucket: `rate` tokens per second, at most `burst`, time given explicitly.
#[derive(Clone, Copy, Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: u32, burst: u32, now: Instant) -> TokenBucket {
        let burst = f64::from(burst.max(1));
        TokenBucket { rate: f64::from(rate), burst, tokens: burst, last: now }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// One connection's protocol state.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    node_id: NodeId,
    nonce: [u8; NONCE_LEN],
    state: State,
    bucket: TokenBucket,
    auth_deadline: Instant,
    last_activity: Instant,
    consecutive_errors: u32,
}

impl Session {
    /// A session whose challenge (`node_id`, `nonce`) is sent at `now`. The nonce must be fresh
    /// random bytes for this connection.
    pub fn new(config: SessionConfig, node_id: NodeId, nonce: [u8; NONCE_LEN], now: Instant) -> Session {
        Session {
            bucket: TokenBucket::new(config.limits.requests_per_second, config.limits.request_burst, now),
            auth_deadline: now + config.auth_timeout,
            last_activity: now,
            config,
            node_id,
            nonce,
            state: State::Challenged,
            consecutive_errors: 0,
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The authenticated peer, if any.
    pub fn peer(&self) -> Option<PeerId> {
        match self.state {
            State::Authenticated(p) => Some(p),
            _ => None,
        }
    }

    /// The limits of this session.
    pub fn limits(&self) -> &Limits {
        &self.config.limits
    }

    /// The opening frame.
    pub fn challenge(&self) -> ServerMessage {
        ServerMessage::Challenge(Challenge {
            protocol_versions: vec![PROTOCOL_VERSION],
            node_id: self.node_id.clone(),
            nonce: self.nonce,
        })
    }

    /// The frame confirming authentication (valid once authenticated).
    pub fn welcome(&self, peer: PeerId) -> ServerMessage {
        ServerMessage::Welcome(Welcome {
            protocol_version: PROTOCOL_VERSION,
            peer_id: peer,
            limits: self.config.limits,
            node_urls: Vec::new(),
        })
    }

    /// When the driver must call [`Session::handle_timeout`] next: the authentication deadline
    /// while unauthenticated, else the idle deadline. Receiving frames moves it later; the driver
    /// may wake up early and just ask again.
    pub fn deadline(&self) -> Instant {
        let idle = self.last_activity + Duration::from_millis(u64::from(self.config.limits.idle_timeout_ms));
        match self.state {
            State::Challenged => idle.min(self.auth_deadline),
            _ => idle,
        }
    }

    /// Checks the deadlines; returns the close action when one has passed.
    pub fn handle_timeout(&mut self, now: Instant) -> Action {
        if self.state == State::Closing || now < self.deadline() {
            return Action::None;
        }
        if self.state == State::Challenged && now >= self.auth_deadline {
            return self.close(None, ErrorCode::AuthFailed, "authentication timed out".into());
        }
        self.close(None, ErrorCode::IdleTimeout, "nothing received within the idle timeout".into())
    }

    /// A frame that carries no protocol message arrived (WebSocket ping or pong): it only
    /// counts as activity for the idle timeout.
    pub fn touch(&mut self, now: Instant) {
        self.last_activity = self.last_activity.max(now);
    }

    /// A text frame arrived (the protocol uses binary frames only).
    pub fn handle_text(&mut self, now: Instant) -> Action {
        if self.state == State::Closing {
            return Action::None;
        }
        self.last_activity = now;
        self.error(
            None,
            ErrorCode::BadRequest,
            "text frames are not part of the protocol; send binary".into(),
        )
    }

    /// A binary message over the frame size limit arrived (`len` bytes; its payload was not
    /// read into memory).
    pub fn handle_oversize(&mut self, len: u64, now: Instant) -> Action {
        if self.state == State::Closing {
            return Action::None;
        }
        self.last_activity = now;
        let max = self.config.limits.max_frame_bytes;
        self.error(
            None,
            ErrorCode::TooLarge,
            format!("frame of {len} bytes exceeds the limit of {max} bytes"),
        )
    }

    /// A binary frame arrived.
    pub fn handle_frame(&mut self, frame: Bytes, now: Instant) -> Action {
        if self.state == State::Closing {
            return Action::None;
        }
        self.last_activity = now;
        let max = self.config.limits.max_frame_bytes as usize;
        let msg = match decode_client(frame, max) {
            Ok(msg) => msg,
            Err(e) => return self.decode_error(e),
        };
        match msg {
            ClientMessage::Ping(nonce) => {
                if !self.bucket.try_take(now) {
                    return self.error(None, ErrorCode::RateLimited, "ping rate exceeded".into());
                }
                Action::Send(ServerMessage::Pong(nonce))
            }
            ClientMessage::Pong(_) => Action::None,
            ClientMessage::Authenticate(a) => self.authenticate(a),
            ClientMessage::Request { id, body } => self.request(id, body, now),
        }
    }

    fn authenticate(&mut self, a: Authenticate) -> Action {
        if self.state != State::Challenged {
            return self.error(None, ErrorCode::BadRequest, "already authenticated".into());
        }
        if a.protocol_version != PROTOCOL_VERSION {
            return self.close(
                None,
                ErrorCode::UnsupportedVersion,
                format!(
                    "protocol version {} is not supported; this node speaks {}",
                    a.protocol_version, PROTOCOL_VERSION
                ),
            );
        }
        if a.nonce != self.nonce {
            return self.close(None, ErrorCode::AuthFailed, AuthError::WrongChallenge.to_string());
        }
        if let Err(e) = auth::verify(&a.peer_id, &self.node_id, &self.nonce, &a.signature) {
            return self.close(None, ErrorCode::AuthFailed, e.to_string());
        }
        self.state = State::Authenticated(a.peer_id);
        self.consecutive_errors = 0;
        Action::Authenticated(a.peer_id)
    }

    fn request(&mut self, id: RequestId, body: RequestBody, now: Instant) -> Action {
        if self.state == State::Challenged {
            return self.error(Some(id), ErrorCode::NotAuthenticated, "authenticate first".into());
        }
        if !self.bucket.try_take(now) {
            return self.error(Some(id), ErrorCode::RateLimited, "request rate exceeded".into());
        }
        let limits = &self.config.limits;
        let op = match body {
            RequestBody::Join { topic, announce } => Op::Join { topic, announce },
            RequestBody::Leave { topic } => Op::Leave { topic },
            RequestBody::Lookup { topic, limit, cursor } => {
                match PageLimit::new(limit, limits.max_lookup_page) {
                    Ok(limit) => Op::Lookup { topic, limit, cursor },
                    Err(e) => return self.error(Some(id), ErrorCode::LimitExceeded, e.to_string()),
                }
            }
            RequestBody::Signal { to, payload, ack } => {
                if payload.len() > limits.max_payload_bytes as usize {
                    let msg = format!(
                        "signal payload of {} bytes exceeds the limit of {} bytes",
                        payload.len(),
                        limits.max_payload_bytes
                    );
                    return self.error(Some(id), ErrorCode::TooLarge, msg);
                }
                Op::Signal { to, payload, ack }
            }
        };
        self.consecutive_errors = 0;
        Action::Request { id, op }
    }

    fn decode_error(&mut self, e: DecodeError) -> Action {
        let code = e.code();
        let id = e.request_id();
        self.error(id, code, e.to_string())
    }

    /// Answers with an error (a response when the request id is known), counting a strike; too
    /// many strikes in a row close the connection.
    fn error(&mut self, id: Option<RequestId>, code: ErrorCode, message: String) -> Action {
        self.consecutive_errors = self.consecutive_errors.saturating_add(1);
        let reply = match id {
            Some(id) => ServerMessage::Response { id, body: ResponseBody::Error { code, message } },
            None => ServerMessage::Error { code, message },
        };
        if self.consecutive_errors > self.config.max_consecutive_errors {
            let reason = format!("{} protocol errors in a row (last: {code})", self.consecutive_errors);
            return self.close(Some(reply), ErrorCode::PolicyViolation, reason);
        }
        Action::Send(reply)
    }

    fn close(&mut self, reply: Option<ServerMessage>, code: ErrorCode, reason: String) -> Action {
        self.state = State::Closing;
        Action::Close { reply, code, reason }
    }
}

#[cfg(test)]
mod tests {
    use signal_mesh_proto::auth::Identity;
    use signal_mesh_proto::encode_client;

    use super::*;

    fn node_id() -> NodeId {
        NodeId::new(vec![7u8; 32]).unwrap()
    }

    fn config() -> SessionConfig {
        SessionConfig {
            limits: Limits {
                requests_per_second: 10,
                request_burst: 3,
                idle_timeout_ms: 1000,
                ..Limits::default()
            },
            auth_timeout: Duration::from_millis(500),
            max_consecutive_errors: 4,
        }
    }

    fn session(now: Instant) -> Session {
        Session::new(config(), node_id(), [1; NONCE_LEN], now)
    }

    fn challenge_of(s: &Session) -> Challenge {
        match s.challenge() {
            ServerMessage::Challenge(c) => c,
            other => panic!("not a challenge: {other:?}"),
        }
    }

    fn frame(msg: ClientMessage) -> Bytes {
        encode_client(msg)
    }

    fn authed(now: Instant) -> (Session, PeerId) {
        let mut s = session(now);
        let id = Identity::from_seed([3; 32]);
        let a = id.authenticate(&challenge_of(&s));
        assert_eq!(
            s.handle_frame(frame(ClientMessage::Authenticate(a)), now),
            Action::Authenticated(id.peer_id())
        );
        (s, id.peer_id())
    }

    fn join(id: u64) -> Bytes {
        frame(ClientMessage::Request {
            id,
            body: RequestBody::Join { topic: TopicId::from_array([2; 32]), announce: true },
        })
    }

    fn code_of(a: &Action) -> Option<ErrorCode> {
        match a {
            Action::Send(ServerMessage::Response { body: ResponseBody::Error { code, .. }, .. })
            | Action::Send(ServerMessage::Error { code, .. })
            | Action::Close { code, .. } => Some(*code),
            _ => None,
        }
    }

    #[test]
    fn given_a_valid_signature_then_the_session_is_authenticated() {
        let now = Instant::now();
        let (s, peer) = authed(now);
        assert_eq!(s.state(), State::Authenticated(peer));
        assert!(
            matches!(s.welcome(peer), ServerMessage::Welcome(Welcome { peer_id, .. }) if peer_id == peer)
        );
    }

    #[test]
    fn given_a_wrong_version_then_unsupported_version_closes() {
        let now = Instant::now();
        let mut s = session(now);
        let mut a = Identity::from_seed([3; 32]).authenticate(&challenge_of(&s));
        a.protocol_version = 2;
        let action = s.handle_frame(frame(ClientMessage::Authenticate(a)), now);
        assert!(matches!(action, Action::Close { code: ErrorCode::UnsupportedVersion, .. }), "{action:?}");
        assert_eq!(s.state(), State::Closing);
        assert_eq!(s.handle_frame(join(1), now), Action::None);
    }

    #[test]
    fn given_another_nonce_or_bad_signature_then_auth_failed_closes() {
        let now = Instant::now();
        let id = Identity::from_seed([3; 32]);
        let mut s = session(now);
        let other = Session::new(config(), node_id(), [9; NONCE_LEN], now);
        let a = id.authenticate(&challenge_of(&other));
        assert_eq!(
            code_of(&s.handle_frame(frame(ClientMessage::Authenticate(a)), now)),
            Some(ErrorCode::AuthFailed)
        );

        let mut s = session(now);
        let mut a = id.authenticate(&challenge_of(&s));
        a.signature[0] ^= 1;
        assert_eq!(
            code_of(&s.handle_frame(frame(ClientMessage::Authenticate(a)), now)),
            Some(ErrorCode::AuthFailed)
        );
    }

    #[test]
    fn given_a_request_before_auth_then_not_authenticated_and_the_session_stays() {
        let now = Instant::now();
        let mut s = session(now);
        let action = s.handle_frame(join(5), now);
        assert!(
            matches!(
                &action,
                Action::Send(ServerMessage::Response {
                    id: 5,
                    body: ResponseBody::Error { code: ErrorCode::NotAuthenticated, .. }
                })
            ),
            "{action:?}"
        );
        assert_eq!(s.state(), State::Challenged);
    }

    #[test]
    fn given_no_auth_within_the_timeout_then_auth_failed() {
        let now = Instant::now();
        let mut s = session(now);
        assert_eq!(s.deadline(), now + Duration::from_millis(500));
        assert_eq!(s.handle_timeout(now + Duration::from_millis(499)), Action::None);
        let action = s.handle_timeout(now + Duration::from_millis(500));
        assert_eq!(code_of(&action), Some(ErrorCode::AuthFailed));
    }

    #[test]
    fn given_frames_keep_arriving_then_the_idle_deadline_moves() {
        let t0 = Instant::now();
        let (mut s, _) = authed(t0);
        let t1 = t0 + Duration::from_millis(900);
        assert_eq!(s.handle_frame(frame(ClientMessage::Ping(4)), t1), Action::Send(ServerMessage::Pong(4)));
        assert_eq!(s.handle_timeout(t0 + Duration::from_millis(1000)), Action::None);
        assert_eq!(s.deadline(), t1 + Duration::from_millis(1000));
        assert_eq!(
            code_of(&s.handle_timeout(t1 + Duration::from_millis(1000))),
            Some(ErrorCode::IdleTimeout)
        );
    }

    #[test]
    fn token_bucket_refills_at_the_rate_up_to_the_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 3, t0);
        assert!(b.try_take(t0) && b.try_take(t0) && b.try_take(t0));
        assert!(!b.try_take(t0));
        assert!(!b.try_take(t0 + Duration::from_millis(99)));
        assert!(b.try_take(t0 + Duration::from_millis(100)));
        // A long pause refills only up to the burst.
        let later = t0 + Duration::from_secs(60);
        assert!(b.try_take(later) && b.try_take(later) && b.try_take(later));
        assert!(!b.try_take(later));
    }

    #[test]
    fn given_a_burst_then_rate_limited_and_then_policy_violation() {
        let now = Instant::now();
        let (mut s, _) = authed(now);
        for id in 0..3 {
            assert!(matches!(s.handle_frame(join(id), now), Action::Request { .. }));
        }
        for id in 3..7 {
            assert_eq!(code_of(&s.handle_frame(join(id), now)), Some(ErrorCode::RateLimited));
        }
        let last = s.handle_frame(join(7), now);
        assert!(
            matches!(&last, Action::Close { code: ErrorCode::PolicyViolation, reply: Some(_), .. }),
            "{last:?}"
        );
    }

    #[test]
    fn given_a_good_request_then_the_error_streak_resets() {
        let t0 = Instant::now();
        let (mut s, _) = authed(t0);
        let mut t = t0;
        for _ in 0..10 {
            for _ in 0..4 {
                assert_eq!(code_of(&s.handle_text(t)), Some(ErrorCode::BadRequest));
            }
            t += Duration::from_secs(1);
            assert!(matches!(s.handle_frame(join(1), t), Action::Request { .. }));
        }
    }

    #[test]
    fn given_malformed_frames_then_bad_request_with_the_request_id_when_known() {
        let now = Instant::now();
        let (mut s, _) = authed(now);
        assert_eq!(
            code_of(&s.handle_frame(Bytes::from_static(b"\xff\xff\xff"), now)),
            Some(ErrorCode::BadRequest)
        );
        let big = Bytes::from(vec![0u8; Limits::DEFAULT_MAX_FRAME_BYTES as usize + 1]);
        assert_eq!(code_of(&s.handle_frame(big, now)), Some(ErrorCode::TooLarge));
    }

    #[test]
    fn given_oversize_payload_or_lookup_page_then_their_codes() {
        let now = Instant::now();
        let (mut s, peer) = authed(now);
        let payload = Bytes::from(vec![0u8; Limits::DEFAULT_MAX_PAYLOAD_BYTES as usize + 1]);
        let body = RequestBody::Signal { to: peer, payload, ack: AckMode::FailuresOnly };
        let sig = frame(ClientMessage::Request { id: 1, body });
        assert_eq!(code_of(&s.handle_frame(sig, now)), Some(ErrorCode::TooLarge));
        let topic = TopicId::from_array([1; 32]);
        let lookup = |limit| {
            frame(ClientMessage::Request { id: 2, body: RequestBody::Lookup { topic, limit, cursor: None } })
        };
        assert_eq!(
            code_of(&s.handle_frame(lookup(Limits::DEFAULT_MAX_LOOKUP_PAGE + 1), now)),
            Some(ErrorCode::LimitExceeded)
        );
        assert_eq!(
            s.handle_frame(lookup(0), now),
            Action::Request {
                id: 2,
                op: Op::Lookup {
                    topic,
                    limit: PageLimit::up_to(Limits::DEFAULT_MAX_LOOKUP_PAGE),
                    cursor: None
                }
            }
        );
    }

    #[test]
    fn given_page_limits_then_only_1_to_max_can_be_made() {
        assert_eq!(PageLimit::new(0, 256).map(PageLimit::get), Ok(256));
        assert_eq!(PageLimit::new(1, 256).map(PageLimit::get), Ok(1));
        assert_eq!(PageLimit::new(256, 256).map(PageLimit::get), Ok(256));
        assert_eq!(PageLimit::new(257, 256), Err(PageTooLarge { requested: 257, max: 256 }));
        assert_eq!(PageLimit::new(u32::MAX, 256), Err(PageTooLarge { requested: u32::MAX, max: 256 }));
        // A node configured with a maximum page of 0 still serves pages of one.
        assert_eq!(PageLimit::new(0, 0).map(PageLimit::get), Ok(1));
        assert_eq!(PageLimit::up_to(0).get(), 1);
    }
}
