//! The engine's outputs as byte strings for the facade: a kind, then the fields in a fixed order
//! per kind, each a number (an unsigned LEB128 varint, prost's) or a byte string (its length as a
//! varint, then the bytes; text is UTF-8). `readOutput` in `js/index.js` reads them; the
//! numbering below is shared with it. An error is two strings: its code and its message. A peer
//! or topic id is its 32 bytes.
//!
//! | kind | output | fields |
//! |---|---|---|
//! | 0 | open a WebSocket | attempt, URL |
//! | 1 | close the WebSocket | attempt |
//! | 2 | send a frame | attempt, frame |
//! | 3 | sign the challenge | attempt, message |
//! | 4 | create the `RTCPeerConnection` | handle, initiator (0/1), label |
//! | 5 | create an offer | handle, ICE restart (0/1) |
//! | 6 | apply a remote offer and answer it | handle, SDP |
//! | 7 | apply a remote answer | handle, SDP |
//! | 8 | add a remote candidate | handle, candidate, mid, m-line index + 1 (0: none), username fragment |
//! | 9 | close the `RTCPeerConnection` | handle |
//! | 10 | state changed | state (`connecting`, `online`, `offline`, `closed`) |
//! | 11 | started (first authentication) | |
//! | 12 | start failed | error |
//! | 13 | operation done | operation |
//! | 14 | lookup done | operation, the peer ids one after the other |
//! | 15 | connect done | operation, handle, peer id |
//! | 16 | operation failed | operation, error |
//! | 17 | `peer-joined` | topic id, peer id |
//! | 18 | `peer-left` | topic id, peer id |
//! | 19 | incoming offer (ask the application) | handle, peer id |
//! | 20 | `connection` (incoming, open) | handle, peer id |
//! | 21 | connection closed | handle, peer id |
//! | 22 | `error` | error |

use alloc::vec::Vec;

use prost::encoding::encode_varint;

use crate::core::{Client, ClientError, Code, Event, OpResult, Output, RtcCommand};

/// Writes the fields of one output.
#[derive(Debug, Default)]
pub struct Writer(Vec<u8>);

impl Writer {
    /// A number.
    pub fn num(&mut self, n: u64) {
        encode_varint(n, &mut self.0);
    }

    /// A byte string.
    pub fn bytes(&mut self, b: &[u8]) {
        self.num(b.len() as u64);
        self.0.extend_from_slice(b);
    }

    /// A text.
    pub fn text(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }

    /// An error: code, then message.
    pub fn error(&mut self, e: &ClientError) {
        self.text(e.code.as_str());
        self.text(&e.message);
    }

