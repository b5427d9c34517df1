//! One WebSocket binary frame <-> one message.
//!
//! Decoding takes [`Bytes`] so that byte fields (signal payloads above all) are slices of the
//! received frame, not copies: a relayed payload is never copied by the node.

use alloc::string::{String, ToString};

use bytes::Bytes;
use prost::Message;

use crate::error::ErrorCode;
use crate::message::{ClientMessage, Event, ParseError, RequestId, ResponseBody, ServerMessage};
use crate::wire;

/// Why a frame could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The frame is larger than allowed; it was not parsed.
    #[error("frame of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The frame's size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes are not a valid protobuf message of the expected type.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The protobuf decoded but a field is invalid or the kind is unknown.
    #[error("invalid frame: {error}")]
    Invalid {
        /// The request id, when the frame was a request (so the error can answer it).
        request_id: Option<RequestId>,
        /// What is wrong.
        error: ParseError,
    },
}

impl DecodeError {
    /// The wire error code for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::TooLarge { .. } => ErrorCode::TooLarge,
            DecodeError::Malformed(_) | DecodeError::Invalid { .. } => ErrorCode::BadRequest,
        }
    }

    /// The id of the request this frame carried, if it got that far.
    pub fn request_id(&self) -> Option<RequestId> {
        match self {
            DecodeError::Invalid { request_id, .. } => *request_id,
            _ => None,
        }
    }
}

fn check_size(len: usize, max: usize) -> Result<(), DecodeError> {
    if len > max { Err(DecodeError::TooLarge { size: len, max }) } else { Ok(()) }
}

/// Decodes a client frame of at most `max_frame_bytes`.
pub fn decode_client(frame: Bytes, max_frame_bytes: usize) -> Result<ClientMessage, DecodeError> {
    check_size(frame.len(), max_frame_bytes)?;
    let wire = wire::ClientFrame::decode(frame).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    ClientMessage::from_wire(wire).map_err(|(request_id, error)| DecodeError::Invalid { request_id, error })
}

/// Decodes a server frame of at most `max_frame_bytes`.
pub fn decode_server(frame: Bytes, max_frame_bytes: usize) -> Result<ServerMessage, DecodeError> {
    check_size(frame.len(), max_frame_bytes)?;
    let wire = wire::ServerFrame::decode(frame).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    ServerMessage::from_wire(wire).map_err(|error| DecodeError::Invalid { request_id: None, error })
}

/// Encodes a client frame.
pub fn encode_client(msg: ClientMessage) -> Bytes {
    msg.into_wire().encode_to_vec().into()
}

/// Encodes a server frame.
///
/// The two frames a node sends most — a relayed `Signal` event and a `Lookup` page — are written
/// straight into one exactly sized buffer ([`fast`]); building the prost structs first would
/// allocate a `Bytes` per peer id and copy each one again. Tests check that both paths produce the
/// same bytes, so the `.proto` stays the one source of truth.
pub fn encode_server(msg: ServerMessage) -> Bytes {
    match msg {
        ServerMessage::Event(Event::Signal { from, payload }) => fast::signal_event(&from, &payload),
        ServerMessage::Response { id, body: ResponseBody::Lookup { peers, next_cursor } } => {
            fast::lookup_response(id, &peers, next_cursor.as_ref())
        }
        msg => msg.into_wire().encode_to_vec().into(),
    }
}

/// Hand-written encoders for the hot server frames; field numbers follow `edge.proto`.
mod fast {
    use alloc::vec::Vec;

    use bytes::Bytes;
    use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

    use crate::ids::PeerId;

    // ServerFrame.event = 4, Event.signal = 3, Signal.from = 1, Signal.payload = 2.
    // ServerFrame.response = 3, Response.id = 1, Response.lookup = 3,
    // LookupResult.peers = 1, LookupResult.next_cursor = 2.

    /// Length of a length-delimited field with tag `tag` holding `len` bytes.
    fn field_len(tag: u32, len: usize) -> usize {
        key_len(tag) + encoded_len_varint(len as u64) + len
    }

    /// Length of a proto3 `bytes` field: omitted when empty.
    fn bytes_field_len(tag: u32, len: usize) -> usize {
        if len == 0 { 0 } else { field_len(tag, len) }
    }

    fn put_header(buf: &mut Vec<u8>, tag: u32, len: usize) {
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(len as u64, buf);
    }

    fn put_bytes(buf: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
        if !bytes.is_empty() {
            put_header(buf, tag, bytes.len());
            buf.extend_from_slice(bytes);
        }
    }

