//! The engine the JavaScript facade drives: [`Engine`], the core behind a flat API of numbers
//! and byte arrays. It holds no JavaScript value and calls no JavaScript: the
//! facade (`js/index.js`) owns the WebSocket, the timer, the identity, the `RTCPeerConnection`s
//! and the promises, feeds every input in with the time (`now`, `Date.now()`), then drains
//! [`Engine::poll`], whose last output says when to arm the one `setTimeout`.
//!
//! Each output is one byte string (see [`out`]) the facade reads with a few lines of JavaScript.
//! Measured against the wasm-bindgen shell this replaces (WebSocket, timer, promises and events
//! through web-sys, js-sys futures and closures): see BENCHMARKS.md, "Package size, continued".
//!
//! Not a public API: the facade adds `SignalClient`, `PeerConnection`, `Room` and the errors.
//! `exports` (wasm32) is what wasm-bindgen exports: four functions over engines named by number.

#[cfg(target_arch = "wasm32")]
mod exports;
pub mod out;

#[cfg(all(test, target_arch = "wasm32"))]
mod browser_tests;
#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests;

use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;
use signal_mesh_proto::{PeerId, TopicId};

use crate::core::{Candidate, Client, ClientError, Code, Config, Handle, Millis, OpId, SdpKind};

/// Engines alive (created and not yet freed), for the test that `close()` frees them.
static LIVE: AtomicU32 = AtomicU32::new(0);

/// Milliseconds from JavaScript (`Date.now()`); the core only compares them.
fn ms(now: f64) -> Millis {
    now as Millis
}

/// The engine of one `SignalClient`.
#[derive(Debug)]
pub struct Engine {
    core: Client,
    /// Why the last operation call failed at once: the next output.
    failed: Option<ClientError>,
}

impl Drop for Engine {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Engine {
    /// Starts a client at `now`. `config` is the 32-byte public key the facade signs for, 8
    /// random bytes (the core's seed), then the node URLs in UTF-8, one per line (the facade checks
    /// them): one byte array rather than three arguments, which keeps the glue small.
    /// `connect_timeout_ms` is 0 for the default. Its first outputs open a socket.
    pub fn new(now: f64, config: &[u8], connect_timeout_ms: u32) -> Engine {
        // The facade passes its identity's key; a wrong one only makes the node refuse it.
        let peer_id = config.get(..32).and_then(|b| PeerId::from_slice(b).ok());
        let mut seed = [0; 8];
        for (s, e) in seed.iter_mut().zip(config.iter().skip(32)) {
            *s = *e;
        }
        let mut servers = Vec::new();
        for url in config.get(40..).unwrap_or_default().split(|b| *b == b'\n') {
            if !url.is_empty() {
                servers.push(text(url));
            }
        }
        let peer_id = peer_id.unwrap_or(PeerId::from_array([0; 32]));
        let mut config = Config::new(servers, peer_id, u64::from_le_bytes(seed));
        if connect_timeout_ms > 0 {
            config.connect_timeout_ms = connect_timeout_ms.into();
        }
        LIVE.fetch_add(1, Ordering::Relaxed);
        Engine { core: Client::new(config, ms(now)), failed: None }
    }

    /// The next output, encoded (see [`out`]). The last of a drain is [`out::IDLE`], with the
    /// time (`Date.now()`) [`Engine::tick`] is due.
    pub fn poll(&mut self) -> Vec<u8> {
        if let Some(e) = self.failed.take() {
            return out::error(16, 0, &e);
        }
        match self.core.poll_output() {
            Some(o) => out::encode(&self.core, o),
            None => out::put(out::IDLE, self.core.poll_timeout().map_or(0, |t| t + 1), 0, [b""; 3]),
        }
    }

