//! The engine's outputs as byte strings for the facade. Every output has the same six fields:
//! its kind and two numbers (unsigned LEB128 varints, prost's), then three byte strings (each its
//! length as a varint, then the bytes; text is UTF-8); a field an output does not use is 0 or
//! empty. `readOutput` in `js/index.js` reads them; the numbering below is shared with it. An
//! error is two strings: its code and its message. A peer or topic id is its 32 bytes.
//!
//! One layout for all (rather than fields per kind) keeps both the encoder and the reader small.
//!
//! | kind | output | numbers | byte strings |
//! |---|---|---|---|
//! | 0 | open a WebSocket | attempt | URL |
//! | 1 | close the WebSocket | attempt | |
//! | 2 | send a frame | attempt | frame |
//! | 3 | sign the challenge | attempt | message |
//! | 4 | create the `RTCPeerConnection` | handle, initiator (0/1) | label |
//! | 5 | create an offer | handle, ICE restart (0/1) | |
//! | 6 | apply a remote offer and answer it | handle | SDP |
//! | 7 | apply a remote answer | handle | SDP |
//! | 8 | add a remote candidate | handle, m-line index + 1 (0: none) | candidate, mid, username fragment |
//! | 9 | close the `RTCPeerConnection` | handle | |
//! | 10 | state changed | | state (`connecting`, `online`, `offline`, `closed`) |
//! | 11 | started (first authentication) | | |
//! | 12 | start failed | | error |
//! | 13 | operation done | operation | |
//! | 14 | lookup done | operation | the peer ids one after the other |
//! | 15 | connect done | operation, handle | peer id |
//! | 16 | operation failed (operation 0: the call that just returned 0) | operation | error |
//! | 17 | `peer-joined` | | topic id, peer id |
//! | 18 | `peer-left` | | topic id, peer id |
//! | 19 | incoming offer (ask the application) | handle | peer id |
//! | 20 | `connection` (incoming, open) | handle | peer id |
//! | 21 | connection closed | handle | peer id |
//! | 22 | `error` | | error |
//! | 23 | nothing more for now: arm the timer | due time + 1 (0: none) | |

use alloc::vec::Vec;

use prost::encoding::encode_varint;

use crate::core::{Client, ClientError, Code, Event, OpResult, Output, RtcCommand};

/// The last output of a drain: arm the timer (see the table).
pub const IDLE: u64 = 23;

/// One output: kind, two numbers, three byte strings. Not inlined: one copy for every output.
#[inline(never)]
pub fn put(kind: u64, n1: u64, n2: u64, b: [&[u8]; 3]) -> Vec<u8> {
    let mut w = Vec::new();
    for n in [kind, n1, n2] {
        encode_varint(n, &mut w);
    }
    for b in b {
        encode_varint(b.len() as u64, &mut w);
        w.extend_from_slice(b);
    }
    w
}

/// An output about an error: `n1` and the error's code and message.
pub fn error(kind: u64, n1: u64, e: &ClientError) -> Vec<u8> {
    put(kind, n1, 0, [e.code.as_str().as_bytes(), e.message.as_bytes(), b""])
}

/// One output, encoded. `core` names the peer of a connection a `connect` produced.
pub fn encode(core: &Client, o: Output) -> Vec<u8> {
    const E: &[u8] = b"";
    match o {
        Output::OpenSocket { conn, url } => put(0, conn.into(), 0, [url.as_bytes(), E, E]),
        Output::CloseSocket { conn } => put(1, conn.into(), 0, [E; 3]),
        Output::Send { conn, frame } => put(2, conn.into(), 0, [&frame, E, E]),
        Output::Sign { conn, message } => put(3, conn.into(), 0, [&message, E, E]),
        Output::Rtc(cmd) => match cmd {
            RtcCommand::Create { handle, initiator, label } => {
                put(4, handle.get().into(), initiator.into(), [label.as_bytes(), E, E])
            }
            RtcCommand::CreateOffer { handle, ice_restart } => {
                put(5, handle.get().into(), ice_restart.into(), [E; 3])
            }
            RtcCommand::ApplyOffer { handle, sdp } => put(6, handle.get().into(), 0, [sdp.as_bytes(), E, E]),
            RtcCommand::ApplyAnswer { handle, sdp } => put(7, handle.get().into(), 0, [sdp.as_bytes(), E, E]),
            RtcCommand::AddCandidate { handle, candidate: c } => put(
                8,
                handle.get().into(),
                c.sdp_m_line_index.map_or(0, |i| u64::from(i) + 1),
                [c.candidate.as_bytes(), c.sdp_mid.as_bytes(), c.username_fragment.as_bytes()],
            ),
            RtcCommand::Close { handle } => put(9, handle.get().into(), 0, [E; 3]),
        },
        Output::Event(e) => match e {
            Event::StateChanged(s) => put(10, 0, 0, [s.as_str().as_bytes(), E, E]),
            Event::Started => put(11, 0, 0, [E; 3]),
            Event::StartFailed(err) => error(12, 0, &err),
            Event::OpDone { op, result } => match result {
                Ok(OpResult::Done) => put(13, op, 0, [E; 3]),
                Ok(OpResult::Peers(peers)) => {
                    let mut ids = Vec::new();
                    for p in &peers {
                        ids.extend_from_slice(p.as_bytes());
                    }
                    put(14, op, 0, [&ids, E, E])
                }
                Ok(OpResult::Connection(h)) => match core.session_peer(h) {
                    Some(peer) => put(15, op, h.get().into(), [peer.as_bytes(), E, E]),
                    None => error(16, op, &ClientError::new(Code::Closed, "the connection closed")),
                },
                Err(err) => error(16, op, &err),
            },
            Event::PeerJoined { topic, peer } => put(17, 0, 0, [topic.as_bytes(), peer.as_bytes(), E]),
            Event::PeerLeft { topic, peer } => put(18, 0, 0, [topic.as_bytes(), peer.as_bytes(), E]),
            Event::IncomingOffer { handle, peer } => put(19, handle.get().into(), 0, [peer.as_bytes(), E, E]),
            Event::Incoming { handle, peer } => put(20, handle.get().into(), 0, [peer.as_bytes(), E, E]),
            Event::PeerClosed { handle, peer } => put(21, handle.get().into(), 0, [peer.as_bytes(), E, E]),
            Event::Error(err) => error(22, 0, &err),
        },
    }
}

/// Reads outputs back, as `readOutput` in `js/index.js` does (for tests).
#[cfg(test)]
pub mod read {
    use alloc::vec::Vec;

    /// One output: its kind, its two numbers and its three byte strings.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Out {
        /// The kind (see the table).
        pub kind: u64,
        /// The numbers.
        pub n: [u64; 2],
        /// The byte strings.
        pub b: [Vec<u8>; 3],
    }

    impl Out {
        /// Byte string `i` as text.
        pub fn s(&self, i: usize) -> &str {
            core::str::from_utf8(&self.b[i]).expect("UTF-8")
        }
    }

    /// Reads one output; every byte must belong to a field.
    pub fn read(mut bytes: &[u8]) -> Out {
        let mut num = || prost::encoding::decode_varint(&mut bytes).expect("a varint");
        let (kind, n) = (num(), [num(), num()]);
        let b = core::array::from_fn(|_| {
            let len = prost::encoding::decode_varint(&mut bytes).expect("a length") as usize;
            let (b, rest) = bytes.split_at(len);
            bytes = rest;
            b.to_vec()
        });
        assert!(bytes.is_empty(), "output {kind} has bytes past its fields");
        Out { kind, n, b }
    }
}