    pub(super) fn signal_event(from: &PeerId, payload: &[u8]) -> Bytes {
        let signal = field_len(1, PeerId::LEN) + bytes_field_len(2, payload.len());
        let event = field_len(3, signal);
        let mut buf = Vec::with_capacity(field_len(4, event));
        put_header(&mut buf, 4, event);
        put_header(&mut buf, 3, signal);
        put_bytes(&mut buf, 1, from.as_bytes());
        put_bytes(&mut buf, 2, payload);
        buf.into()
    }

    pub(super) fn lookup_response(id: u64, peers: &[PeerId], next: Option<&PeerId>) -> Bytes {
        let result = peers.len() * field_len(1, PeerId::LEN) + next.map_or(0, |_| field_len(2, PeerId::LEN));
        let id_len = if id == 0 { 0 } else { key_len(1) + encoded_len_varint(id) };
        let response = id_len + field_len(3, result);
        let mut buf = Vec::with_capacity(field_len(3, response));
        put_header(&mut buf, 3, response);
        if id != 0 {
            encode_key(1, WireType::Varint, &mut buf);
            encode_varint(id, &mut buf);
        }
        put_header(&mut buf, 3, result);
        for peer in peers {
            // Peer ids are never empty, so this is always written (repeated bytes keep empties too).
            put_header(&mut buf, 1, PeerId::LEN);
            buf.extend_from_slice(peer.as_bytes());
        }
        if let Some(next) = next {
            put_bytes(&mut buf, 2, next.as_bytes());
        }
        buf.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{NodeId, PeerId, TopicId};
    use crate::limits::Limits;
    use crate::message::{AckMode, Authenticate, Challenge, RequestBody, Welcome};

    const MAX: usize = 65_536;

    fn client_round_trip(msg: ClientMessage) {
        let bytes = encode_client(msg.clone());
        assert_eq!(decode_client(bytes, MAX), Ok(msg));
    }

    fn server_round_trip(msg: ServerMessage) {
        let bytes = encode_server(msg.clone());
        assert_eq!(decode_server(bytes, MAX), Ok(msg));
    }

    #[test]
    fn every_client_message_round_trips() {
        let topic = TopicId::from_name("room").unwrap();
        let peer = PeerId::from_array([3; 32]);
        client_round_trip(ClientMessage::Authenticate(Authenticate {
            protocol_version: 1,
            peer_id: peer,
            nonce: [4; 32],
            signature: [5; 64],
        }));
        for body in [
            RequestBody::Join { topic, announce: true },
            RequestBody::Join { topic, announce: false },
            RequestBody::Leave { topic },
            RequestBody::Lookup { topic, limit: 0, cursor: None },
            RequestBody::Lookup { topic, limit: 10, cursor: Some(peer) },
            RequestBody::Signal { to: peer, payload: Bytes::from_static(b"v=0 sdp"), ack: AckMode::Always },
            RequestBody::Signal { to: peer, payload: Bytes::new(), ack: AckMode::Always },
            RequestBody::Signal {
                to: peer,
                payload: Bytes::from_static(b"a=candidate"),
                ack: AckMode::FailuresOnly,
            },
            RequestBody::Signal { to: peer, payload: Bytes::new(), ack: AckMode::FailuresOnly },
        ] {
            client_round_trip(ClientMessage::Request { id: 42, body });
        }
        client_round_trip(ClientMessage::Ping(7));
        client_round_trip(ClientMessage::Pong(u64::MAX));
    }

    #[test]
    fn every_server_message_round_trips() {
        let topic = TopicId::from_name("room").unwrap();
        let peer = PeerId::from_array([3; 32]);
        server_round_trip(ServerMessage::Challenge(Challenge {
            protocol_versions: vec![1],
            node_id: NodeId::new(vec![1u8; 32]).unwrap(),
            nonce: [2; 32],
        }));
        server_round_trip(ServerMessage::Welcome(Welcome {
            protocol_version: 1,
            peer_id: peer,
            limits: Limits::default(),
            node_urls: vec!["wss://n2.example.org/signal".into(), "ws://127.0.0.1:4001/signal".into()],
        }));
        for body in [
            ResponseBody::Ok,
            ResponseBody::Lookup { peers: vec![], next_cursor: None },
            ResponseBody::Lookup { peers: vec![peer, PeerId::from_array([9; 32])], next_cursor: Some(peer) },
            ResponseBody::Error { code: ErrorCode::PeerNotFound, message: "gone".into() },
        ] {
            server_round_trip(ServerMessage::Response { id: 1, body });
        }
        server_round_trip(ServerMessage::Event(Event::PeerJoined { topic, peer }));
        server_round_trip(ServerMessage::Event(Event::PeerLeft { topic, peer }));
        server_round_trip(ServerMessage::Event(Event::Signal {
            from: peer,
            payload: Bytes::from_static(b"x"),
        }));
        server_round_trip(ServerMessage::Ping(1));
        server_round_trip(ServerMessage::Pong(2));
        server_round_trip(ServerMessage::Error { code: ErrorCode::BadRequest, message: "m".into() });
        server_round_trip(ServerMessage::Goodbye { code: ErrorCode::ShuttingDown, reason: "bye".into() });
    }

    #[test]
    fn fast_encoders_match_prost_byte_for_byte() {
        let peers: Vec<PeerId> = (0u8..=255).map(|i| PeerId::from_array([i; 32])).collect();
        let mut cases = Vec::new();
        for payload in [Vec::new(), b"x".to_vec(), vec![7u8; 127], vec![8u8; 128], vec![9u8; 70_000]] {
            cases.push(ServerMessage::Event(Event::Signal { from: peers[3], payload: payload.into() }));
        }
        for id in [0, 1, 127, 128, u64::MAX] {
            for n in [0, 1, 5, 256] {
                for next_cursor in [None, Some(peers[9])] {
                    let body = ResponseBody::Lookup { peers: peers[..n].to_vec(), next_cursor };
                    cases.push(ServerMessage::Response { id, body });
                }
            }
        }
        for msg in cases {
            let expected = msg.clone().into_wire().encode_to_vec();
            assert_eq!(encode_server(msg.clone()).as_ref(), expected.as_slice(), "{msg:?}");
            assert_eq!(decode_server(encode_server(msg.clone()), usize::MAX), Ok(msg));
        }
    }

    /// `SendSignal` as a node built before `ack` (field 3) was added knew it.
    #[derive(Clone, PartialEq, prost::Message)]
    struct SendSignalV1Original {
        #[prost(bytes = "bytes", tag = "1")]
        to: Bytes,
        #[prost(bytes = "bytes", tag = "2")]
        payload: Bytes,
    }

    #[test]
    fn ack_mode_is_additive_old_nodes_skip_it_and_unknown_values_read_as_always() {
        let to = PeerId::from_array([6; 32]);
        let new = wire::SendSignal {
            to: to.to_bytes(),
            payload: Bytes::from_static(b"cand"),
            ack: wire::AckMode::FailuresOnly as i32,
        };
        // An old node decodes the new message, skipping the unknown field: same target and
        // payload, and (knowing no ack mode) it answers as it always did.
        let old = SendSignalV1Original::decode(new.encode_to_vec().as_slice()).unwrap();
        assert_eq!((old.to, old.payload), (to.to_bytes(), Bytes::from_static(b"cand")));
        // The default mode is not written at all: an `Always` signal is byte for byte the frame
        // an old client sends.
        let always = wire::SendSignal { ack: 0, ..new.clone() };
        let original = SendSignalV1Original { to: to.to_bytes(), payload: Bytes::from_static(b"cand") };
        assert_eq!(always.encode_to_vec(), original.encode_to_vec());
        // A mode from a newer client reads as Always: it is answered more, never less.
        let future = wire::ClientFrame {
            kind: Some(wire::client_frame::Kind::Request(wire::Request {
                id: 3,
                kind: Some(wire::request::Kind::Signal(wire::SendSignal { ack: 7, ..new })),
            })),
        };
        let Ok(ClientMessage::Request { id: 3, body: RequestBody::Signal { ack, .. } }) =
            decode_client(future.encode_to_vec().into(), MAX)
        else {
            panic!("not a signal")
        };
        assert_eq!(ack, AckMode::Always);
        assert!(AckMode::Always.acks_success() && !AckMode::FailuresOnly.acks_success());
    }

    #[test]
    fn oversize_frames_are_rejected_before_parsing() {
        let err = decode_client(Bytes::from(vec![0xff; 101]), 100).unwrap_err();
        assert_eq!(err, DecodeError::TooLarge { size: 101, max: 100 });
        assert_eq!(err.code(), ErrorCode::TooLarge);
    }

    #[test]
    fn garbage_and_truncated_frames_are_malformed() {
        let err = decode_client(Bytes::from_static(b"\xff\xff\xff\xff"), MAX).unwrap_err();
        assert!(matches!(err, DecodeError::Malformed(_)), "{err:?}");
        assert_eq!(err.code(), ErrorCode::BadRequest);

        let full = encode_client(ClientMessage::Request {
            id: 1,
            body: RequestBody::Signal {
                to: PeerId::from_array([1; 32]),
                payload: Bytes::from_static(b"hello"),
                ack: AckMode::Always,
            },
        });
        let truncated = full.slice(..full.len() - 3);
        assert!(matches!(decode_client(truncated, MAX), Err(DecodeError::Malformed(_))));
    }

    #[test]
    fn empty_and_unknown_kinds_are_invalid() {
        let err = decode_client(Bytes::new(), MAX).unwrap_err();
        assert_eq!(
            err,
            DecodeError::Invalid { request_id: None, error: ParseError::UnknownKind("ClientFrame") }
        );
        // Field 15, varint 1: a kind from a future version.
        let err = decode_client(Bytes::from_static(&[0x78, 0x01]), MAX).unwrap_err();
        assert_eq!(err.code(), ErrorCode::BadRequest);
        // A request with id 9 and no kind keeps its id so the error can answer it.
        let req = wire::ClientFrame {
            kind: Some(wire::client_frame::Kind::Request(wire::Request { id: 9, kind: None })),
        };
        let err = decode_client(req.encode_to_vec().into(), MAX).unwrap_err();
        assert_eq!(err.request_id(), Some(9));
    }

    #[test]
    fn invalid_ids_are_rejected_with_the_request_id() {
        let req = wire::ClientFrame {
            kind: Some(wire::client_frame::Kind::Request(wire::Request {
                id: 5,
                kind: Some(wire::request::Kind::Signal(wire::SendSignal {
                    to: Bytes::from_static(&[1; 31]),
                    payload: Bytes::new(),
                    ack: 0,
                })),
            })),
        };
        let err = decode_client(req.encode_to_vec().into(), MAX).unwrap_err();
        assert_eq!(err.request_id(), Some(5));
        assert_eq!(err.code(), ErrorCode::BadRequest);
        assert!(err.to_string().contains("signal.to"), "{err}");

        let join = wire::ClientFrame {
            kind: Some(wire::client_frame::Kind::Request(wire::Request {
                id: 6,
                kind: Some(wire::request::Kind::Join(wire::Join {
                    topic: Bytes::from_static(&[1; 33]),
                    announce: true,
                })),
            })),
        };
        let err = decode_client(join.encode_to_vec().into(), MAX).unwrap_err();
        assert_eq!(err.request_id(), Some(6));
    }

    #[test]
    fn short_nonce_or_signature_in_authenticate_is_invalid() {
        let auth = wire::ClientFrame {
            kind: Some(wire::client_frame::Kind::Authenticate(wire::Authenticate {
                protocol_version: 1,
                peer_id: Bytes::from_static(&[1; 32]),
                nonce: Bytes::from_static(&[1; 32]),
                signature: Bytes::from_static(&[1; 63]),
            })),
        };
        let err = decode_client(auth.encode_to_vec().into(), MAX).unwrap_err();
        assert!(matches!(err, DecodeError::Invalid { error: ParseError::Length { expected: 64, .. }, .. }));
    }

    #[test]
    fn unknown_error_codes_from_a_newer_node_read_as_internal() {
        let frame = wire::ServerFrame {
            kind: Some(wire::server_frame::Kind::Error(wire::Error { code: 999, message: "new".into() })),
        };
        assert_eq!(
            decode_server(frame.encode_to_vec().into(), MAX),
            Ok(ServerMessage::Error { code: ErrorCode::Internal, message: "new".into() })
        );
    }

    #[test]
    fn payload_bytes_are_not_copied() {
        let frame = encode_client(ClientMessage::Request {
            id: 1,
            body: RequestBody::Signal {
                to: PeerId::from_array([1; 32]),
                payload: Bytes::from(vec![7u8; 1000]),
                ack: AckMode::FailuresOnly,
            },
        });
        let range = frame.as_ptr_range();
        let Ok(ClientMessage::Request { body: RequestBody::Signal { payload, .. }, .. }) =
            decode_client(frame.clone(), MAX)
        else {
            panic!("not a signal")
        };
        assert!(range.contains(&payload.as_ptr()), "payload should borrow the frame's buffer");
    }
}