    /// What was written.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

/// One output, encoded. `core` names the peer of a connection a `connect` produced.
pub fn encode(core: &Client, o: Output) -> Vec<u8> {
    let mut w = Writer::default();
    match o {
        Output::OpenSocket { conn, url } => {
            w.num(0);
            w.num(conn.into());
            w.text(&url);
        }
        Output::CloseSocket { conn } => {
            w.num(1);
            w.num(conn.into());
        }
        Output::Send { conn, frame } => {
            w.num(2);
            w.num(conn.into());
            w.bytes(&frame);
        }
        Output::Sign { conn, message } => {
            w.num(3);
            w.num(conn.into());
            w.bytes(&message);
        }
        Output::Rtc(cmd) => rtc(&mut w, cmd),
        Output::Event(e) => event(&mut w, core, e),
    }
    w.into_bytes()
}

fn rtc(w: &mut Writer, cmd: RtcCommand) {
    match cmd {
        RtcCommand::Create { handle, initiator, label } => {
            w.num(4);
            w.num(handle.get().into());
            w.num(initiator.into());
            w.text(&label);
        }
        RtcCommand::CreateOffer { handle, ice_restart } => {
            w.num(5);
            w.num(handle.get().into());
            w.num(ice_restart.into());
        }
        RtcCommand::ApplyOffer { handle, sdp } => {
            w.num(6);
            w.num(handle.get().into());
            w.text(&sdp);
        }
        RtcCommand::ApplyAnswer { handle, sdp } => {
            w.num(7);
            w.num(handle.get().into());
            w.text(&sdp);
        }
        RtcCommand::AddCandidate { handle, candidate: c } => {
            w.num(8);
            w.num(handle.get().into());
            w.text(&c.candidate);
            w.text(&c.sdp_mid);
            w.num(c.sdp_m_line_index.map_or(0, |i| u64::from(i) + 1));
            w.text(&c.username_fragment);
        }
        RtcCommand::Close { handle } => {
            w.num(9);
            w.num(handle.get().into());
        }
    }
}

fn event(w: &mut Writer, core: &Client, e: Event) {
    match e {
        Event::StateChanged(s) => {
            w.num(10);
            w.text(s.as_str());
        }
        Event::Started => w.num(11),
        Event::StartFailed(err) => {
            w.num(12);
            w.error(&err);
        }
        Event::OpDone { op, result } => match result {
            Ok(OpResult::Done) => {
                w.num(13);
                w.num(op);
            }
            Ok(OpResult::Peers(peers)) => {
                w.num(14);
                w.num(op);
                w.num((peers.len() * 32) as u64);
                for p in &peers {
                    w.0.extend_from_slice(p.as_bytes());
                }
            }
            Ok(OpResult::Connection(h)) => match core.session_peer(h) {
                Some(peer) => {
                    w.num(15);
                    w.num(op);
                    w.num(h.get().into());
                    w.bytes(peer.as_bytes());
                }
                None => {
                    w.num(16);
                    w.num(op);
                    w.error(&ClientError::new(Code::Closed, "the connection closed"));
                }
            },
            Err(err) => {
                w.num(16);
                w.num(op);
                w.error(&err);
            }
        },
        Event::PeerJoined { topic, peer } => {
            w.num(17);
            w.bytes(topic.as_bytes());
            w.bytes(peer.as_bytes());
        }
        Event::PeerLeft { topic, peer } => {
            w.num(18);
            w.bytes(topic.as_bytes());
            w.bytes(peer.as_bytes());
        }
        Event::IncomingOffer { handle, peer } => {
            w.num(19);
            w.num(handle.get().into());
            w.bytes(peer.as_bytes());
        }
        Event::Incoming { handle, peer } => {
            w.num(20);
            w.num(handle.get().into());
            w.bytes(peer.as_bytes());
        }
        Event::PeerClosed { handle, peer } => {
            w.num(21);
            w.num(handle.get().into());
            w.bytes(peer.as_bytes());
        }
        Event::Error(err) => {
            w.num(22);
            w.error(&err);
        }
    }
}

/// Reads outputs back, as `readOutput` and `#out` in `js/index.js` do (for tests).
#[cfg(test)]
pub mod read {
    use alloc::string::String;
    use alloc::vec::Vec;

    /// A cursor over one output.
    #[derive(Debug)]
    pub struct Reader<'a>(pub &'a [u8]);

    impl Reader<'_> {
        /// A number.
        pub fn num(&mut self) -> u64 {
            prost::encoding::decode_varint(&mut self.0).expect("a varint")
        }

        /// A byte string.
        pub fn bytes(&mut self) -> Vec<u8> {
            let n = self.num() as usize;
            let (b, rest) = self.0.split_at(n);
            self.0 = rest;
            b.to_vec()
        }

        /// A text.
        pub fn text(&mut self) -> String {
            String::from_utf8(self.bytes()).expect("UTF-8")
        }

        /// Whether every byte was read.
        pub fn done(&self) -> bool {
            self.0.is_empty()
        }
    }

    /// One field of an output.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum F {
        /// A number.
        N(u64),
        /// A byte string.
        B(Vec<u8>),
    }

    impl F {
        /// The number.
        pub fn n(&self) -> u64 {
            match self {
                F::N(n) => *n,
                F::B(_) => panic!("a number expected"),
            }
        }

        /// The bytes.
        pub fn b(&self) -> &[u8] {
            match self {
                F::B(b) => b,
                F::N(_) => panic!("bytes expected"),
            }
        }

        /// The bytes as text.
        pub fn s(&self) -> &str {
            core::str::from_utf8(self.b()).expect("UTF-8")
        }
    }

    /// The fields of each output kind, as the table above lists them and `#out` in
    /// `js/index.js` reads them: `n` a number, `b` a byte string.
    pub const FIELDS: [&str; 23] = [
        "nb", "n", "nb", "nb", "nnb", "nn", "nb", "nb", "nbbnb", "n", "b", "", "bb", "n", "nb", "nnb", "nbb",
        "bb", "bb", "nb", "nb", "nb", "bb",
    ];

    /// Reads one output; every byte must belong to a field.
    pub fn read(bytes: &[u8]) -> (u64, Vec<F>) {
        let mut r = Reader(bytes);
        let kind = r.num();
        let fields = FIELDS[kind as usize]
            .chars()
            .map(|c| if c == 'n' { F::N(r.num()) } else { F::B(r.bytes()) })
            .collect();
        assert!(r.done(), "output {kind} has bytes past its fields");
        (kind, fields)
    }
}
