//! Sans-IO WebSocket framing (RFC 6455), shared by the signal node (server side) and the load
//! generator (client side): a frame [`Decoder`] that parses frames out of a byte buffer, the
//! encoders, masking, close-code rules and `Sec-WebSocket-Accept`. No socket, no runtime.
//!
//! Decoding rules (for the [`Role`] given):
//! - A server's decoder requires masked frames, a client's unmasked ones; reserved bits must be
//!   clear (no extension is negotiated); unknown opcodes, control frames over 125 bytes or
//!   fragmented, a continuation without a message and a new message inside a fragmented one are
//!   [`FrameError::Protocol`].
//! - A binary message (one frame, or fragments reassembled) of at most `max` bytes becomes
//!   [`Event::Binary`], a `Bytes` slice of the read buffer (unmasked in place, not copied when it
//!   came in one frame).
//! - A larger one is reported as [`Event::TooLarge`] as soon as its header (or the fragment that
//!   crosses `max`) is seen; its payload is then skipped, never buffered. One over `hard` bytes is
//!   [`FrameError::TooLarge`], which ends the connection.
//! - Text messages are skipped and reported as [`Event::Text`] (the protocol is binary only).
//! - Close frames are checked (RFC 6455 §7.4): [`Event::Close`] to echo, [`Event::BadClose`] to
//!   answer with an error code.
//!
//! Proven against tungstenite by a differential test of random frame streams
//! (`src/differential.rs`, and `scripts/fuzz-ws.sh` for millions of cases).
#![forbid(unsafe_code)]

use base64::Engine;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use sha1::{Digest, Sha1};

const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Opcodes.
pub const OP_CONTINUATION: u8 = 0x0;
/// Text frame.
pub const OP_TEXT: u8 = 0x1;
/// Binary frame.
pub const OP_BINARY: u8 = 0x2;
/// Close frame.
pub const OP_CLOSE: u8 = 0x8;
/// Ping frame.
pub const OP_PING: u8 = 0x9;
/// Pong frame.
pub const OP_PONG: u8 = 0xA;

