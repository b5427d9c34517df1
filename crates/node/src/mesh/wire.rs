//! The mesh protocol's validated types and their encoding (`mesh/v1/mesh.proto`, raw types in
//! [`signal_mesh_proto::mesh_wire`]). Everything a remote node sends is parsed here, with size
//! limits, before the rest of the node sees it: a malformed message is a [`WireError`], never a
//! panic, and the caller counts and drops it.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message;
use signal_mesh_proto::mesh_wire as w;
use signal_mesh_proto::{ErrorCode, PeerId, TopicId};

/// Largest presence gossip message (also gossipsub's transmit limit).
pub const MAX_PRESENCE_BYTES: usize = 1 << 20;
/// Largest snapshot response.
pub const MAX_SNAPSHOT_BYTES: usize = 64 << 20;
/// Largest frame on a signal link: a signal payload plus ids and framing.
pub const MAX_LINK_FRAME_BYTES: usize = 256 * 1024;
/// Most addresses or links kept from a status.
const MAX_STATUS_LIST: usize = 64;
/// Longest string kept from a status.
const MAX_STATUS_STRING: usize = 512;

/// Why a mesh message was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Not a valid protobuf message of the expected type.
    #[error("undecodable mesh message: {0}")]
    Decode(String),
    /// Larger than the limit for its channel.
    #[error("mesh message of {0} bytes is over the limit")]
    TooLarge(usize),
    /// A required part is missing.
    #[error("mesh message without {0}")]
    Missing(&'static str),
    /// An id of the wrong length.
    #[error("invalid {0} in a mesh message")]
    InvalidId(&'static str),
}

/// One change of an origin's local presence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delta {
    /// A peer authenticated (at `since_ms` on the origin's clock).
    Up { peer: PeerId, since_ms: u64 },
    /// A peer disconnected.
    Down { peer: PeerId },
    /// A peer announces itself in a topic.
    Announce { peer: PeerId, topic: TopicId },
    /// A peer stops announcing itself in a topic.
    Withdraw { peer: PeerId, topic: TopicId },
}

/// Consecutive deltas numbered from `first_seq`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeltaBatch {
    /// The sequence number of the first delta.
    pub first_seq: u64,
    /// The deltas.
    pub deltas: Vec<Delta>,
}

/// One link of a node, as it reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkStatus {
    /// The other node.
    pub node: libp2p::PeerId,
    /// Ping round trip, microseconds (0: not measured).
    pub rtt_us: u32,
}

/// What a node reports about itself in its heartbeat.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeStatus {
    pub version: String,
    pub now_ms: u64,
    pub uptime_ms: u64,
    pub public_url: String,
    pub addresses: Vec<String>,
    pub edge_peers: u32,
    pub topics: u32,
    pub signals_local: u64,
    pub signals_forwarded: u64,
    pub signals_received: u64,
    pub requests: u64,
    pub errors: u64,
    pub signals_per_second: u32,
    pub requests_per_second: u32,
    pub links: Vec<LinkStatus>,
    pub malformed_mesh_messages: u64,
}

/// A gossiped presence message's body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Presence {
    /// New deltas.
    Deltas(DeltaBatch),
    /// Alive, published up to `seq`.
    Heartbeat { seq: u64, status: NodeStatus },
    /// Shutting down.
    Farewell { seq: u64 },
}

/// A gossiped presence message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresenceMessage {
    /// The origin's incarnation.
    pub incarnation: u64,
    /// What it says.
    pub body: Presence,
}

/// One peer in a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerRecord {
    pub peer: PeerId,
    pub since_ms: u64,
    pub topics: Vec<TopicId>,
}

/// An origin's whole local presence as of `seq`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub incarnation: u64,
    pub seq: u64,
    pub peers: Vec<PeerRecord>,
}

/// A signal forwarded to the node its target is connected to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardFrame {
    pub seq: u64,
    pub from: PeerId,
    pub to: PeerId,
    pub payload: Bytes,
}

/// What became of a forwarded signal: `None` when it was queued for the peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResultFrame {
    pub seq: u64,
    pub error: Option<ErrorCode>,
}

/// A frame on a signal link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkFrame {
    Forward(ForwardFrame),
    Result(ResultFrame),
}

fn peer(field: &'static str, b: &[u8]) -> Result<PeerId, WireError> {
    PeerId::from_slice(b).map_err(|_| WireError::InvalidId(field))
}

