//! Domain messages of the edge protocol, parsed from the generated wire types.
//!
//! Parsing checks every field (lengths, required parts), so code that holds a [`ClientMessage`]
//! or a [`ServerMessage`] never sees an invalid id. Conversions into wire types are infallible.

use alloc::string::String;
use alloc::vec::Vec;

use bytes::Bytes;

use crate::auth::{NONCE_LEN, SIGNATURE_LEN};
use crate::error::ErrorCode;
use crate::ids::{InvalidId, NodeId, PeerId, TopicId};
use crate::limits::Limits;
use crate::wire;
use crate::wire::client_frame::Kind as CKind;
use crate::wire::server_frame::Kind as SKind;

/// A request id chosen by the client and echoed in the response.
pub type RequestId = u64;

/// What went wrong parsing a decoded protobuf frame into a domain message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The frame has no recognised kind (empty, or a kind this version does not know).
    #[error("{0} has no known kind")]
    UnknownKind(&'static str),
    /// A required field is missing.
    #[error("missing field {0}")]
    Missing(&'static str),
    /// A field holds an invalid id.
    #[error("invalid {field}: {source}")]
    InvalidId {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        source: InvalidId,
    },
    /// A fixed-size byte field has the wrong length.
    #[error("{field} must be {expected} bytes, got {actual}")]
    Length {
        /// The field.
        field: &'static str,
        /// The required length.
        expected: usize,
        /// The length received.
        actual: usize,
    },
}

/// The node's opening frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// Protocol versions the node speaks.
    pub protocol_versions: Vec<u32>,
    /// The node's identity, bound into the signature.
    pub node_id: NodeId,
    /// Fresh random bytes for this connection.
    pub nonce: [u8; NONCE_LEN],
}

/// The client's answer to the [`Challenge`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authenticate {
    /// The protocol version the client speaks.
    pub protocol_version: u32,
    /// The public key the client claims.
    pub peer_id: PeerId,
    /// Echo of the challenge nonce.
    pub nonce: [u8; NONCE_LEN],
    /// Signature over [`crate::auth::signed_message`].
    pub signature: [u8; SIGNATURE_LEN],
}

/// The node's answer to a successful authentication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Welcome {
    /// The version both sides speak from now on.
    pub protocol_version: u32,
    /// The authenticated peer id.
    pub peer_id: PeerId,
    /// The limits the node enforces.
    pub limits: Limits,
    /// Edge URLs of the other live nodes of the mesh, for failover (at most
    /// [`MAX_NODE_URLS`] of at most [`MAX_NODE_URL_BYTES`] each; a decoder drops the rest).
    pub node_urls: Vec<String>,
}

/// The most node URLs a `Welcome` carries (a decoder keeps the first this many).
pub const MAX_NODE_URLS: usize = 16;
/// The longest node URL a decoder keeps; longer ones are dropped.
pub const MAX_NODE_URL_BYTES: usize = 512;

/// A frame from a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientMessage {
    /// Answer to the challenge.
    Authenticate(Authenticate),
    /// A request; exactly one response with the same id follows.
    Request {
        /// Echoed in the response.
        id: RequestId,
        /// What is asked.
        body: RequestBody,
    },
    /// Keepalive probe; the node answers with a pong carrying the same nonce.
    Ping(u64),
    /// Answer to the node's ping.
    Pong(u64),
}

/// What a request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestBody {
    /// Join a topic, announcing or as a silent observer.
    Join {
        /// The topic.
        topic: TopicId,
        /// Whether other members see this peer.
        announce: bool,
    },
    /// Leave a topic.
    Leave {
        /// The topic.
        topic: TopicId,
    },
    /// A page of a topic's announced peers.
    Lookup {
        /// The topic.
        topic: TopicId,
        /// Page size; 0 means the node's maximum.
        limit: u32,
        /// Where the previous page ended (`None` for the first page).
        cursor: Option<PeerId>,
    },
    /// Relay an opaque payload to another peer.
    Signal {
        /// The target.
        to: PeerId,
        /// Opaque bytes.
        payload: Bytes,
        /// Which outcomes the node answers.
        ack: AckMode,
    },
}

/// Which responses a signal request gets (`SendSignal.ack`).
///
/// Added to protocol v1 without a version bump: a node that predates it ignores the field and
/// acknowledges every signal, so a client asking for [`AckMode::FailuresOnly`] must accept (and
/// may ignore) an `Ack` for such a request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AckMode {
    /// One response per signal: `Ok` once it is queued for the target, else an error.
    #[default]
    Always,
    /// A response only when the signal fails (with the request's id); nothing on delivery.
    FailuresOnly,
}

