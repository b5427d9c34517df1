//! Differential test of [`Decoder`](super::Decoder) against tungstenite (an independent RFC 6455
//! implementation) as a server: random streams of client frames — fragmented messages with control
//! frames between the fragments, pings, pongs, text, close frames with every kind of code and
//! reason, and one corruption per stream some of the time — fed to both, in random cuts to ours.
//! Both must report the same sequence of messages, and refuse a stream at the same frame.
//!
//! Cases: `SIGNAL_MESH_WS_DIFF_CASES` (default 3,000, a few seconds in CI); `scripts/fuzz-ws.sh`
//! runs millions in release mode. With the `differential` feature the comparison and the
//! generator are public, for the coverage-guided fuzz target `fuzz/src/bin/ws_decoder.rs`, which
//! feeds arbitrary bytes (seeded with [`stream`]s) to both.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{self, Read, Write};

use bytes::BytesMut;
use tungstenite::protocol::{Role as TRole, WebSocket, WebSocketConfig};
use tungstenite::{Error as WsError, Message};

use super::{Decoder, Event, OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT, Role, unmask};

/// What either implementation made of the stream, normalized.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    Binary(Vec<u8>),
    Text,
    Ping(Vec<u8>),
    Pong,
    Close(Option<u16>),
    /// The stream was refused: a protocol error, or a close frame that is answered with an error
    /// code instead of an echo.
    Refused,
}

/// Input bytes for tungstenite; writes (its pongs and close replies) are discarded.
struct Input {
    data: Vec<u8>,
    at: usize,
}