fn topic(field: &'static str, b: &[u8]) -> Result<TopicId, WireError> {
    TopicId::from_slice(b).map_err(|_| WireError::InvalidId(field))
}

fn short(mut s: String) -> String {
    if s.len() > MAX_STATUS_STRING {
        let cut = crate::gateway::truncate(&s, MAX_STATUS_STRING).len();
        s.truncate(cut);
    }
    s
}

fn decode<M: Message + Default>(bytes: &[u8], max: usize) -> Result<M, WireError> {
    if bytes.len() > max {
        return Err(WireError::TooLarge(bytes.len()));
    }
    M::decode(bytes).map_err(|e| WireError::Decode(e.to_string()))
}

impl Delta {
    fn to_wire(self) -> w::Delta {
        use w::delta::Kind;
        let kind = match self {
            Delta::Up { peer, since_ms } => Kind::Up(w::PeerUp { peer: peer.to_bytes(), since_ms }),
            Delta::Down { peer } => Kind::Down(w::PeerDown { peer: peer.to_bytes() }),
            Delta::Announce { peer, topic } => {
                Kind::Announce(w::Announce { peer: peer.to_bytes(), topic: topic.to_bytes() })
            }
            Delta::Withdraw { peer, topic } => {
                Kind::Withdraw(w::Withdraw { peer: peer.to_bytes(), topic: topic.to_bytes() })
            }
        };
        w::Delta { kind: Some(kind) }
    }

    fn from_wire(d: w::Delta) -> Result<Delta, WireError> {
        use w::delta::Kind;
        Ok(match d.kind.ok_or(WireError::Missing("delta kind"))? {
            Kind::Up(u) => Delta::Up { peer: peer("up.peer", &u.peer)?, since_ms: u.since_ms },
            Kind::Down(u) => Delta::Down { peer: peer("down.peer", &u.peer)? },
            Kind::Announce(a) => Delta::Announce {
                peer: peer("announce.peer", &a.peer)?,
                topic: topic("announce.topic", &a.topic)?,
            },
            Kind::Withdraw(a) => Delta::Withdraw {
                peer: peer("withdraw.peer", &a.peer)?,
                topic: topic("withdraw.topic", &a.topic)?,
            },
        })
    }
}

impl NodeStatus {
    fn to_wire(&self) -> w::NodeStatus {
        w::NodeStatus {
            version: self.version.clone(),
            now_ms: self.now_ms,
            uptime_ms: self.uptime_ms,
            public_url: self.public_url.clone(),
            addresses: self.addresses.clone(),
            edge_peers: self.edge_peers,
            topics: self.topics,
            signals_local: self.signals_local,
            signals_forwarded: self.signals_forwarded,
            signals_received: self.signals_received,
            requests: self.requests,
            errors: self.errors,
            signals_per_second: self.signals_per_second,
            requests_per_second: self.requests_per_second,
            links: self
                .links
                .iter()
                .map(|l| w::Link { node_id: Bytes::from(l.node.to_bytes()), rtt_us: l.rtt_us })
                .collect(),
            malformed_mesh_messages: self.malformed_mesh_messages,
        }
    }

    fn from_wire(s: w::NodeStatus) -> NodeStatus {
        NodeStatus {
            version: short(s.version),
            now_ms: s.now_ms,
            uptime_ms: s.uptime_ms,
            public_url: short(s.public_url),
            addresses: s.addresses.into_iter().take(MAX_STATUS_LIST).map(short).collect(),
            edge_peers: s.edge_peers,
            topics: s.topics,
            signals_local: s.signals_local,
            signals_forwarded: s.signals_forwarded,
            signals_received: s.signals_received,
            requests: s.requests,
            errors: s.errors,
            signals_per_second: s.signals_per_second,
            requests_per_second: s.requests_per_second,
            // Links naming no valid node are dropped, not fatal: the rest of the status stands.
            links: s
                .links
                .into_iter()
                .take(MAX_STATUS_LIST)
                .filter_map(|l| {
                    let node = libp2p::PeerId::from_bytes(&l.node_id).ok()?;
                    Some(LinkStatus { node, rtt_us: l.rtt_us })
                })
                .collect(),
            malformed_mesh_messages: s.malformed_mesh_messages,
        }
    }
}