    /// One input (everything but construction goes through here: one export, one glue method):
    ///
    /// | kind | input | `a` | `b` | `bytes` |
    /// |---|---|---|---|---|
    /// | 0-7 | what the `RTCPeerConnection` of `a` reports (see [`Engine::report`]) | handle | `n` | texts |
    /// | 8 | the timer fired | | | |
    /// | 9 | a binary frame arrived on the socket of attempt `a` | attempt | | frame |
    /// | 10 | the socket of attempt `a` closed | attempt | close code (0: it could not even be created) | |
    /// | 11 | the challenge of attempt `a` is signed | attempt | | signature |
    /// | 12 | the application decided on the incoming offer of `a` | handle | accept (0/1) | |
    /// | 13 | the application aborted operation `a` | operation | | |
    /// | 14 | the application closed connection `a` | handle | | |
    /// | 15 | the application closed the client | | | |
    /// | 16 | join | announce (0/1) | | topic id |
    /// | 17 | leave | | | topic id |
    /// | 18 | lookup | | limit (-1: one page of the node's size) | topic id |
    /// | 19 | connect | | | peer id, then the data channel label |
    ///
    /// Returns the operation id of 16-19 (0 when it failed at once: its failure is then the next
    /// output, for operation 0), else 0. Texts are UTF-8.
    pub fn input(&mut self, now: f64, kind: u32, a: f64, b: f64, bytes: &[u8]) -> f64 {
        let n = a as u32;
        match kind {
            0..=7 => self.report(now, n, kind, b, bytes),
            8 => self.tick(now),
            9 => self.frame(now, n, bytes),
            10 => self.closed(now, n, b as u32),
            11 => self.signed(now, n, bytes),
            12 => self.decide(now, n, b == 1.0),
            13 => self.cancel(now, a),
            14 => self.close_connection(now, n),
            15 => self.close(now),
            16 => return self.join(now, bytes, a == 1.0),
            17 => return self.leave(now, bytes),
            18 => return self.lookup(now, bytes, b),
            _ => return self.connect(now, bytes),
        }
        0.0
    }

    /// How many engines are alive: created and not yet freed (for tests).
    pub fn live() -> u32 {
        LIVE.load(Ordering::Relaxed)
    }
}

/// The inputs one by one, as [`Engine::input`] numbers them (what the tests call).
impl Engine {
    /// The timer fired.
    pub fn tick(&mut self, now: f64) {
        self.core.handle_timeout(ms(now));
    }

    /// A binary frame arrived on the socket of attempt `conn`.
    pub fn frame(&mut self, now: f64, conn: u32, frame: &[u8]) {
        self.core.handle_frame(conn, Bytes::copy_from_slice(frame), ms(now));
    }

    /// The socket of attempt `conn` closed with `code` (0: it could not even be created).
    pub fn closed(&mut self, now: f64, conn: u32, code: u32) {
        let code = u16::try_from(code).ok().filter(|c| *c != 0);
        self.core.handle_socket_closed(conn, code, ms(now));
    }

    /// The facade signed the challenge of attempt `conn` (64 bytes; anything else is ignored and
    /// the handshake times out).
    pub fn signed(&mut self, now: f64, conn: u32, signature: &[u8]) {
        if let Ok(sig) = <[u8; 64]>::try_from(signature) {
            self.core.handle_signed(conn, sig, ms(now));
        }
    }