impl Read for Input {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.at == self.data.len() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(self.data.len() - self.at);
        buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

impl Write for Input {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What tungstenite (as a server) makes of `bytes`, and whether it stopped at invalid UTF-8
/// (in a text message or a close reason: our decoder does not read text, so a comparison must
/// end there).
pub fn theirs_detailed(bytes: &[u8]) -> (Vec<Seen>, bool) {
    let config = WebSocketConfig::default().max_message_size(Some(1 << 24)).max_frame_size(Some(1 << 24));
    let mut ws =
        WebSocket::from_raw_socket(Input { data: bytes.to_vec(), at: 0 }, TRole::Server, Some(config));
    let mut seen = Vec::new();
    loop {
        match ws.read() {
            Ok(Message::Binary(b)) => seen.push(Seen::Binary(b.to_vec())),
            Ok(Message::Text(_)) => seen.push(Seen::Text),
            Ok(Message::Ping(p)) => seen.push(Seen::Ping(p.to_vec())),
            Ok(Message::Pong(_)) => seen.push(Seen::Pong),
            Ok(Message::Close(None)) => {
                seen.push(Seen::Close(None));
                return (seen, false);
            }
            Ok(Message::Close(Some(f))) => {
                // tungstenite answers a code nobody may send with 1002 "Protocol violation" and
                // reports that frame (the generator never sends this reason itself).
                let replaced = u16::from(f.code) == 1002 && f.reason.as_str() == "Protocol violation";
                seen.push(if replaced { Seen::Refused } else { Seen::Close(Some(u16::from(f.code))) });
                return (seen, false);
            }
            Ok(Message::Frame(_)) => unreachable!("raw frames are not returned by read()"),
            Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => return (seen, false),
            Err(e) => {
                seen.push(Seen::Refused);
                return (seen, matches!(e, WsError::Utf8(_)));
            }
        }
    }
}

/// What tungstenite (as a server) makes of `bytes`.
pub fn theirs(bytes: &[u8]) -> Vec<Seen> {
    theirs_detailed(bytes).0
}

/// What our [`Decoder`] (as a server) makes of `bytes`, fed in cuts of `1 + cut() % 700` bytes.
pub fn ours(bytes: &[u8], mut cut: impl FnMut() -> u64) -> Vec<Seen> {
    let mut d = Decoder::new(Role::Server, 1 << 24, 1 << 24);
    let mut buf = BytesMut::new();
    let mut rest = bytes;
    let mut seen = Vec::new();
    loop {
        loop {
            match d.decode(&mut buf) {
                Ok(Some(event)) => {
                    let s = match event {
                        Event::Binary(b) => Seen::Binary(b.to_vec()),
                        Event::Text => Seen::Text,
                        Event::Ping(p) => Seen::Ping(p.to_vec()),
                        Event::Pong => Seen::Pong,
                        Event::Close(code) => Seen::Close(code),
                        Event::BadClose(_) => Seen::Refused,
                        Event::TooLarge(n) => panic!("no message here is over the limit ({n})"),
                    };
                    let end = matches!(s, Seen::Close(_) | Seen::Refused);
                    seen.push(s);
                    if end {
                        return seen;
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    seen.push(Seen::Refused);
                    return seen;
                }
            }
        }
        if rest.is_empty() {
            return seen;
        }
        let cut = (cut() as usize % 700).clamp(1, rest.len());
        buf.extend_from_slice(&rest[..cut]);
        rest = &rest[cut..];
    }
}

/// Compares our decoder with tungstenite on `bytes` (ours fed in cuts drawn from `cut`): the same
/// messages, refused at the same frame. Returns both sequences on a disagreement.
///
/// Two differences are not disagreements:
/// - where tungstenite stopped at invalid UTF-8 (our decoder does not read text), only what came
///   before is compared; there ours may see pings and pongs inside the text message, then its
///   end, a close or a refusal, or still be waiting for the rest of it;
/// - where the stream ends inside a frame, one side may refuse that frame from its header alone
///   (or ours report a text message, whose payload it skips) while the other waits for the rest; then both are run again on the stream followed by
///   70,000 zero bytes, and both must refuse at that frame — or, when ours refused a header that
///   announces more than the padding, tungstenite must still be waiting.
pub fn compare(bytes: &[u8], mut cut: impl FnMut() -> u64) -> Result<(), (Vec<Seen>, Vec<Seen>)> {
    let (expected, utf8) = theirs_detailed(bytes);
    let got = ours(bytes, &mut cut);
    let agree = if agrees(&got, &expected, utf8) {
        true
    } else if let Some(at) = refused_early(&got, &expected).or_else(|| refused_early(&expected, &got)) {
        let mut padded = bytes.to_vec();
        padded.resize(bytes.len() + 70_000, 0);
        let (theirs_padded, utf8_padded) = theirs_detailed(&padded);
        let ours_padded = ours(&padded, &mut cut);
        // A header announcing more than the padding (up to the 16 MiB limit): tungstenite still
        // waits, and ours refused from the header (a control frame over 125 bytes, say).
        let theirs_still_waiting = got.len() == at + 1 && theirs_padded == expected;
        agrees(&ours_padded, &theirs_padded, utf8_padded) || theirs_still_waiting
    } else {
        false
    };
    if agree { Ok(()) } else { Err((got, expected)) }
}

/// Whether `got` (ours) and `expected` (tungstenite's, `utf8` when it stopped at invalid UTF-8)
/// agree: equal, or equal up to the UTF-8 refusal, after which ours may still see control
/// frames inside the text message and then its end (`Text`), a close, a refusal, or nothing yet.
fn agrees(got: &[Seen], expected: &[Seen], utf8: bool) -> bool {
    if !utf8 {
        return got == expected;
    }
    let n = expected.len() - 1;
    got.len() >= n
        && got[..n] == expected[..n]
        && got[n..]
            .iter()
            .find(|s| !matches!(s, Seen::Ping(_) | Seen::Pong))
            .is_none_or(|s| matches!(s, Seen::Text | Seen::Refused | Seen::Close(_)))
}

/// Whether `early` decided on a frame at which `waiting` only waits for more bytes: the same
/// messages before it, `waiting` neither refused nor closed, and `early` refused that frame from
/// its header (or, ours, reported a text message, whose payload it skips). Returns its index.
fn refused_early(early: &[Seen], waiting: &[Seen]) -> Option<usize> {
    let at = waiting.len();
    let ended = matches!(waiting.last(), Some(Seen::Refused | Seen::Close(_)));
    let decided = matches!(early.get(at), Some(Seen::Refused | Seen::Text));
    (early.len() == at + 1 && early[..at] == *waiting && decided && !ended).then_some(at)
}

/// xorshift64: the generator's randomness, reproducible from a seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (never zero).
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

/// A client frame with a random mask (and the 16- or 64-bit length form chosen at random when the
/// length allows more than one, as RFC 6455 does not require the shortest).
fn frame(rng: &mut Rng, fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let key = [rng.next_u64() as u8, rng.next_u64() as u8, rng.next_u64() as u8, rng.next_u64() as u8];
    let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
    let n = payload.len();
    if n <= 125 && rng.below(8) != 0 {
        out.push(0x80 | n as u8);
    } else if n <= 0xffff && rng.below(4) != 0 {
        out.push(0x80 | 126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    out.extend_from_slice(&key);
    let mut masked = payload.to_vec();
    unmask(&mut masked, key);
    out.extend_from_slice(&masked);
    out
}

fn payload_len(rng: &mut Rng) -> usize {
    match rng.below(10) {
        0 => 0,
        1..=5 => rng.below(126) as usize,
        6..=8 => rng.below(2000) as usize,
        _ => 65_530 + rng.below(12) as usize,
    }
}

fn text(rng: &mut Rng, len: usize) -> Vec<u8> {
    // Valid UTF-8 (our decoder skips text; tungstenite validates it: only valid text is compared).
    const PIECES: [&str; 4] = ["a", "é", "語", "🙂"];
    let mut s = String::new();
    while s.len() < len {
        s.push_str(PIECES[rng.below(4) as usize]);
    }
    s.into_bytes()
}

fn control(rng: &mut Rng) -> Vec<u8> {
    let opcode = if rng.below(2) == 0 { OP_PING } else { OP_PONG };
    let len = rng.below(126) as usize;
    let payload = rng.bytes(len);
    frame(rng, true, opcode, &payload)
}

fn close(rng: &mut Rng) -> Vec<u8> {
    const CODES: [u16; 24] = [
        0, 1, 999, 1000, 1001, 1002, 1003, 1004, 1005, 1006, 1007, 1011, 1012, 1013, 1014, 1015, 1016, 2999,
        3000, 3999, 4000, 4999, 5000, 65535,
    ];
    let payload = match rng.below(8) {
        0 => Vec::new(),
        1 => vec![0x03],
        n => {
            let mut p = CODES[rng.below(CODES.len() as u64) as usize].to_be_bytes().to_vec();
            match n {
                2 => p.extend_from_slice(b"\xff\xfe not utf-8"),
                3 => p.extend_from_slice("au revoir, é".as_bytes()),
                _ => {}
            }
            p
        }
    };
    frame(rng, true, OP_CLOSE, &payload)
}

/// One corruption of a valid frame sequence.
fn corrupt(rng: &mut Rng) -> Vec<u8> {
    let len = rng.below(40) as usize;
    let payload = rng.bytes(len);
    let mut f = frame(rng, true, OP_BINARY, &payload);
    match rng.below(8) {
        0 => f[0] |= 0x10 << rng.below(3),
        1 => f[1] &= 0x7f,
        2 => f[0] = (f[0] & 0xf0) | [3, 4, 5, 6, 7, 0xb, 0xc, 0xf][rng.below(8) as usize],
        3 => {
            let len = 126 + rng.below(50) as usize;
            let big = rng.bytes(len);
            f = frame(rng, true, OP_PING, &big);
        }
        4 => f = frame(rng, false, OP_PING, b"x"),
        5 => f = frame(rng, true, OP_CONTINUATION, b"orphan"),
        6 => {
            let mut g = frame(rng, false, OP_BINARY, b"first");
            g.extend(frame(rng, true, OP_TEXT, b"nested"));
            f = g;
        }
        _ => {
            let mut g = vec![0x82, 0x80 | 127];
            g.extend_from_slice(&(u64::MAX - rng.below(1000)).to_be_bytes());
            g.extend_from_slice(&[1, 2, 3, 4]);
            f = g;
        }
    }
    f
}

/// A random stream of valid messages, ending (sometimes) with a close or a corruption.
pub fn stream(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..rng.below(8) {
        match rng.below(5) {
            0 => out.extend(control(rng)),
            kind => {
                let opcode = if kind == 1 { OP_TEXT } else { OP_BINARY };
                let len = payload_len(rng);
                let data = if opcode == OP_TEXT { text(rng, len) } else { rng.bytes(len) };
                // Split into 1-4 fragments with control frames between some of them.
                let parts = 1 + rng.below(4) as usize;
                let mut cuts: Vec<usize> =
                    (0..parts - 1).map(|_| rng.below(data.len() as u64 + 1) as usize).collect();
                cuts.sort_unstable();
                cuts.push(data.len());
                let mut from = 0;
                for (i, to) in cuts.iter().enumerate() {
                    let op = if i == 0 { opcode } else { OP_CONTINUATION };
                    out.extend(frame(rng, i + 1 == cuts.len(), op, &data[from..*to]));
                    from = *to;
                    if i + 1 < cuts.len() && rng.below(3) == 0 {
                        out.extend(control(rng));
                    }
                }
            }
        }
    }
    match rng.below(4) {
        0 => out.extend(close(rng)),
        1 => out.extend(corrupt(rng)),
        _ => {}
    }
    out
}

/// Runs `cases` random streams from `seed`; panics with the seed of the first disagreement.
pub fn run(seed: u64, cases: u64) {
    let mut rng = Rng(seed | 1);
    for case in 0..cases {
        let case_seed = rng.next_u64() | 1;
        let mut r = Rng(case_seed);
        let bytes = stream(&mut r);
        let expected = theirs(&bytes);
        let got = ours(&bytes, || r.next_u64());
        assert_eq!(
            got,
            expected,
            "case {case} (seed {case_seed:#x}): {} bytes, the last ones {:02x?}",
            bytes.len(),
            &bytes[bytes.len().saturating_sub(24)..]
        );
    }
}

#[cfg(test)]
#[test]
fn decoder_agrees_with_tungstenite_on_random_frame_streams() {
    let cases = std::env::var("SIGNAL_MESH_WS_DIFF_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(3000);
    let seed = std::env::var("SIGNAL_MESH_WS_DIFF_SEED")
        .ok()
        .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
        .unwrap_or(0x5eed_0009);
    run(seed, cases);
}
