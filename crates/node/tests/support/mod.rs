//! A small native test client for the edge protocol over a real WebSocket.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use signal_mesh_node::{Config, Node, RunningNode};
use signal_mesh_proto::auth::Identity;
use signal_mesh_proto::message::Authenticate;
use signal_mesh_proto::{
    Challenge, ClientMessage, ErrorCode, Event, PeerId, RequestBody, RequestId, ResponseBody, ServerMessage,
    TopicId, Welcome, decode_server, encode_client,
};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long any single expected frame may take.
pub const STEP: Duration = Duration::from_secs(10);

/// A config listening on a free port.
pub fn config() -> Config {
    Config::default().with_listen("127.0.0.1:0".parse().unwrap())
}

pub async fn start(config: Config) -> RunningNode {
    Node::start(config).await.expect("node starts")
}

/// The TCP mesh multiaddr of `node` (with `/p2p/<id>`), for other nodes' `--bootstrap`.
pub fn tcp_addr(node: &RunningNode) -> libp2p::Multiaddr {
    node.mesh()
        .listen_addrs()
        .iter()
        .find(|a| a.iter().any(|p| matches!(p, libp2p::multiaddr::Protocol::Tcp(_))))
        .cloned()
        .expect("a TCP listen address")
}

pub fn identity() -> Identity {
    signal_mesh_node::identity::generate().unwrap()
}

pub fn topic(name: &str) -> TopicId {
    TopicId::from_name(name).unwrap()
}

/// What the node did when it closed the connection.
#[derive(Debug, PartialEq, Eq)]
pub struct Closed {
    /// The code of the `Goodbye` frame.
    pub goodbye: ErrorCode,
    /// The WebSocket close code.
    pub close_code: Option<u16>,
}

pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub identity: Identity,
    pub challenge: Challenge,
    pub welcome: Option<Welcome>,
    next_id: RequestId,
    /// Frames read while waiting for something else.
    backlog: VecDeque<ServerMessage>,
}

