//! A lean WebSocket client (RFC 6455), just what the load generator needs.
//!
//! Why not tokio-tungstenite: the generator must not be the bottleneck, so a connection here is one
//! `TcpStream`, one read buffer and one write buffer. Received frames are split off the read buffer
//! without copying; outgoing frames are appended to the write buffer and sent with one `write` per
//! batch (the buffer is flushed only when the connection is about to wait for input), so a burst of
//! replies costs one syscall.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{Buf, Bytes, BytesMut};
use sha1::{Digest, Sha1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::error::BenchError;

/// Diagnostic: re-arm TCP_QUICKACK after every read, so this client acknowledges at once. A node
/// that leaves Nagle's algorithm on (no TCP_NODELAY) stalls ~40 ms waiting for the client's
/// delayed ACK; with this flag that stall disappears, which proves where it came from.
pub static QUICKACK: AtomicBool = AtomicBool::new(false);

/// The GUID of RFC 6455 section 1.3.
const WS_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Largest handshake response accepted.
const MAX_HANDSHAKE_BYTES: usize = 8192;
/// Read buffer granularity.
const READ_CHUNK: usize = 8192;

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

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

/// XORs `data` with the 4-byte `mask`, eight bytes at a time.
pub fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    let m8 = u64::from_ne_bytes([mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3]]);
    let mut chunks = data.chunks_exact_mut(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        c.copy_from_slice(&(u64::from_ne_bytes(w) ^ m8).to_ne_bytes());
    }
    // The remainder starts at a multiple of 8, so mask byte i lines up with index i.
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
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
        let mut hasher = Sha1::new();
        hasher.update(key.as_bytes());
        hasher.update(WS_GUID);
        let expected = base64(&hasher.finalize());
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
        buf.push(0x80 | opcode);
        if len < 126 {
            buf.push(0x80 | len as u8);
        } else if len <= usize::from(u16::MAX) {
            buf.push(0x80 | 126);
            buf.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            buf.push(0x80 | 127);
            buf.extend_from_slice(&(len as u64).to_be_bytes());
        }
        buf.extend_from_slice(&self.mask);
        let start = buf.len();
        write(buf);
        debug_assert_eq!(buf.len() - start, len);
        apply_mask(&mut buf[start..], self.mask);
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

    /// Parses one complete frame from the read buffer, if there is one.
    fn parse_frame(&mut self) -> Result<Option<(u8, Bytes)>, BenchError> {
        let buf = &self.rbuf[..];
        if buf.len() < 2 {
            return Ok(None);
        }
        let fin = buf[0] & 0x80 != 0;
        let opcode = buf[0] & 0x0F;
        let masked = buf[1] & 0x80 != 0;
        let (len, mut hdr) = match buf[1] & 0x7F {
            126 => {
                if buf.len() < 4 {
                    return Ok(None);
                }
                (usize::from(u16::from_be_bytes([buf[2], buf[3]])), 4)
            }
            127 => {
                if buf.len() < 10 {
                    return Ok(None);
                }
                let mut b = [0u8; 8];
                b.copy_from_slice(&buf[2..10]);
                let len = usize::try_from(u64::from_be_bytes(b))
                    .map_err(|_| BenchError::Protocol("frame length overflows usize".into()))?;
                (len, 10)
            }
            n => (usize::from(n), 2),
        };
        let mask = if masked {
            if buf.len() < hdr + 4 {
                return Ok(None);
            }
            let m = [buf[hdr], buf[hdr + 1], buf[hdr + 2], buf[hdr + 3]];
            hdr += 4;
            Some(m)
        } else {
            None
        };
        let total = hdr.checked_add(len).ok_or_else(|| BenchError::Protocol("frame too long".into()))?;
        if buf.len() < total {
            self.rbuf.reserve(total - buf.len());
            return Ok(None);
        }
        if !fin || opcode == OP_CONTINUATION {
            return Err(BenchError::Protocol("fragmented frames are not supported by the generator".into()));
        }
        let mut frame = self.rbuf.split_to(total);
        frame.advance(hdr);
        if let Some(m) = mask {
            apply_mask(&mut frame, m);
        }
        Ok(Some((opcode, frame.freeze())))
    }

    /// The next data or close frame. Pings are answered; queued output is flushed before the
    /// connection waits for input.
    pub async fn recv(&mut self) -> Result<Incoming, BenchError> {
        loop {
            while let Some((opcode, payload)) = self.parse_frame()? {
                match opcode {
                    OP_BINARY => return Ok(Incoming::Binary(payload)),
                    OP_CLOSE => {
                        let code = (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                        let reason =
                            String::from_utf8_lossy(payload.get(2..).unwrap_or_default()).into_owned();
                        return Ok(Incoming::Close(code, reason));
                    }
                    OP_PING => {
                        self.queue_frame(OP_PONG, payload.len(), |b| b.extend_from_slice(&payload));
                    }
                    OP_PONG => {}
                    OP_TEXT => return Err(BenchError::Protocol("unexpected text frame".into())),
                    other => return Err(BenchError::Protocol(format!("unknown opcode {other:#x}"))),
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
    fn rfc6455_accept_example() {
        let mut h = Sha1::new();
        h.update(b"dGhlIHNhbXBsZSBub25jZQ==");
        h.update(WS_GUID);
        assert_eq!(base64(&h.finalize()), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn masking_is_an_involution_at_every_length() {
        let mask = [1, 2, 3, 0xff];
        for len in 0..40 {
            let orig: Vec<u8> = (0..len as u8).collect();
            let mut data = orig.clone();
            apply_mask(&mut data, mask);
            for (i, (a, b)) in data.iter().zip(&orig).enumerate() {
                assert_eq!(*a, b ^ mask[i % 4]);
            }
            apply_mask(&mut data, mask);
            assert_eq!(data, orig);
        }
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
