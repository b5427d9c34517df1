//! Runs the generator's scenarios, small, against a minimal in-test edge server (`--url`), so the
//! generator itself is tested without the real node. The real figures come from the real node
//! (BENCHMARKS.md); this only checks that the generator speaks the protocol and counts right.
// Test code: a panic here is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::process::Command;
use std::sync::{Arc, Mutex};

use bytes::{Buf, Bytes, BytesMut};
use signal_mesh_proto::auth::verify;
use signal_mesh_proto::{
    Challenge, ClientMessage, Event, Limits, NodeId, PeerId, RequestBody, ResponseBody, ServerMessage,
    TopicId, Welcome, decode_client, encode_server,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

type Peers = Arc<Mutex<HashMap<PeerId, mpsc::UnboundedSender<ServerMessage>>>>;
type Topics = Arc<Mutex<HashMap<TopicId, BTreeMap<PeerId, ()>>>>;

fn frame(msg: ServerMessage) -> Vec<u8> {
    let payload = encode_server(msg);
    let mut out = vec![0x82];
    if payload.len() < 126 {
        out.push(payload.len() as u8);
    } else {
        out.push(126);
        out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    out.extend_from_slice(&payload);
    out
}

/// Reads one masked client frame; None on close or EOF.
async fn read_frame(s: &mut tokio::net::tcp::OwnedReadHalf, buf: &mut BytesMut) -> Option<Bytes> {
    loop {
        if buf.len() >= 2 {
            let op = buf[0] & 0x0f;
            let (len, hdr) = match buf[1] & 0x7f {
                126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
                126 => (usize::MAX, 0),
                127 => panic!("no 64-bit frames in this test"),
                n => (n as usize, 2),
            };
            if len != usize::MAX && buf.len() >= hdr + 4 + len {
                let mask = [buf[hdr], buf[hdr + 1], buf[hdr + 2], buf[hdr + 3]];
                let mut f = buf.split_to(hdr + 4 + len);
                f.advance(hdr + 4);
                for (i, b) in f.iter_mut().enumerate() {
                    *b ^= mask[i % 4];
                }
                if op == 0x8 {
                    return None;
                }
                return Some(f.freeze());
            }
        }
        if s.read_buf(buf).await.ok()? == 0 {
            return None;
        }
    }
}

async fn serve(sock: TcpStream, peers: Peers, topics: Topics) {
    let (mut rd, mut wr) = sock.into_split();
    let mut buf = BytesMut::with_capacity(4096);
    let key = loop {
        rd.read_buf(&mut buf).await.unwrap();
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8(buf.split_to(i + 4).to_vec()).unwrap();
            let key =
                head.lines().find_map(|l| l.strip_prefix("Sec-WebSocket-Key: ")).unwrap().trim().to_owned();
            break key;
        }
    };
    use sha1::Digest;
    let mut h = sha1::Sha1::new();
    h.update(key.as_bytes());
    h.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let accept = base64(&h.finalize());
    let resp = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    wr.write_all(resp.as_bytes()).await.unwrap();
    let node_id = NodeId::new(vec![1u8; 32]).unwrap();
    let nonce = [9u8; 32];
    let challenge = Challenge { protocol_versions: vec![1], node_id: node_id.clone(), nonce };
    wr.write_all(&frame(ServerMessage::Challenge(challenge))).await.unwrap();
    let Some(f) = read_frame(&mut rd, &mut buf).await else { return };
    let Ok(ClientMessage::Authenticate(a)) = decode_client(f, 65536) else { panic!("expected auth") };
    verify(&a.peer_id, &node_id, &a.nonce, &a.signature).unwrap();
    let me = a.peer_id;
    let (tx, mut rx) = mpsc::unbounded_channel();
    peers.lock().unwrap().insert(me, tx.clone());
    tx.send(ServerMessage::Welcome(Welcome { protocol_version: 1, peer_id: me, limits: Limits::default() }))
        .unwrap();
    tokio::task::spawn_local(async move {
        while let Some(m) = rx.recv().await {
            if wr.write_all(&frame(m)).await.is_err() {
                return;
            }
        }
    });
    while let Some(f) = read_frame(&mut rd, &mut buf).await {
        let reply = match decode_client(f, 65536).unwrap() {
            ClientMessage::Ping(n) => ServerMessage::Pong(n),
            ClientMessage::Request { id, body } => {
                let body = match body {
                    RequestBody::Join { topic, .. } => {
                        topics.lock().unwrap().entry(topic).or_default().insert(me, ());
                        ResponseBody::Ok
                    }
                    RequestBody::Leave { topic } => {
                        topics.lock().unwrap().entry(topic).or_default().remove(&me);
                        ResponseBody::Ok
                    }
                    RequestBody::Lookup { topic, .. } => ResponseBody::Lookup {
                        peers: topics
                            .lock()
                            .unwrap()
                            .get(&topic)
                            .map(|t| t.keys().copied().collect())
                            .unwrap_or_default(),
                        next_cursor: None,
                    },
                    RequestBody::Signal { to, payload } => {
                        let target = peers.lock().unwrap().get(&to).cloned();
                        match target {
                            Some(t) => {
                                let _ = t.send(ServerMessage::Event(Event::Signal { from: me, payload }));
                                ResponseBody::Ok
                            }
                            None => ResponseBody::Error {
                                code: signal_mesh_proto::ErrorCode::PeerNotFound,
                                message: "no".into(),
                            },
                        }
                    }
                };
                ServerMessage::Response { id, body }
            }
            other => panic!("unexpected {other:?}"),
        };
        if tx.send(reply).is_err() {
            return;
        }
    }
    peers.lock().unwrap().remove(&me);
}

fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in input.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            out.push(if i <= c.len() { T[((n >> (18 - 6 * i)) & 63) as usize] as char } else { '=' });
        }
    }
    out
}