    /// What the `RTCPeerConnection` of `handle` reports (inputs 0-7), by `kind`: 0 local description (`n` 1
    /// for an offer, `a` SDP), 1 local candidate (`a` candidate, `b` mid, `n` m-line index or -1,
    /// `c` username fragment), 2 data channel open, 3 ICE failed, 4 ICE connected, 5 negotiation
    /// needed, 6 closed (`a` why), 7 a WebRTC call failed (`a` why). `texts` is `a`, `b` and `c`
    /// in UTF-8, separated by 0 bytes (none of them contains one).
    pub fn report(&mut self, now: f64, handle: u32, kind: u32, n: f64, texts: &[u8]) {
        let mut texts = texts.split(|b| *b == 0);
        let mut next = || text(texts.next().unwrap_or_default());
        let (h, now, a, b, c) = (Handle::from_raw(handle), ms(now), next(), next(), next());
        let core = &mut self.core;
        match kind {
            0 => {
                let sdp_kind = if n == 1.0 { SdpKind::Offer } else { SdpKind::Answer };
                core.rtc_local_description(h, sdp_kind, a, now);
            }
            1 => {
                let index = (0.0..=f64::from(u16::MAX)).contains(&n).then_some(n as u16);
                let candidate =
                    Candidate { candidate: a, sdp_mid: b, sdp_m_line_index: index, username_fragment: c };
                core.rtc_local_candidate(h, candidate, now);
            }
            2 => core.rtc_channel_open(h, now),
            3 => core.rtc_ice_failed(h, now),
            4 => core.rtc_ice_connected(h, now),
            5 => core.rtc_negotiation_needed(h, now),
            6 => core.rtc_closed(h, ClientError::closed(a), now),
            _ => core.rtc_closed(h, ClientError::new(Code::Browser, a), now),
        }
    }

    /// Joins the 32-byte topic id: the operation's id, or 0 when it failed at once (its failure
    /// is then the next output, for operation 0).
    pub fn join(&mut self, now: f64, topic: &[u8], announce: bool) -> f64 {
        let r = topic_id(topic).and_then(|t| self.core.join(t, announce, ms(now)));
        self.started(r)
    }

    /// Leaves the 32-byte topic id.
    pub fn leave(&mut self, now: f64, topic: &[u8]) -> f64 {
        let r = topic_id(topic).and_then(|t| self.core.leave(t, ms(now)));
        self.started(r)
    }

    /// Looks up peers of the 32-byte topic id: at most `limit` (-1: one page of the node's size).
    pub fn lookup(&mut self, now: f64, topic: &[u8], limit: f64) -> f64 {
        let limit = (limit >= 0.0).then_some(limit.min(f64::from(u32::MAX)) as u32);
        let r = topic_id(topic).and_then(|t| self.core.lookup(t, limit, ms(now)));
        self.started(r)
    }

    /// Connects to a peer: `peer_label` is its 32-byte id, then the data channel label in UTF-8.
    pub fn connect(&mut self, now: f64, peer_label: &[u8]) -> f64 {
        let (peer, label) = peer_label.split_at(peer_label.len().min(32));
        let r = PeerId::from_slice(peer)
            .map_err(|_| ClientError::invalid("a peer id is 32 bytes"))
            .and_then(|p| self.core.connect(p, &text(label), ms(now)));
        self.started(r)
    }

    /// Aborts a lookup or connect: it completes with `ABORTED`.
    pub fn cancel(&mut self, now: f64, op: f64) {
        self.core.cancel(op as OpId, ms(now));
    }

    /// The application accepted (or refused) the incoming offer of `handle`.
    pub fn decide(&mut self, now: f64, handle: u32, accept: bool) {
        self.core.decide_incoming(Handle::from_raw(handle), accept, ms(now));
    }

    /// Closes one connection (says bye to the peer).
    pub fn close_connection(&mut self, now: f64, handle: u32) {
        self.core.close_connection(Handle::from_raw(handle), ms(now));
    }

    /// Closes the client.
    pub fn close(&mut self, now: f64) {
        self.core.close(ms(now));
    }

    /// The core, for tests.
    pub fn core(&self) -> &Client {
        &self.core
    }

    fn started(&mut self, r: Result<OpId, ClientError>) -> f64 {
        match r {
            Ok(op) => op as f64,
            Err(e) => {
                self.failed = Some(e);
                0.0
            }
        }
    }
}

/// UTF-8 from the facade (`TextEncoder`): strings cross as bytes, so the wasm-bindgen glue needs
/// no string encoder of its own (less JavaScript).
fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap_or_default()
}

fn topic_id(bytes: &[u8]) -> Result<TopicId, ClientError> {
    TopicId::from_slice(bytes).map_err(|_| ClientError::invalid("a topic id is 32 bytes"))
}