impl Client {
    /// Connects and reads the challenge, without authenticating.
    pub async fn connect_raw(addr: SocketAddr, identity: Identity) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/signal")).await.expect("connect");
        let mut c = Client {
            ws,
            identity,
            challenge: Challenge {
                protocol_versions: vec![],
                node_id: signal_mesh_proto::NodeId::new(vec![0u8; 1]).unwrap(),
                nonce: [0; 32],
            },
            welcome: None,
            next_id: 1,
            backlog: VecDeque::new(),
        };
        match c.recv().await {
            ServerMessage::Challenge(ch) => c.challenge = ch,
            other => panic!("expected a challenge, got {other:?}"),
        }
        c
    }

    /// Connects and authenticates as a new identity.
    pub async fn connect(addr: SocketAddr) -> Client {
        Self::connect_as(addr, identity()).await
    }

    /// Connects and authenticates as `identity`.
    pub async fn connect_as(addr: SocketAddr, identity: Identity) -> Client {
        let mut c = Self::connect_raw(addr, identity).await;
        let auth = c.identity.authenticate(&c.challenge);
        c.authenticate(auth).await;
        match c.recv().await {
            ServerMessage::Welcome(w) => {
                assert_eq!(w.peer_id, c.peer());
                c.welcome = Some(w);
            }
            other => panic!("expected a welcome, got {other:?}"),
        }
        c
    }

    pub fn peer(&self) -> PeerId {
        self.identity.peer_id()
    }

    pub async fn authenticate(&mut self, auth: Authenticate) {
        self.send(ClientMessage::Authenticate(auth)).await;
    }

    pub async fn send(&mut self, msg: ClientMessage) {
        self.send_raw(encode_client(msg)).await;
    }

    pub async fn send_raw(&mut self, frame: Bytes) {
        self.ws.send(Message::Binary(frame)).await.expect("send");
    }

    /// Queues a frame without flushing (for pipelining).
    pub async fn feed(&mut self, msg: ClientMessage) {
        self.ws.feed(Message::Binary(encode_client(msg))).await.expect("feed");
    }

    pub async fn flush(&mut self) {
        self.ws.flush().await.expect("flush");
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::Text(text.into())).await.expect("send text");
    }

    /// Sends any WebSocket message (raw frames, pings).
    pub async fn send_ws(&mut self, msg: Message) {
        self.ws.send(msg).await.expect("send");
    }

    /// Waits for the next WebSocket pong, keeping protocol frames in the backlog.
    pub async fn pong(&mut self) -> Bytes {
        loop {
            let msg = tokio::time::timeout(STEP, self.ws.next())
                .await
                .expect("timed out waiting for a pong")
                .expect("connection ended")
                .expect("socket error");
            match msg {
                Message::Pong(p) => return p,
                Message::Binary(b) => {
                    self.backlog.push_back(decode_server(b, 1 << 20).expect("valid server frame"))
                }
                Message::Ping(_) => {}
                other => panic!("unexpected WebSocket message {other:?}"),
            }
        }
    }

    /// The next frame from the node (backlog first).
    pub async fn recv(&mut self) -> ServerMessage {
        if let Some(m) = self.backlog.pop_front() {
            return m;
        }
        self.recv_wire().await
    }

    async fn recv_wire(&mut self) -> ServerMessage {
        loop {
            let msg = tokio::time::timeout(STEP, self.ws.next())
                .await
                .expect("timed out waiting for a frame")
                .expect("connection ended")
                .expect("socket error");
            match msg {
                Message::Binary(b) => return decode_server(b, 1 << 20).expect("valid server frame"),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("unexpected WebSocket message {other:?}"),
            }
        }
    }

    /// Forgets the frames kept in the backlog.
    pub fn drain_events(&mut self) {
        self.backlog.clear();
    }

    /// Waits for the first frame matching `f`, keeping the others in the backlog.
    pub async fn wait_for<T>(&mut self, mut f: impl FnMut(&ServerMessage) -> Option<T>) -> T {
        if let Some(i) = self.backlog.iter().position(|m| f(m).is_some()) {
            let m = self.backlog.remove(i).unwrap();
            return f(&m).unwrap();
        }
        loop {
            let m = self.recv_wire().await;
            if let Some(t) = f(&m) {
                return t;
            }
            self.backlog.push_back(m);
        }
    }

    /// Sends a request and waits for its response.
    pub async fn request(&mut self, body: RequestBody) -> ResponseBody {
        let id = self.send_request(body).await;
        self.response(id).await
    }

    pub async fn send_request(&mut self, body: RequestBody) -> RequestId {
        let id = self.next_id;
        self.next_id += 1;
        self.send(ClientMessage::Request { id, body }).await;
        id
    }

    pub fn take_id(&mut self) -> RequestId {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    pub async fn response(&mut self, id: RequestId) -> ResponseBody {
        self.wait_for(|m| match m {
            ServerMessage::Response { id: got, body } if *got == id => Some(body.clone()),
            _ => None,
        })
        .await
    }

    /// Waits for the next event.
    pub async fn event(&mut self) -> Event {
        self.wait_for(|m| match m {
            ServerMessage::Event(e) => Some(e.clone()),
            _ => None,
        })
        .await
    }

    /// Waits for the next unsolicited error.
    pub async fn error(&mut self) -> ErrorCode {
        self.wait_for(|m| match m {
            ServerMessage::Error { code, .. } => Some(*code),
            _ => None,
        })
        .await
    }

    pub async fn join(&mut self, topic: TopicId, announce: bool) -> ResponseBody {
        self.request(RequestBody::Join { topic, announce }).await
    }

    pub async fn leave(&mut self, topic: TopicId) -> ResponseBody {
        self.request(RequestBody::Leave { topic }).await
    }

    pub async fn lookup(&mut self, topic: TopicId, limit: u32, cursor: Option<PeerId>) -> ResponseBody {
        self.request(RequestBody::Lookup { topic, limit, cursor }).await
    }

    pub async fn signal(&mut self, to: PeerId, payload: &'static [u8]) -> ResponseBody {
        self.request(RequestBody::Signal {
            to,
            payload: Bytes::from_static(payload),
            ack: signal_mesh_proto::AckMode::Always,
        })
        .await
    }

    /// Reads until the node's `Goodbye` and close frame.
    pub async fn closed(&mut self) -> Closed {
        let goodbye = self
            .wait_for(|m| match m {
                ServerMessage::Goodbye { code, .. } => Some(*code),
                _ => None,
            })
            .await;
        let close_code = loop {
            match tokio::time::timeout(STEP, self.ws.next()).await.expect("timed out waiting for close") {
                Some(Ok(Message::Close(frame))) => {
                    // Polling once more sends our close reply and sees the end of the stream.
                    let _ = tokio::time::timeout(STEP, self.ws.next()).await;
                    break frame.map(|f| u16::from(f.code));
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => break None,
            }
        };
        Closed { goodbye, close_code }
    }

    /// Reads everything until the connection ends; returns the goodbye code if one came.
    pub async fn drain_to_end(&mut self) -> Option<ErrorCode> {
        let mut goodbye = None;
        loop {
            match tokio::time::timeout(STEP, self.ws.next()).await.expect("connection did not end") {
                Some(Ok(Message::Binary(b))) => {
                    if let Ok(ServerMessage::Goodbye { code, .. }) = decode_server(b, 1 << 20) {
                        goodbye = Some(code);
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return goodbye,
                Some(Ok(_)) => {}
            }
        }
    }

    /// Asserts that nothing arrives within `wait`.
    pub async fn assert_silent(&mut self, wait: Duration) {
        assert!(self.backlog.is_empty(), "unexpected frames: {:?}", self.backlog);
        if let Ok(Some(Ok(m))) = tokio::time::timeout(wait, self.ws.next()).await {
            panic!("unexpected frame {m:?}");
        }
    }

    /// Closes the WebSocket politely.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

pub fn ok() -> ResponseBody {
    ResponseBody::Ok
}

/// The error code of a response, if it is an error.
pub fn code(body: &ResponseBody) -> Option<ErrorCode> {
    match body {
        ResponseBody::Error { code, .. } => Some(*code),
        _ => None,
    }
}

pub fn closed(code: ErrorCode) -> Closed {
    Closed { goodbye: code, close_code: Some(code.close_code()) }
}

/// Connects and reads the first frame, then (if it was a goodbye) the close code.
pub async fn refused(addr: SocketAddr) -> (ServerMessage, Option<u16>) {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/signal")).await.expect("connect");
    let mut first = None;
    loop {
        match tokio::time::timeout(STEP, ws.next()).await.expect("timed out") {
            Some(Ok(Message::Binary(b))) => {
                let m = decode_server(b, 1 << 20).expect("valid frame");
                if !matches!(m, ServerMessage::Goodbye { .. }) {
                    return (m, None);
                }
                first = Some(m);
            }
            Some(Ok(Message::Close(f))) => {
                return (first.expect("a goodbye before the close"), f.map(|f| u16::from(f.code)));
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("socket error {e}"),
            None => panic!("closed without a close frame"),
        }
    }
}

/// A minimal HTTP/1.1 GET; returns the whole response.
pub async fn http_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = String::new();
    tokio::time::timeout(STEP, s.read_to_string(&mut out)).await.expect("timeout").expect("read");
    out
}

/// A WebSocket client over a plain TCP socket where the test controls every byte.
pub struct Raw {
    pub tcp: TcpStream,
    buf: Vec<u8>,
}

/// One server frame read by [`Raw::frame`].
#[derive(Debug, PartialEq, Eq)]
pub struct RawFrame {
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl Raw {
    /// Connects and completes the opening handshake (the challenge frame is left unread).
    pub async fn connect(addr: SocketAddr) -> Raw {
        use tokio::io::AsyncWriteExt;
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        let req = format!(
            "GET /signal HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        tcp.write_all(req.as_bytes()).await.expect("write");
        let mut raw = Raw { tcp, buf: Vec::new() };
        let end = loop {
            if let Some(i) = raw.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            assert!(raw.fill().await > 0, "connection ended during the handshake");
        };
        let head = String::from_utf8_lossy(&raw.buf[..end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        raw.buf.drain(..end);
        raw
    }

    async fn fill(&mut self) -> usize {
        use tokio::io::AsyncReadExt;
        let mut chunk = [0u8; 16 * 1024];
        let n = tokio::time::timeout(STEP, self.tcp.read(&mut chunk))
            .await
            .expect("timed out reading")
            .unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }

    /// Sends one masked frame.
    pub async fn send(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        use tokio::io::AsyncWriteExt;
        let key = [0x12, 0x34, 0x56, 0x78];
        let mut out = Vec::with_capacity(14 + payload.len());
        signal_mesh_ws::encode_masked_header(&mut out, opcode, payload.len(), key);
        if !fin {
            out[0] &= 0x7f;
        }
        let body = out.len();
        out.extend_from_slice(payload);
        signal_mesh_ws::unmask(&mut out[body..], key);
        self.tcp.write_all(&out).await.expect("write frame");
    }

    /// The next server frame, or `None` when the stream ends.
    pub async fn frame(&mut self) -> Option<RawFrame> {
        loop {
            if self.buf.len() >= 2 {
                let (b0, b1) = (self.buf[0], self.buf[1]);
                assert_eq!(b1 & 0x80, 0, "server frames are not masked");
                let (len, at) = match b1 & 0x7f {
                    126 if self.buf.len() >= 4 => {
                        (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
                    }
                    127 if self.buf.len() >= 10 => {
                        (u64::from_be_bytes(self.buf[2..10].try_into().unwrap()) as usize, 10)
                    }
                    126 | 127 => (usize::MAX, 0),
                    n => (n as usize, 2),
                };
                if len != usize::MAX && self.buf.len() >= at + len {
                    let payload = self.buf[at..at + len].to_vec();
                    self.buf.drain(..at + len);
                    return Some(RawFrame { opcode: b0 & 0x0f, payload });
                }
            }
            if self.fill().await == 0 {
                return None;
            }
        }
    }

    /// Reads frames until the node's close frame; returns its status code (`None`: no code, or
    /// the stream ended without a close frame).
    pub async fn close_code(&mut self) -> Option<u16> {
        while let Some(f) = self.frame().await {
            if f.opcode == 0x8 {
                return (f.payload.len() >= 2).then(|| u16::from_be_bytes([f.payload[0], f.payload[1]]));
            }
        }
        None
    }

    /// Whether the node closed the TCP connection within `wait` (reads and discards data).
    pub async fn ended_within(&mut self, wait: Duration) -> bool {
        use tokio::io::AsyncReadExt;
        let deadline = tokio::time::Instant::now() + wait;
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match tokio::time::timeout_at(deadline, self.tcp.read(&mut chunk)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => {}
            }
        }
    }
}

/// Whether a plain TCP connection is closed by the node within `wait` (data is discarded).
pub async fn tcp_ended_within(tcp: &mut TcpStream, wait: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let deadline = tokio::time::Instant::now() + wait;
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut chunk)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}