impl AckMode {
    /// The wire value. An unknown value from a newer client reads as [`AckMode::Always`], which
    /// answers more, never less.
    pub fn from_wire(value: i32) -> AckMode {
        match wire::AckMode::try_from(value) {
            Ok(wire::AckMode::FailuresOnly) => AckMode::FailuresOnly,
            _ => AckMode::Always,
        }
    }

    /// The wire value.
    pub fn to_wire(self) -> i32 {
        match self {
            AckMode::Always => wire::AckMode::Always as i32,
            AckMode::FailuresOnly => wire::AckMode::FailuresOnly as i32,
        }
    }

    /// Whether a delivered signal is answered with `Ok`.
    pub fn acks_success(self) -> bool {
        self == AckMode::Always
    }
}

/// A frame from a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerMessage {
    /// The opening frame.
    Challenge(Challenge),
    /// Authentication succeeded.
    Welcome(Welcome),
    /// The one response to a request.
    Response {
        /// The request's id.
        id: RequestId,
        /// The outcome.
        body: ResponseBody,
    },
    /// Something happened that the client subscribed to.
    Event(Event),
    /// Keepalive probe.
    Ping(u64),
    /// Answer to the client's ping.
    Pong(u64),
    /// An error not tied to a request.
    Error {
        /// The code.
        code: ErrorCode,
        /// A human-readable explanation.
        message: String,
    },
    /// The node is about to close the connection.
    Goodbye {
        /// Why.
        code: ErrorCode,
        /// A human-readable explanation.
        reason: String,
    },
}

/// The outcome of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseBody {
    /// Done (join, leave, and a signal handed to the target).
    Ok,
    /// A lookup page.
    Lookup {
        /// Announced peers, in ascending peer id order.
        peers: Vec<PeerId>,
        /// Pass back for the next page; `None` on the last page.
        next_cursor: Option<PeerId>,
    },
    /// The request failed.
    Error {
        /// The code.
        code: ErrorCode,
        /// A human-readable explanation.
        message: String,
    },
}

/// An event delivered to a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// An announcing peer joined a topic the client has joined.
    PeerJoined {
        /// The topic.
        topic: TopicId,
        /// The peer.
        peer: PeerId,
    },
    /// An announcing peer left a topic the client has joined.
    PeerLeft {
        /// The topic.
        topic: TopicId,
        /// The peer.
        peer: PeerId,
    },
    /// A signal from another peer.
    Signal {
        /// The sender (authenticated by its node).
        from: PeerId,
        /// Opaque bytes.
        payload: Bytes,
    },
}

// ---- parsing helpers -------------------------------------------------------------------------

fn peer(field: &'static str, b: &[u8]) -> Result<PeerId, ParseError> {
    PeerId::from_slice(b).map_err(|source| ParseError::InvalidId { field, source })
}

fn topic(field: &'static str, b: &[u8]) -> Result<TopicId, ParseError> {
    TopicId::from_slice(b).map_err(|source| ParseError::InvalidId { field, source })
}

fn fixed<const N: usize>(field: &'static str, b: &[u8]) -> Result<[u8; N], ParseError> {
    <[u8; N]>::try_from(b).map_err(|_| ParseError::Length { field, expected: N, actual: b.len() })
}

fn code(value: i32) -> ErrorCode {
    ErrorCode::from_wire(value).unwrap_or(ErrorCode::Internal)
}

// ---- client frames ---------------------------------------------------------------------------

impl ClientMessage {
    /// Parses a decoded wire frame. On failure the request id is returned too when the frame was
    /// a request, so the node can answer that request with `BAD_REQUEST`.
    pub fn from_wire(frame: wire::ClientFrame) -> Result<Self, (Option<RequestId>, ParseError)> {
        match frame.kind {
            None => Err((None, ParseError::UnknownKind("ClientFrame"))),
            Some(CKind::Authenticate(a)) => {
                let parse = || -> Result<Authenticate, ParseError> {
                    Ok(Authenticate {
                        protocol_version: a.protocol_version,
                        peer_id: peer("authenticate.peer_id", &a.peer_id)?,
                        nonce: fixed("authenticate.nonce", &a.nonce)?,
                        signature: fixed("authenticate.signature", &a.signature)?,
                    })
                };
                parse().map(ClientMessage::Authenticate).map_err(|e| (None, e))
            }
            Some(CKind::Request(r)) => {
                let id = r.id;
                RequestBody::from_wire(r.kind)
                    .map(|body| ClientMessage::Request { id, body })
                    .map_err(|e| (Some(id), e))
            }
            Some(CKind::Ping(p)) => Ok(ClientMessage::Ping(p.nonce)),
            Some(CKind::Pong(p)) => Ok(ClientMessage::Pong(p.nonce)),
        }
    }

