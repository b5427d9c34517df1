//! A lean WebSocket client (RFC 6455), just what the load generator needs. The framing (frame
//! decoder, masked encoding, `Sec-WebSocket-Accept`) is the node's own, shared crate
//! `signal-mesh-ws`, read here from the client's side.
//!
//! Why not tokio-tungstenite: the generator must not be the bottleneck, so a connection here is one
//! `TcpStream`, one read buffer and one write buffer. Received frames are split off the read buffer
//! without copying; outgoing frames are appended to the write buffer and sent with one `write` per
//! batch (the buffer is flushed only when the connection is about to wait for input), so a burst of
//! replies costs one syscall.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{Bytes, BytesMut};
use signal_mesh_ws::{Decoder, Event, OP_BINARY, OP_CLOSE, OP_PONG, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::error::BenchError;

/// Diagnostic: re-arm TCP_QUICKACK after every read, so this client acknowledges at once. A node
/// that leaves Nagle's algorithm on (no TCP_NODELAY) stalls ~40 ms waiting for the client's
/// delayed ACK; with this flag that stall disappears, which proves where it came from.
pub static QUICKACK: AtomicBool = AtomicBool::new(false);

/// Largest handshake response accepted.
const MAX_HANDSHAKE_BYTES: usize = 8192;
/// Read buffer granularity.
const READ_CHUNK: usize = 8192;

/// Largest message accepted from the node (its frames are at most a signal plus framing).
const MAX_MESSAGE: u32 = 1 << 24;

/// A `ws://host:port/path` target on this machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WsUrl {
    /// Where to connect.
    pub addr: SocketAddr,
    /// The `Host` header value.
    pub host: String,
    /// The request path.
    pub path: String,
}

impl WsUrl {
    /// Parses `ws://IP:PORT/path` (or `ws://localhost:PORT/path`). Only loopback targets are
    /// accepted: this tool generates load and must never point it at another machine.
    pub fn parse(url: &str) -> Result<WsUrl, BenchError> {
        let bad = |why: &str| BenchError::Usage(format!("bad url {url:?}: {why}"));
        let rest = url.strip_prefix("ws://").ok_or_else(|| bad("must start with ws://"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = authority.rsplit_once(':').ok_or_else(|| bad("missing :port"))?;
        let port: u16 = port.parse().map_err(|_| bad("invalid port"))?;
        let ip: IpAddr = if host == "localhost" {
            IpAddr::from([127, 0, 0, 1])
        } else {
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .map_err(|_| bad("host must be an IP"))?
        };
        if !ip.is_loopback() {
            return Err(bad("only loopback targets are allowed"));
        }
        Ok(WsUrl { addr: SocketAddr::new(ip, port), host: authority.to_owned(), path: path.to_owned() })
    }
}

impl std::fmt::Display for WsUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ws://{}{}", self.host, self.path)
    }
}

/// One frame received from the server.
#[derive(Debug)]
pub enum Incoming {
    /// A binary data frame.
    Binary(Bytes),
    /// The server closed the connection (code and reason of its close frame, if any).
    Close(Option<u16>, String),
}

/// A client-side WebSocket connection.
#[derive(Debug)]
pub struct WsConn {
    stream: TcpStream,
    rbuf: BytesMut,
    decoder: Decoder,
    wbuf: Vec<u8>,
    mask: [u8; 4],
}

/// A small xorshift generator: masks and handshake keys only need to vary, not to be secret.
pub fn xorshift(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    x
}

fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(T[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl WsConn {
    /// Connects (from `source`, when given) and performs the opening handshake. `seed` varies
    /// the key and mask.
    pub async fn connect(url: &WsUrl, source: Option<IpAddr>, seed: u64) -> Result<WsConn, BenchError> {
        let stream = match source {
            None => TcpStream::connect(url.addr).await?,
            Some(ip) => {
                let sock = if ip.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
                sock.bind(SocketAddr::new(ip, 0))?;
                sock.connect(url.addr).await?
            }
        };
        stream.set_nodelay(true)?;
        let mut rng = seed | 1;
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(&xorshift(&mut rng).to_le_bytes());
        key[8..].copy_from_slice(&xorshift(&mut rng).to_le_bytes());
        let key = base64(&key);
        let mask = (xorshift(&mut rng) as u32).to_le_bytes();
        let mut conn = WsConn {
            stream,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            decoder: Decoder::new(Role::Client, MAX_MESSAGE, MAX_MESSAGE),
            wbuf: Vec::with_capacity(2048),
            mask,
        };
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n",
            url.path, url.host
        );
        conn.stream.write_all(request.as_bytes()).await?;
        let head_len = loop {
            if let Some(i) = conn.rbuf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if conn.rbuf.len() > MAX_HANDSHAKE_BYTES {
                return Err(BenchError::Handshake("response head too large".into()));
            }
            conn.rbuf.reserve(READ_CHUNK);
            if conn.stream.read_buf(&mut conn.rbuf).await? == 0 {
                return Err(BenchError::Handshake("connection closed during handshake".into()));
            }
            if QUICKACK.load(Ordering::Relaxed) {
                let _ = rustix::net::sockopt::set_tcp_quickack(&conn.stream, true);
            }
        };
        let head = conn.rbuf.split_to(head_len);
        let head = String::from_utf8_lossy(&head);
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap_or_default();
        if status.split_whitespace().nth(1) != Some("101") {
            return Err(BenchError::Handshake(format!("expected 101, got {status:?}")));
        }
        let expected = signal_mesh_ws::accept_key(key.as_bytes());
        let accept = lines
            .filter_map(|l| l.split_once(':'))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("sec-websocket-accept"))
            .map(|(_, v)| v.trim().to_owned());
        if accept.as_deref() != Some(expected.as_str()) {
            return Err(BenchError::Handshake(format!("bad Sec-WebSocket-Accept {accept:?}")));
        }
        Ok(conn)
    }

    /// Appends a masked frame of `opcode` whose payload `write` appends to the buffer (it must
    /// append exactly `len` bytes).
    fn queue_frame(&mut self, opcode: u8, len: usize, write: impl FnOnce(&mut Vec<u8>)) {
        let buf = &mut self.wbuf;
        signal_mesh_ws::encode_masked_header(buf, opcode, len, self.mask);
        let start = buf.len();
        write(buf);
        debug_assert_eq!(buf.len() - start, len);
        signal_mesh_ws::unmask(&mut buf[start..], self.mask);
    }

    /// Queues a binary frame whose payload is a protobuf message, encoded straight into the
    /// write buffer.
    pub fn queue_message(&mut self, msg: &impl prost::Message) {
        let len = msg.encoded_len();
        self.queue_frame(OP_BINARY, len, |buf| {
            // Encoding into a Vec cannot run out of space.
            let _ = msg.encode(buf);
        });
    }

    /// Queues a close frame with a normal-closure code.
    pub fn queue_close(&mut self) {
        self.queue_frame(OP_CLOSE, 2, |buf| buf.extend_from_slice(&1000u16.to_be_bytes()));
    }

    /// Sends everything queued.
    pub async fn flush(&mut self) -> Result<(), BenchError> {
        if !self.wbuf.is_empty() {
            self.stream.write_all(&self.wbuf).await?;
            self.wbuf.clear();
        }
        Ok(())
    }

    /// The next data or close frame. Pings are answered; queued output is flushed before the
    /// connection waits for input.
    pub async fn recv(&mut self) -> Result<Incoming, BenchError> {
        loop {
            loop {
                let event =
                    self.decoder.decode(&mut self.rbuf).map_err(|e| BenchError::Protocol(e.to_string()))?;
                match event {
                    None => break,
                    Some(Event::Binary(payload)) => return Ok(Incoming::Binary(payload)),
                    Some(Event::Close(code)) => return Ok(Incoming::Close(code, String::new())),
                    Some(Event::BadClose(_)) => {
                        return Err(BenchError::Protocol("invalid close frame from the node".into()));
                    }
                    Some(Event::Ping(payload)) => {
                        self.queue_frame(OP_PONG, payload.len(), |b| b.extend_from_slice(&payload));
                    }
                    Some(Event::Pong) => {}
                    Some(Event::Text) => return Err(BenchError::Protocol("unexpected text frame".into())),
                    Some(Event::TooLarge(n)) => {
                        return Err(BenchError::Protocol(format!("message of {n} bytes from the node")));
                    }
                }
            }
            self.flush().await?;
            if self.rbuf.capacity() - self.rbuf.len() < 1024 {
                self.rbuf.reserve(READ_CHUNK);
            }
            if self.stream.read_buf(&mut self.rbuf).await? == 0 {
                return Err(BenchError::Closed { code: None, reason: "TCP connection closed".into() });
            }
            if QUICKACK.load(Ordering::Relaxed) {
                let _ = rustix::net::sockopt::set_tcp_quickack(&self.stream, true);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, out) in [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foobar", "Zm9vYmFy")]
        {
            assert_eq!(base64(input.as_bytes()), out);
        }
    }

    #[test]
    fn queued_frames_are_what_the_nodes_decoder_reads() {
        let mut wbuf = Vec::new();
        let mask = [1, 2, 3, 0xff];
        let payload: Vec<u8> = (0..300u16).map(|i| i as u8).collect();
        signal_mesh_ws::encode_masked_header(&mut wbuf, OP_BINARY, payload.len(), mask);
        let start = wbuf.len();
        wbuf.extend_from_slice(&payload);
        signal_mesh_ws::unmask(&mut wbuf[start..], mask);
        let mut d = Decoder::new(Role::Server, 1 << 16, 1 << 16);
        let mut buf = BytesMut::from(&wbuf[..]);
        assert_eq!(d.decode(&mut buf), Ok(Some(Event::Binary(Bytes::from(payload)))));
    }

    #[test]
    fn only_loopback_urls_parse() {
        let u = WsUrl::parse("ws://127.0.0.1:4000/signal").unwrap();
        assert_eq!(u.addr, "127.0.0.1:4000".parse().unwrap());
        assert_eq!(u.path, "/signal");
        assert!(WsUrl::parse("ws://localhost:1/x").is_ok());
        assert!(WsUrl::parse("ws://[::1]:1/x").is_ok());
        assert!(WsUrl::parse("ws://10.0.0.1:4000/signal").is_err());
        assert!(WsUrl::parse("http://127.0.0.1:4000/signal").is_err());
        assert!(WsUrl::parse("ws://127.0.0.1/signal").is_err());
    }
}