impl PresenceMessage {
    /// The gossip payload.
    pub fn encode(&self) -> Vec<u8> {
        use w::presence_message::Kind;
        let kind = match &self.body {
            Presence::Deltas(b) => Kind::Deltas(w::Deltas {
                first_seq: b.first_seq,
                deltas: b.deltas.iter().map(|d| d.to_wire()).collect(),
            }),
            Presence::Heartbeat { seq, status } => {
                Kind::Heartbeat(w::Heartbeat { seq: *seq, status: Some(status.to_wire()) })
            }
            Presence::Farewell { seq } => Kind::Farewell(w::Farewell { seq: *seq }),
        };
        w::PresenceMessage { incarnation: self.incarnation, kind: Some(kind) }.encode_to_vec()
    }

    /// Parses a gossip payload.
    pub fn decode(bytes: &[u8]) -> Result<PresenceMessage, WireError> {
        use w::presence_message::Kind;
        let m: w::PresenceMessage = decode(bytes, MAX_PRESENCE_BYTES)?;
        let body = match m.kind.ok_or(WireError::Missing("presence kind"))? {
            Kind::Deltas(d) => {
                if d.first_seq == 0 {
                    return Err(WireError::Missing("deltas.first_seq"));
                }
                Presence::Deltas(DeltaBatch {
                    first_seq: d.first_seq,
                    deltas: d.deltas.into_iter().map(Delta::from_wire).collect::<Result<_, _>>()?,
                })
            }
            Kind::Heartbeat(h) => Presence::Heartbeat {
                seq: h.seq,
                status: NodeStatus::from_wire(h.status.ok_or(WireError::Missing("heartbeat.status"))?),
            },
            Kind::Farewell(f) => Presence::Farewell { seq: f.seq },
        };
        Ok(PresenceMessage { incarnation: m.incarnation, body })
    }
}

impl Snapshot {
    /// The response payload.
    pub fn encode(&self) -> Vec<u8> {
        w::Snapshot {
            incarnation: self.incarnation,
            seq: self.seq,
            peers: self
                .peers
                .iter()
                .map(|p| w::PeerRecord {
                    peer: p.peer.to_bytes(),
                    since_ms: p.since_ms,
                    topics: p.topics.iter().map(TopicId::to_bytes).collect(),
                })
                .collect(),
        }
        .encode_to_vec()
    }

    /// Parses a response payload.
    pub fn decode(bytes: &[u8]) -> Result<Snapshot, WireError> {
        let s: w::Snapshot = decode(bytes, MAX_SNAPSHOT_BYTES)?;
        let peers = s
            .peers
            .into_iter()
            .map(|p| {
                Ok(PeerRecord {
                    peer: peer("record.peer", &p.peer)?,
                    since_ms: p.since_ms,
                    topics: p.topics.iter().map(|t| topic("record.topic", t)).collect::<Result<_, _>>()?,
                })
            })
            .collect::<Result<_, WireError>>()?;
        Ok(Snapshot { incarnation: s.incarnation, seq: s.seq, peers })
    }
}

impl LinkFrame {
    /// Appends the frame, length-prefixed (u32 big-endian), to `out`.
    pub fn encode_into(&self, out: &mut BytesMut) {
        use w::link_frame::Kind;
        let kind = match self {
            LinkFrame::Forward(f) => Kind::Forward(w::Forward {
                seq: f.seq,
                from: f.from.to_bytes(),
                to: f.to.to_bytes(),
                payload: f.payload.clone(),
            }),
            LinkFrame::Result(r) => {
                Kind::Result(w::ForwardResult { seq: r.seq, code: r.error.map_or(0, ErrorCode::to_wire) })
            }
        };
        let msg = w::LinkFrame { kind: Some(kind) };
        let len = msg.encoded_len();
        out.reserve(4 + len);
        out.put_u32(len as u32);
        // Encoding into a buffer with enough room cannot fail.
        let _ = msg.encode(out);
    }