    /// The wire form.
    pub fn into_wire(self) -> wire::ClientFrame {
        let kind = match self {
            ClientMessage::Authenticate(a) => CKind::Authenticate(wire::Authenticate {
                protocol_version: a.protocol_version,
                peer_id: a.peer_id.to_bytes(),
                nonce: Bytes::copy_from_slice(&a.nonce),
                signature: Bytes::copy_from_slice(&a.signature),
            }),
            ClientMessage::Request { id, body } => {
                CKind::Request(wire::Request { id, kind: Some(body.into_wire()) })
            }
            ClientMessage::Ping(nonce) => CKind::Ping(wire::Ping { nonce }),
            ClientMessage::Pong(nonce) => CKind::Pong(wire::Pong { nonce }),
        };
        wire::ClientFrame { kind: Some(kind) }
    }
}

impl RequestBody {
    fn from_wire(kind: Option<wire::request::Kind>) -> Result<Self, ParseError> {
        use wire::request::Kind;
        Ok(match kind.ok_or(ParseError::UnknownKind("Request"))? {
            Kind::Join(j) => {
                RequestBody::Join { topic: topic("join.topic", &j.topic)?, announce: j.announce }
            }
            Kind::Leave(l) => RequestBody::Leave { topic: topic("leave.topic", &l.topic)? },
            Kind::Lookup(l) => RequestBody::Lookup {
                topic: topic("lookup.topic", &l.topic)?,
                limit: l.limit,
                cursor: if l.cursor.is_empty() { None } else { Some(peer("lookup.cursor", &l.cursor)?) },
            },
            Kind::Signal(s) => RequestBody::Signal {
                to: peer("signal.to", &s.to)?,
                payload: s.payload,
                ack: AckMode::from_wire(s.ack),
            },
        })
    }

    fn into_wire(self) -> wire::request::Kind {
        use wire::request::Kind;
        match self {
            RequestBody::Join { topic, announce } => {
                Kind::Join(wire::Join { topic: topic.to_bytes(), announce })
            }
            RequestBody::Leave { topic } => Kind::Leave(wire::Leave { topic: topic.to_bytes() }),
            RequestBody::Lookup { topic, limit, cursor } => Kind::Lookup(wire::Lookup {
                topic: topic.to_bytes(),
                limit,
                cursor: cursor.map(|c| c.to_bytes()).unwrap_or_default(),
            }),
            RequestBody::Signal { to, payload, ack } => {
                Kind::Signal(wire::SendSignal { to: to.to_bytes(), payload, ack: ack.to_wire() })
            }
        }
    }
}

// ---- server frames ---------------------------------------------------------------------------