/// Starts the fake server on a thread; returns its URL.
fn fake_node() -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async move {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(l.local_addr().unwrap()).unwrap();
            let peers: Peers = Arc::default();
            let topics: Topics = Arc::default();
            loop {
                let (s, _) = l.accept().await.unwrap();
                tokio::task::spawn_local(serve(s, peers.clone(), topics.clone()));
            }
        });
    });
    format!("ws://{}/signal", rx.recv().unwrap())
}

fn bench(url: &str, args: &[&str]) -> (String, serde_json::Value) {
    let dir = std::env::temp_dir().join(format!("smb-test-{}-{}", std::process::id(), args[0]));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("out.json");
    let out = Command::new(env!("CARGO_BIN_EXE_signal-mesh-bench"))
        .args(["--no-pin", "--max-seconds", "120", "--url", url, "--json"])
        .arg(&json)
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    (stdout, v)
}

#[test]
fn relay_counts_every_echo_and_loses_none() {
    let url = fake_node();
    let (out, v) = bench(&url, &["relay", "--pairs", "20", "--duration-secs", "1", "--warmup-secs", "0"]);
    let s = &v["scenarios"][0]["data"];
    assert_eq!(s["lost"], 0, "{out}");
    assert_eq!(s["out_of_order"], 0, "{out}");
    assert!(s["echoed"].as_u64().unwrap() > 100, "{out}");
    assert_eq!(s["relayed"].as_u64().unwrap(), 2 * s["echoed"].as_u64().unwrap(), "{out}");
    assert!(out.contains("RTT p50"), "{out}");
}

#[test]
fn capacity_holds_every_client_and_looks_up_its_topic() {
    let url = fake_node();
    let (out, v) = bench(&url, &["capacity", "--clients", "200", "--settle-secs", "0"]);
    let s = &v["scenarios"][0]["data"];
    assert_eq!(s["clients"], 200, "{out}");
    assert_eq!(s["alive_after"], 200, "{out}");
    assert_eq!(s["lookup_topic0_peers"], 10, "{out}");
}

#[test]
fn churn_joins_leaves_and_looks_up() {
    let url = fake_node();
    let (out, v) = bench(
        &url,
        &[
            "churn",
            "--topics",
            "5",
            "--churners",
            "20",
            "--lookers",
            "5",
            "--stable-per-topic",
            "2",
            "--duration-secs",
            "1",
        ],
    );
    let s = &v["scenarios"][0]["data"];
    assert_eq!(s["errors"], 0, "{out}");
    assert!(s["joins"].as_u64().unwrap() > 10, "{out}");
    assert!(s["lookups"].as_u64().unwrap() > 10, "{out}");
}