    /// Splits the next whole frame off `buf`: `Ok(None)` until one is complete.
    pub fn decode_from(buf: &mut BytesMut) -> Result<Option<LinkFrame>, WireError> {
        if buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len > MAX_LINK_FRAME_BYTES {
            return Err(WireError::TooLarge(len));
        }
        if buf.len() < 4 + len {
            buf.reserve(4 + len - buf.len());
            return Ok(None);
        }
        buf.advance(4);
        let frame = buf.split_to(len).freeze();
        use w::link_frame::Kind;
        let m = w::LinkFrame::decode(frame).map_err(|e| WireError::Decode(e.to_string()))?;
        Ok(Some(match m.kind.ok_or(WireError::Missing("link frame kind"))? {
            Kind::Forward(f) => LinkFrame::Forward(ForwardFrame {
                seq: f.seq,
                from: peer("forward.from", &f.from)?,
                to: peer("forward.to", &f.to)?,
                payload: f.payload,
            }),
            Kind::Result(r) => LinkFrame::Result(ResultFrame {
                seq: r.seq,
                // An unknown code (a newer node) still means "not delivered".
                error: if r.code == 0 {
                    None
                } else {
                    Some(ErrorCode::from_wire(r.code).unwrap_or(ErrorCode::Internal))
                },
            }),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: u8) -> PeerId {
        PeerId::from_array([n; 32])
    }

    fn t(n: u8) -> TopicId {
        TopicId::from_array([n; 32])
    }

    #[test]
    fn presence_messages_round_trip() {
        for body in [
            Presence::Deltas(DeltaBatch {
                first_seq: 7,
                deltas: vec![
                    Delta::Up { peer: p(1), since_ms: 5 },
                    Delta::Announce { peer: p(1), topic: t(2) },
                    Delta::Withdraw { peer: p(1), topic: t(2) },
                    Delta::Down { peer: p(1) },
                ],
            }),
            Presence::Heartbeat {
                seq: 9,
                status: NodeStatus {
                    version: "0.1.0".into(),
                    public_url: "ws://x/signal".into(),
                    links: vec![LinkStatus { node: libp2p::PeerId::random(), rtt_us: 250 }],
                    ..NodeStatus::default()
                },
            },
            Presence::Farewell { seq: 3 },
        ] {
            let m = PresenceMessage { incarnation: 42, body };
            assert_eq!(PresenceMessage::decode(&m.encode()), Ok(m));
        }
    }

    #[test]
    fn garbage_presence_is_an_error_not_a_panic() {
        assert!(PresenceMessage::decode(&[0xff, 0xff, 0xff]).is_err());
        assert_eq!(PresenceMessage::decode(&[]), Err(WireError::Missing("presence kind")));
        let bad = w::PresenceMessage {
            incarnation: 1,
            kind: Some(w::presence_message::Kind::Deltas(w::Deltas {
                first_seq: 1,
                deltas: vec![w::Delta {
                    kind: Some(w::delta::Kind::Down(w::PeerDown { peer: vec![1, 2].into() })),
                }],
            })),
        };
        assert_eq!(PresenceMessage::decode(&bad.encode_to_vec()), Err(WireError::InvalidId("down.peer")));
        assert_eq!(
            PresenceMessage::decode(&vec![0u8; MAX_PRESENCE_BYTES + 1]),
            Err(WireError::TooLarge(MAX_PRESENCE_BYTES + 1))
        );
    }

    #[test]
    fn link_frames_are_split_from_a_byte_stream_in_any_chunking() {
        let frames = vec![
            LinkFrame::Forward(ForwardFrame {
                seq: 1,
                from: p(1),
                to: p(2),
                payload: Bytes::from_static(b"offer"),
            }),
            LinkFrame::Result(ResultFrame { seq: 1, error: None }),
            LinkFrame::Result(ResultFrame { seq: 2, error: Some(ErrorCode::PeerBusy) }),
        ];
        let mut all = BytesMut::new();
        for f in &frames {
            f.encode_into(&mut all);
        }
        for chunk in [1, 3, 7, all.len()] {
            let mut buf = BytesMut::new();
            let mut out = Vec::new();
            for piece in all.chunks(chunk) {
                buf.extend_from_slice(piece);
                while let Some(f) = LinkFrame::decode_from(&mut buf).unwrap() {
                    out.push(f);
                }
            }
            assert_eq!(out, frames);
        }
        let mut huge = BytesMut::from(&((MAX_LINK_FRAME_BYTES as u32 + 1).to_be_bytes())[..]);
        assert!(matches!(LinkFrame::decode_from(&mut huge), Err(WireError::TooLarge(_))));
        let mut junk = BytesMut::from(&[0, 0, 0, 2, 0xff, 0xff][..]);
        assert!(matches!(LinkFrame::decode_from(&mut junk), Err(WireError::Decode(_))));
    }
}