/// Which end of the connection decodes: a server reads masked frames, a client unmasked ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Reads a client's (masked) frames.
    Server,
    /// Reads a server's (unmasked) frames.
    Client,
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`: base64(SHA-1(key + GUID)).
pub fn accept_key(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(GUID);
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// One thing the client said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A complete binary message of at most `max` bytes.
    Binary(Bytes),
    /// A text message (skipped).
    Text,
    /// A binary message over `max` bytes (its payload is skipped).
    TooLarge(u64),
    /// A ping with its payload (answer with a pong carrying it).
    Ping(Bytes),
    /// A pong.
    Pong,
    /// A close frame with its status code, if any (a code a client may send, and a UTF-8
    /// reason: echo it).
    Close(Option<u16>),
    /// A close frame that breaks RFC 6455 §7.4 / §5.5.1: a code no endpoint may send (0–999,
    /// 1004–1006, 1015, 1016–2999, 5000+), a one-byte payload, or a reason that is not UTF-8.
    /// Answer with a close frame carrying this code (1002 protocol error, 1007 invalid data),
    /// never with the client's code.
    BadClose(u16),
}

/// Close status codes an endpoint may put in a close frame (RFC 6455 §7.4.1 plus 1012 and 1013
/// from the IANA registry, as tungstenite accepts them): 1000–1003, 1007–1013 and 3000–4999.
/// 1004 is reserved; 1005, 1006 and 1015 are for reporting only and must never be sent.
pub fn close_code_is_valid(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1013 | 3000..=4999)
}

/// Close code for a protocol error.
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
/// Close code for data inconsistent with the message type (here: a close reason not UTF-8).
pub const CLOSE_INVALID_DATA: u16 = 1007;

/// What a close frame's payload says.
fn close_event(payload: &[u8]) -> Event {
    match payload {
        [] => Event::Close(None),
        [_] => Event::BadClose(CLOSE_PROTOCOL_ERROR),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !close_code_is_valid(code) {
                Event::BadClose(CLOSE_PROTOCOL_ERROR)
            } else if std::str::from_utf8(reason).is_err() {
                Event::BadClose(CLOSE_INVALID_DATA)
            } else {
                Event::Close(Some(code))
            }
        }
    }
}

/// Input that ends the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    #[error("message of {0} bytes is far over the size limit")]
    TooLarge(u64),
    #[error("WebSocket protocol error: {0}")]
    Protocol(&'static str),
}

/// The message being received in fragments.
#[derive(Debug, Default)]
enum Frag {
    #[default]
    None,
    /// A binary message within the limit so far.
    Binary(BytesMut),
    /// A text message, or a binary one already reported too large: payloads are skipped.
    Skip { total: u64, text: bool },
}

/// Parses client frames out of a read buffer.
#[derive(Debug)]
pub struct Decoder {
    role: Role,
    max: u32,
    hard: u32,
    /// Payload bytes still to be discarded (of a skipped frame).
    skip: u64,
    frag: Frag,
}

impl Decoder {
    /// Messages up to `max` bytes are delivered, up to `hard` are reported too large, larger end
    /// the connection.
    pub fn new(role: Role, max: u32, hard: u32) -> Decoder {
        Decoder { role, max, hard: hard.max(max), skip: 0, frag: Frag::None }
    }

    /// Takes the next event out of `buf` (consuming its bytes), or `None` when more bytes are
    /// needed. Bytes of a frame are only consumed once the whole frame (or, for a skipped frame,
    /// its header) is there; call again after appending more.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Event>, FrameError> {
        loop {
            if self.skip > 0 {
                let n = self.skip.min(buf.len() as u64);
                buf.advance(n as usize);
                self.skip -= n;
                if self.skip > 0 {
                    return Ok(None);
                }
            }
            if buf.len() < 2 {
                return Ok(None);
            }
            let (b0, b1) = (buf[0], buf[1]);
            let fin = b0 & 0x80 != 0;
            if b0 & 0x70 != 0 {
                return Err(FrameError::Protocol("reserved bits set"));
            }
            let opcode = b0 & 0x0f;
            let masked = b1 & 0x80 != 0;
            match (self.role, masked) {
                (Role::Server, false) => return Err(FrameError::Protocol("client frames must be masked")),
                (Role::Client, true) => return Err(FrameError::Protocol("server frames must not be masked")),
                _ => {}
            }
            let (len, at) = match b1 & 0x7f {
                126 => {
                    if buf.len() < 4 {
                        return Ok(None);
                    }
                    (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4)
                }
                127 => {
                    if buf.len() < 10 {
                        return Ok(None);
                    }
                    let mut be = [0u8; 8];
                    be.copy_from_slice(&buf[2..10]);
                    let len = u64::from_be_bytes(be);
                    if len >> 63 != 0 {
                        return Err(FrameError::Protocol("frame length with the top bit set"));
                    }
                    (len, 10)
                }
                n => (u64::from(n), 2),
            };
            let header = if masked { at + 4 } else { at };
            if buf.len() < header {
                return Ok(None);
            }
            let mask = if masked { Some([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) } else { None };
            match opcode {
                OP_CLOSE | OP_PING | OP_PONG => {
                    if !fin {
                        return Err(FrameError::Protocol("fragmented control frame"));
                    }
                    if len > 125 {
                        return Err(FrameError::Protocol("control frame over 125 bytes"));
                    }
                    let Some(mut payload) = take_frame(buf, header, len) else { return Ok(None) };
                    unmask_opt(&mut payload, mask);
                    return Ok(Some(match opcode {
                        OP_PING => Event::Ping(payload.freeze()),
                        OP_PONG => Event::Pong,
                        _ => close_event(&payload),
                    }));
                }
                OP_TEXT | OP_BINARY => {
                    if !matches!(self.frag, Frag::None) {
                        return Err(FrameError::Protocol("new message inside a fragmented message"));
                    }
                    if len > u64::from(self.hard) {
                        return Err(FrameError::TooLarge(len));
                    }
                    if opcode == OP_TEXT || len > u64::from(self.max) {
                        buf.advance(header);
                        self.skip = len;
                        if !fin {
                            self.frag = Frag::Skip { total: len, text: opcode == OP_TEXT };
                        }
                        if opcode == OP_TEXT {
                            if fin {
                                return Ok(Some(Event::Text));
                            }
                            continue;
                        }
                        return Ok(Some(Event::TooLarge(len)));
                    }
                    let Some(mut payload) = take_frame(buf, header, len) else { return Ok(None) };
                    unmask_opt(&mut payload, mask);
                    if fin {
                        return Ok(Some(Event::Binary(payload.freeze())));
                    }
                    self.frag = Frag::Binary(payload);
                }
                OP_CONTINUATION => {
                    let so_far = match &self.frag {
                        Frag::None => return Err(FrameError::Protocol("continuation without a message")),
                        Frag::Binary(acc) => acc.len() as u64,
                        Frag::Skip { total, .. } => *total,
                    };
                    let total = so_far.saturating_add(len);
                    if total > u64::from(self.hard) {
                        return Err(FrameError::TooLarge(total));
                    }
                    match &mut self.frag {
                        Frag::Binary(acc) if total <= u64::from(self.max) => {
                            let Some(payload) = take_frame(buf, header, len) else { return Ok(None) };
                            let mut payload = payload;
                            unmask_opt(&mut payload, mask);
                            acc.extend_from_slice(&payload);
                            if fin {
                                let message = std::mem::take(acc).freeze();
                                self.frag = Frag::None;
                                return Ok(Some(Event::Binary(message)));
                            }
                        }
                        Frag::Binary(_) => {
                            // This fragment crosses the limit: report it, skip the rest.
                            buf.advance(header);
                            self.skip = len;
                            self.frag = if fin { Frag::None } else { Frag::Skip { total, text: false } };
                            return Ok(Some(Event::TooLarge(total)));
                        }
                        Frag::Skip { text, .. } => {
                            // A text message, or a binary one already reported.
                            let text = *text;
                            buf.advance(header);
                            self.skip = len;
                            if !fin {
                                self.frag = Frag::Skip { total, text };
                            } else {
                                self.frag = Frag::None;
                                if text {
                                    return Ok(Some(Event::Text));
                                }
                            }
                        }
                        Frag::None => return Err(FrameError::Protocol("continuation without a message")),
                    }
                }
                _ => return Err(FrameError::Protocol("unknown opcode")),
            }
        }
    }
}

/// Splits one whole frame's payload off `buf` (dropping its header), or `None` if incomplete.
fn take_frame(buf: &mut BytesMut, header: usize, len: u64) -> Option<BytesMut> {
    // `len` is at most `hard` (a u32) or 125 here, so it fits a usize.
    let len = usize::try_from(len).ok()?;
    if buf.len() - header < len {
        return None;
    }
    buf.advance(header);
    Some(buf.split_to(len))
}

fn unmask_opt(data: &mut [u8], key: Option<[u8; 4]>) {
    if let Some(key) = key {
        unmask(data, key);
    }
}

/// XORs `data` with the masking key, eight bytes at a time (masking and unmasking are the same).
pub fn unmask(data: &mut [u8], key: [u8; 4]) {
    let wide = u64::from_ne_bytes([key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3]]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= key[i & 3];
    }
}

/// Length of a server frame header for a payload of `len` bytes.
pub fn header_len(len: usize) -> usize {
    match len {
        0..=125 => 2,
        126..=0xffff => 4,
        _ => 10,
    }
}

/// Appends an unmasked, final frame to `out`.
pub fn encode_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.reserve(header_len(payload.len()) + payload.len());
    out.put_u8(0x80 | opcode);
    match payload.len() {
        n @ 0..=125 => out.put_u8(n as u8),
        n @ 126..=0xffff => {
            out.put_u8(126);
            out.put_u16(n as u16);
        }
        n => {
            out.put_u8(127);
            out.put_u64(n as u64);
        }
    }
    out.extend_from_slice(payload);
}

/// At most `max` bytes of `s`, cut at a character boundary (close reasons are limited to 123).
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Appends a client frame header with `mask` to `out`; the caller appends the payload of `len`
/// bytes and masks it with [`unmask`].
pub fn encode_masked_header(out: &mut Vec<u8>, opcode: u8, len: usize, mask: [u8; 4]) {
    out.put_u8(0x80 | opcode);
    match len {
        n @ 0..=125 => out.put_u8(0x80 | n as u8),
        n @ 126..=0xffff => {
            out.put_u8(0x80 | 126);
            out.put_u16(n as u16);
        }
        n => {
            out.put_u8(0x80 | 127);
            out.put_u64(n as u64);
        }
    }
    out.extend_from_slice(&mask);
}

/// Appends a close frame with `code` and `reason` (cut to fit the 125-byte control payload).
pub fn encode_close(out: &mut Vec<u8>, code: u16, reason: &str) {
    let mut payload = [0u8; 125];
    payload[..2].copy_from_slice(&code.to_be_bytes());
    let reason = truncate(reason, 123).as_bytes();
    payload[2..2 + reason.len()].copy_from_slice(reason);
    encode_frame(out, OP_CLOSE, &payload[..2 + reason.len()]);
}

#[cfg(any(test, feature = "differential"))]
pub mod differential;

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: u32 = 1000;
    const HARD: u32 = 70_000;

    /// A masked client frame.
    fn client(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
        match payload.len() {
            n @ 0..=125 => out.push(0x80 | n as u8),
            n @ 126..=0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&key);
        let mut masked = payload.to_vec();
        unmask(&mut masked, key);
        out.extend_from_slice(&masked);
        out
    }

    fn all(d: &mut Decoder, bytes: &[u8]) -> Result<Vec<Event>, FrameError> {
        let mut buf = BytesMut::from(bytes);
        let mut events = Vec::new();
        while let Some(e) = d.decode(&mut buf)? {
            events.push(e);
        }
        assert!(buf.is_empty(), "{} bytes left", buf.len());
        Ok(events)
    }

    /// Same, but fed one byte at a time.
    fn trickle(d: &mut Decoder, bytes: &[u8]) -> Result<Vec<Event>, FrameError> {
        let mut buf = BytesMut::new();
        let mut events = Vec::new();
        for b in bytes {
            buf.put_u8(*b);
            while let Some(e) = d.decode(&mut buf)? {
                events.push(e);
            }
        }
        assert!(buf.is_empty());
        Ok(events)
    }

    fn payload(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + 3) as u8).collect()
    }

    #[test]
    fn accept_key_matches_rfc_6455_example() {
        assert_eq!(accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn accept_key_matches_the_rfc_example() {
        assert_eq!(accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn unmask_is_its_own_inverse_at_every_length() {
        for n in 0..40 {
            let original = payload(n);
            let mut data = original.clone();
            unmask(&mut data, [1, 2, 3, 4]);
            for (i, (a, b)) in data.iter().zip(&original).enumerate() {
                assert_eq!(*a, b ^ [1, 2, 3, 4][i % 4]);
            }
            unmask(&mut data, [1, 2, 3, 4]);
            assert_eq!(data, original);
        }
    }

    #[test]
    fn binary_frames_at_every_length_encoding_boundary() {
        for n in [0, 1, 125, 126, 127, 65_535, 65_536, 69_999] {
            let mut d = Decoder::new(Role::Server, HARD, HARD);
            let p = payload(n);
            assert_eq!(all(&mut d, &client(true, OP_BINARY, &p)), Ok(vec![Event::Binary(p.into())]), "{n}");
        }
    }

    #[test]
    fn server_frames_use_the_shortest_length_encoding() {
        for (n, head) in [(0, 2), (125, 2), (126, 4), (65_535, 4), (65_536, 10)] {
            let mut out = Vec::new();
            encode_frame(&mut out, OP_BINARY, &payload(n));
            assert_eq!(out.len(), head + n);
            assert_eq!(header_len(n), head);
            assert_eq!(out[0], 0x82);
            assert_eq!(&out[head..], &payload(n)[..]);
        }
        let mut out = Vec::new();
        encode_frame(&mut out, OP_BINARY, &payload(126));
        assert_eq!(&out[..4], &[0x82, 126, 0, 126]);
        let mut out = Vec::new();
        encode_frame(&mut out, OP_BINARY, &payload(65_536));
        assert_eq!(&out[..10], &[0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
    }

    #[test]
    fn frames_split_anywhere_decode_the_same() {
        let mut bytes = client(true, OP_BINARY, &payload(300));
        bytes.extend(client(true, OP_PING, b"hi"));
        bytes.extend(client(true, OP_BINARY, &payload(5)));
        let expected = vec![
            Event::Binary(payload(300).into()),
            Event::Ping(Bytes::from_static(b"hi")),
            Event::Binary(payload(5).into()),
        ];
        assert_eq!(all(&mut Decoder::new(Role::Server, MAX, HARD), &bytes), Ok(expected.clone()));
        assert_eq!(trickle(&mut Decoder::new(Role::Server, MAX, HARD), &bytes), Ok(expected));
    }

    #[test]
    fn fragments_are_reassembled_with_control_frames_between() {
        let p = payload(900);
        let mut bytes = client(false, OP_BINARY, &p[..100]);
        bytes.extend(client(true, OP_PING, b""));
        bytes.extend(client(false, OP_CONTINUATION, &p[100..500]));
        bytes.extend(client(true, OP_CONTINUATION, &p[500..]));
        let expected = vec![Event::Ping(Bytes::new()), Event::Binary(p.into())];
        assert_eq!(all(&mut Decoder::new(Role::Server, MAX, HARD), &bytes), Ok(expected.clone()));
        assert_eq!(trickle(&mut Decoder::new(Role::Server, MAX, HARD), &bytes), Ok(expected));
    }

    #[test]
    fn fragments_over_the_limit_are_reported_once_and_skipped() {
        let p = payload(1500);
        let mut bytes = client(false, OP_BINARY, &p[..600]);
        bytes.extend(client(false, OP_CONTINUATION, &p[600..1200]));
        bytes.extend(client(true, OP_CONTINUATION, &p[1200..]));
        bytes.extend(client(true, OP_BINARY, b"next"));
        let expected = vec![Event::TooLarge(1200), Event::Binary(Bytes::from_static(b"next"))];
        assert_eq!(all(&mut Decoder::new(Role::Server, MAX, HARD), &bytes), Ok(expected.clone()));
        assert_eq!(trickle(&mut Decoder::new(Role::Server, MAX, HARD), &bytes), Ok(expected));
    }

    #[test]
    fn oversize_frames_are_reported_from_the_header_and_skipped() {
        let mut d = Decoder::new(Role::Server, MAX, HARD);
        let frame = client(true, OP_BINARY, &payload(5000));
        // Only the header is needed to report it.
        let mut buf = BytesMut::from(&frame[..8]);
        assert_eq!(d.decode(&mut buf), Ok(Some(Event::TooLarge(5000))));
        assert_eq!(d.decode(&mut buf), Ok(None));
        let mut rest = BytesMut::from(&frame[8..]);
        rest.extend_from_slice(&client(true, OP_PONG, b""));
        assert_eq!(d.decode(&mut rest), Ok(Some(Event::Pong)));
        // Over the hard limit the connection ends, before any payload arrives.
        let far = client(true, OP_BINARY, &payload(HARD as usize + 1));
        assert_eq!(
            Decoder::new(Role::Server, MAX, HARD).decode(&mut BytesMut::from(&far[..14])),
            Err(FrameError::TooLarge(70_001))
        );
        let mut bytes = client(false, OP_BINARY, &payload(900));
        bytes.extend(client(true, OP_CONTINUATION, &payload(HARD as usize)));
        assert_eq!(
            all(&mut Decoder::new(Role::Server, MAX, HARD), &bytes),
            Err(FrameError::TooLarge(70_900))
        );
    }

    #[test]
    fn text_messages_are_skipped_and_reported() {
        let mut bytes = client(true, OP_TEXT, b"hello");
        bytes.extend(client(false, OP_TEXT, b"frag"));
        bytes.extend(client(true, OP_CONTINUATION, b"ment"));
        bytes.extend(client(true, OP_TEXT, &payload(5000)));
        let expected = vec![Event::Text, Event::Text, Event::Text];
        assert_eq!(all(&mut Decoder::new(Role::Server, MAX, HARD), &bytes), Ok(expected.clone()));
        assert_eq!(trickle(&mut Decoder::new(Role::Server, MAX, HARD), &bytes), Ok(expected));
    }

    #[test]
    fn control_frames() {
        let mut bytes = client(true, OP_PING, b"abc");
        bytes.extend(client(true, OP_PONG, b"x"));
        bytes.extend(client(true, OP_CLOSE, &[0x03, 0xe8, b'b', b'y', b'e']));
        bytes.extend(client(true, OP_CLOSE, b""));
        let expected = vec![
            Event::Ping(Bytes::from_static(b"abc")),
            Event::Pong,
            Event::Close(Some(1000)),
            Event::Close(None),
        ];
        assert_eq!(all(&mut Decoder::new(Role::Server, MAX, HARD), &bytes), Ok(expected));
        let mut out = Vec::new();
        encode_close(&mut out, 4000, &"é".repeat(100));
        assert_eq!(out.len(), 2 + 2 + 122);
        assert_eq!(&out[..4], &[0x88, 124, 0x0f, 0xa0]);
    }

    #[test]
    fn arbitrary_input_never_panics_and_stays_bounded() {
        // xorshift: deterministic pseudo-random frames, valid and corrupted, fed in random cuts.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..2000 {
            let mut bytes = Vec::new();
            for _ in 0..(next() % 6) {
                let opcode =
                    [OP_BINARY, OP_TEXT, OP_CONTINUATION, OP_PING, OP_CLOSE, 3][(next() % 6) as usize];
                let len = [0, 1, 125, 126, 999, 1001, 65_536][(next() % 7) as usize];
                bytes.extend(client(next() % 4 != 0, opcode, &payload(len)));
            }
            for _ in 0..(next() % 3) {
                if !bytes.is_empty() {
                    let at = (next() as usize) % bytes.len();
                    bytes[at] = next() as u8;
                }
            }
            let mut d = Decoder::new(Role::Server, MAX, HARD);
            let mut buf = BytesMut::new();
            let mut rest = &bytes[..];
            'feed: while !rest.is_empty() {
                let cut = ((next() as usize) % 3000).min(rest.len()).max(1);
                buf.extend_from_slice(&rest[..cut]);
                rest = &rest[cut..];
                loop {
                    match d.decode(&mut buf) {
                        Ok(Some(Event::Binary(b))) => assert!(b.len() <= MAX as usize),
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(_) => break 'feed,
                    }
                }
                // Pending bytes never exceed one frame within the limit plus one read.
                assert!(buf.len() <= MAX as usize + 14 + 3000, "{}", buf.len());
            }
        }
    }

    #[test]
    fn close_reasons_are_cut_at_a_char_boundary() {
        assert_eq!(truncate("abc", 123), "abc");
        let s = "é".repeat(100);
        assert_eq!(truncate(&s, 123).len(), 122);
    }

    #[test]
    fn a_clients_decoder_reads_unmasked_frames_and_refuses_masked_ones() {
        let mut out = Vec::new();
        encode_frame(&mut out, OP_BINARY, b"hello");
        encode_close(&mut out, 1000, "bye");
        let mut d = Decoder::new(Role::Client, MAX, HARD);
        assert_eq!(
            all(&mut d, &out),
            Ok(vec![Event::Binary(Bytes::from_static(b"hello")), Event::Close(Some(1000))])
        );
        let mut masked = Vec::new();
        encode_masked_header(&mut masked, OP_BINARY, 3, [1, 2, 3, 4]);
        masked.extend_from_slice(b"abc");
        assert!(matches!(
            all(&mut Decoder::new(Role::Client, MAX, HARD), &masked),
            Err(FrameError::Protocol(_))
        ));
        // What a client encodes, a server decodes.
        let mut c = Vec::new();
        encode_masked_header(&mut c, OP_BINARY, 300, [9, 8, 7, 6]);
        let start = c.len();
        c.extend_from_slice(&payload(300));
        unmask(&mut c[start..], [9, 8, 7, 6]);
        assert_eq!(
            all(&mut Decoder::new(Role::Server, MAX, HARD), &c),
            Ok(vec![Event::Binary(payload(300).into())])
        );
    }

    #[test]
    fn close_frames_with_codes_nobody_may_send_are_bad_closes() {
        let close = |payload: &[u8]| {
            all(&mut Decoder::new(Role::Server, MAX, HARD), &client(true, OP_CLOSE, payload))
        };
        for code in [0u16, 999, 1004, 1005, 1006, 1014, 1015, 1016, 2999, 5000, 65535] {
            assert_eq!(close(&code.to_be_bytes()), Ok(vec![Event::BadClose(1002)]), "{code}");
        }
        for code in [1000u16, 1001, 1002, 1003, 1007, 1011, 1013, 3000, 4000, 4999] {
            assert_eq!(close(&code.to_be_bytes()), Ok(vec![Event::Close(Some(code))]), "{code}");
        }
        assert_eq!(close(b"x"), Ok(vec![Event::BadClose(1002)]));
        assert_eq!(close(b"\x03\xe8ok \xc3\xa9"), Ok(vec![Event::Close(Some(1000))]));
        assert_eq!(close(b"\x03\xe8\xff"), Ok(vec![Event::BadClose(1007)]));
        assert_eq!(close(b""), Ok(vec![Event::Close(None)]));
    }

    #[test]
    fn protocol_errors() {
        let protocol = |bytes: Vec<u8>| match all(&mut Decoder::new(Role::Server, MAX, HARD), &bytes) {
            Err(FrameError::Protocol(_)) => {}
            other => panic!("{other:?}"),
        };
        for opcode in [3, 4, 5, 6, 7, 0xb, 0xc, 0xf] {
            protocol(client(true, opcode, b""));
        }
        protocol(client(true, OP_PING, &payload(126)));
        protocol(client(false, OP_PING, b""));
        protocol(client(true, OP_CONTINUATION, b"x"));
        let mut nested = client(false, OP_BINARY, b"a");
        nested.extend(client(true, OP_BINARY, b"b"));
        protocol(nested);
        let mut rsv = client(true, OP_BINARY, b"a");
        rsv[0] |= 0x40;
        protocol(rsv);
        let mut unmasked = client(true, OP_BINARY, b"a");
        unmasked[1] &= 0x7f;
        protocol(unmasked);
        let mut huge = vec![0x82, 0x80 | 127];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        huge.extend_from_slice(&[0; 4]);
        protocol(huge);
    }
}