impl ServerMessage {
    /// Parses a decoded wire frame.
    pub fn from_wire(frame: wire::ServerFrame) -> Result<Self, ParseError> {
        Ok(match frame.kind.ok_or(ParseError::UnknownKind("ServerFrame"))? {
            SKind::Challenge(c) => ServerMessage::Challenge(Challenge {
                protocol_versions: c.protocol_versions,
                node_id: NodeId::new(c.node_id)
                    .map_err(|source| ParseError::InvalidId { field: "challenge.node_id", source })?,
                nonce: fixed("challenge.nonce", &c.nonce)?,
            }),
            SKind::Welcome(w) => ServerMessage::Welcome(Welcome {
                protocol_version: w.protocol_version,
                peer_id: peer("welcome.peer_id", &w.peer_id)?,
                limits: w.limits.ok_or(ParseError::Missing("welcome.limits"))?.into(),
                node_urls: w
                    .node_urls
                    .into_iter()
                    .filter(|u| !u.is_empty() && u.len() <= MAX_NODE_URL_BYTES)
                    .take(MAX_NODE_URLS)
                    .collect(),
            }),
            SKind::Response(r) => {
                use wire::response::Kind;
                let body = match r.kind.ok_or(ParseError::UnknownKind("Response"))? {
                    Kind::Ok(_) => ResponseBody::Ok,
                    Kind::Lookup(l) => ResponseBody::Lookup {
                        peers: l
                            .peers
                            .iter()
                            .map(|p| peer("lookup_result.peers", p))
                            .collect::<Result<_, _>>()?,
                        next_cursor: if l.next_cursor.is_empty() {
                            None
                        } else {
                            Some(peer("lookup_result.next_cursor", &l.next_cursor)?)
                        },
                    },
                    Kind::Error(e) => ResponseBody::Error { code: code(e.code), message: e.message },
                };
                ServerMessage::Response { id: r.id, body }
            }
            SKind::Event(e) => {
                use wire::event::Kind;
                ServerMessage::Event(match e.kind.ok_or(ParseError::UnknownKind("Event"))? {
                    Kind::PeerJoined(j) => Event::PeerJoined {
                        topic: topic("peer_joined.topic", &j.topic)?,
                        peer: peer("peer_joined.peer_id", &j.peer_id)?,
                    },
                    Kind::PeerLeft(l) => Event::PeerLeft {
                        topic: topic("peer_left.topic", &l.topic)?,
                        peer: peer("peer_left.peer_id", &l.peer_id)?,
                    },
                    Kind::Signal(s) => {
                        Event::Signal { from: peer("signal.from", &s.from)?, payload: s.payload }
                    }
                })
            }
            SKind::Ping(p) => ServerMessage::Ping(p.nonce),
            SKind::Pong(p) => ServerMessage::Pong(p.nonce),
            SKind::Error(e) => ServerMessage::Error { code: code(e.code), message: e.message },
            SKind::Goodbye(g) => ServerMessage::Goodbye { code: code(g.code), reason: g.reason },
        })
    }

    /// The wire form.
    pub fn into_wire(self) -> wire::ServerFrame {
        let kind = match self {
            ServerMessage::Challenge(c) => SKind::Challenge(wire::Challenge {
                protocol_versions: c.protocol_versions,
                node_id: c.node_id.as_bytes().clone(),
                nonce: Bytes::copy_from_slice(&c.nonce),
            }),
            ServerMessage::Welcome(w) => SKind::Welcome(wire::Welcome {
                protocol_version: w.protocol_version,
                peer_id: w.peer_id.to_bytes(),
                limits: Some(w.limits.into()),
                node_urls: w.node_urls,
            }),
            ServerMessage::Response { id, body } => {
                use wire::response::Kind;
                let kind = match body {
                    ResponseBody::Ok => Kind::Ok(wire::Ack {}),
                    ResponseBody::Lookup { peers, next_cursor } => Kind::Lookup(wire::LookupResult {
                        peers: peers.iter().map(PeerId::to_bytes).collect(),
                        next_cursor: next_cursor.map(|c| c.to_bytes()).unwrap_or_default(),
                    }),
                    ResponseBody::Error { code, message } => {
                        Kind::Error(wire::Error { code: code.to_wire(), message })
                    }
                };
                SKind::Response(wire::Response { id, kind: Some(kind) })
            }
            ServerMessage::Event(e) => {
                use wire::event::Kind;
                let kind = match e {
                    Event::PeerJoined { topic, peer } => Kind::PeerJoined(wire::PeerJoined {
                        topic: topic.to_bytes(),
                        peer_id: peer.to_bytes(),
                    }),
                    Event::PeerLeft { topic, peer } => {
                        Kind::PeerLeft(wire::PeerLeft { topic: topic.to_bytes(), peer_id: peer.to_bytes() })
                    }
                    Event::Signal { from, payload } => {
                        Kind::Signal(wire::Signal { from: from.to_bytes(), payload })
                    }
                };
                SKind::Event(wire::Event { kind: Some(kind) })
            }
            ServerMessage::Ping(nonce) => SKind::Ping(wire::Ping { nonce }),
            ServerMessage::Pong(nonce) => SKind::Pong(wire::Pong { nonce }),
            ServerMessage::Error { code, message } => {
                SKind::Error(wire::Error { code: code.to_wire(), message })
            }
            ServerMessage::Goodbye { code, reason } => {
                SKind::Goodbye(wire::Goodbye { code: code.to_wire(), reason })
            }
        };
        wire::ServerFrame { kind: Some(kind) }
    }
}
