//! Hostile clients (issue 9): each test is one attack that worked against an earlier node, made
//! with a client whose every byte is under the test's control, and the property that now holds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use signal_mesh_proto::message::Authenticate;
use signal_mesh_proto::{
    ClientMessage, ErrorCode, Event, PROTOCOL_VERSION, PeerId, RequestBody, ResponseBody,
};
use support::{Client, Raw, closed, code, config, ok, start};

const PAYLOAD: usize = 32 * 1024;

/// Sends `to` up to `max` signals of 32 KB, pipelined four at a time, until one is not `Ok`;
/// returns how many were `Ok` and the first error code.
async fn flood(sender: &mut Client, to: PeerId, max: usize) -> (usize, Option<ErrorCode>) {
    let payload = Bytes::from(vec![7u8; PAYLOAD]);
    let mut delivered = 0;
    while delivered < max {
        let mut ids = Vec::new();
        for _ in 0..4 {
            let id = sender.take_id();
            ids.push(id);
            let body =
                RequestBody::Signal { to, payload: payload.clone(), ack: signal_mesh_proto::AckMode::Always };
            sender.feed(ClientMessage::Request { id, body }).await;
        }
        sender.flush().await;
        let mut first_error = None;
        for id in ids {
            match sender.response(id).await {
                ResponseBody::Ok => delivered += 1,
                r => first_error = first_error.or(code(&r)),
            }
        }
        if first_error.is_some() {
            return (delivered, first_error);
        }
    }
    (delivered, None)
}

fn flood_config() -> signal_mesh_node::Config {
    let mut cfg = config();
    cfg.requests_per_second = 1_000_000;
    cfg.request_burst = 1_000_000;
    cfg
}

/// Defect 1: a client that authenticates and then never reads used to keep its connection (and
/// everything queued for it) forever, because the loop writing its queue did not watch the idle
/// deadline. Now one place decides what a connection waits for, and the deadline is always in it.
#[tokio::test]
async fn a_client_that_never_reads_is_closed_by_the_idle_timeout_with_frames_queued() {
    let mut cfg = flood_config();
    cfg.idle_timeout_ms = 1500;
    let node = start(cfg).await;
    let addr = node.local_addr();
    // Authenticated, then never read again (and silent): its socket buffers fill up.
    let reader = Client::connect(addr).await;
    let victim = reader.peer();
    let mut sender = Client::connect(addr).await;
    // 600 × 32 KB is more than the loopback socket buffers hold and less than the frame queue.
    let (delivered, _) = flood(&mut sender, victim, 600).await;
    assert!(delivered > 0);
    sender.close().await;
    // Three idle timeouts later the reader is gone: a signal to it finds nobody.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let mut probe = Client::connect(addr).await;
    let r = probe.signal(victim, b"anyone there?").await;
    assert_eq!(code(&r), Some(ErrorCode::PeerNotFound), "the non-reading client is still connected: {r:?}");
    drop(reader);
}

/// Defect 4: a stranger that shares no topic with a peer could get it disconnected by filling
/// its queue with signals (`SLOW_CONSUMER`). Now the stranger gets `PEER_BUSY` and the receiver
/// stays connected, with its queue for its own traffic.
#[tokio::test]
async fn a_stranger_flooding_signals_gets_peer_busy_and_the_receiver_stays() {
    let mut cfg = flood_config();
    cfg.outbound_queue_frames = 64;
    let node = start(cfg).await;
    let addr = node.local_addr();
    let mut victim = Client::connect(addr).await;
    let mut friend = Client::connect(addr).await;
    let mut stranger = Client::connect(addr).await;
    // The victim does not read while the stranger floods it.
    let (delivered, first_error) = flood(&mut stranger, victim.peer(), 2000).await;
    assert_eq!(first_error, Some(ErrorCode::PeerBusy), "after {delivered} signals");
    // A friend's signal still reaches the victim once it reads again.
    assert_eq!(friend.signal(victim.peer(), b"hello").await, ok());
    let from_friend = friend.peer();
    let got = victim
        .wait_for(|m| match m {
            signal_mesh_proto::ServerMessage::Event(Event::Signal { from, payload })
                if *from == from_friend =>
            {
                Some(payload.clone())
            }
            _ => None,
        })
        .await;
    assert_eq!(got, Bytes::from_static(b"hello"));
    assert_eq!(victim.signal(friend.peer(), b"still here").await, ok());
}

/// Defect 5: the small-order public key `01 00…00` (the identity point) with the signature
/// `R = 01 00…00, s = 0` verified under non-strict Ed25519, for every challenge.
#[tokio::test]
async fn a_small_order_peer_id_cannot_authenticate_without_a_private_key() {
    let node = start(config()).await;
    let mut identity_point = [0u8; 32];
    identity_point[0] = 1;
    let mut signature = [0u8; 64];
    signature[0] = 1;
    let mut c = Client::connect_raw(node.local_addr(), support::identity()).await;
    let auth = Authenticate {
        protocol_version: PROTOCOL_VERSION,
        peer_id: PeerId::from_array(identity_point),
        nonce: c.challenge.nonce,
        signature,
    };
    c.authenticate(auth).await;
    assert_eq!(c.closed().await, closed(ErrorCode::AuthFailed));
}

/// Defect 6: close codes a client may not send (RFC 6455 §7.4) are answered with 1002 instead of
/// being echoed; an invalid UTF-8 reason with 1007; valid codes are echoed.
#[tokio::test]
async fn invalid_close_codes_are_answered_with_a_protocol_error() {
    let node = start(config()).await;
    let addr = node.local_addr();
    for bad in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
        let mut raw = Raw::connect(addr).await;
        raw.send(true, 0x8, &bad.to_be_bytes()).await;
        assert_eq!(raw.close_code().await, Some(1002), "close code {bad}");
    }
    let mut raw = Raw::connect(addr).await;
    let mut payload = 1000u16.to_be_bytes().to_vec();
    payload.extend_from_slice(b"bye \xff\xfe");
    raw.send(true, 0x8, &payload).await;
    assert_eq!(raw.close_code().await, Some(1007), "invalid UTF-8 reason");
    for good in [1000u16, 1001, 1003, 1011, 3000, 4999] {
        let mut raw = Raw::connect(addr).await;
        raw.send(true, 0x8, &good.to_be_bytes()).await;
        assert_eq!(raw.close_code().await, Some(good), "close code {good}");
    }
    // No code at all is answered with no code.
    let mut raw = Raw::connect(addr).await;
    raw.send(true, 0x8, &[]).await;
    assert_eq!(raw.close_code().await, None);
}

/// Defect 2: nothing timed out before the WebSocket upgrade. Now a silent connection and a
/// header trickled byte by byte are both closed once the header timeout has passed.
#[tokio::test]
async fn silent_and_trickling_connections_are_closed_by_the_header_timeout() {
    use tokio::io::AsyncWriteExt;
    let mut cfg = config();
    cfg.header_timeout_ms = 700;
    let node = start(cfg).await;
    let addr = node.local_addr();
    let started = std::time::Instant::now();
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut trickle = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = b"GET /signal HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n";
    let writer = tokio::spawn(async move {
        // One byte every 50 ms: the header is never finished, but bytes keep coming.
        for b in request.iter().cycle().take(400) {
            if trickle.write_all(&[*b]).await.is_err() {
                return (trickle, true);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (trickle, false)
    });
    assert!(support::tcp_ended_within(&mut silent, Duration::from_secs(10)).await, "silent connection kept");
    let (mut trickle, write_failed) = writer.await.unwrap();
    assert!(
        write_failed || support::tcp_ended_within(&mut trickle, Duration::from_secs(1)).await,
        "trickling connection kept"
    );
    // Well before the 20 s the trickle would have taken.
    assert!(started.elapsed() < Duration::from_secs(15), "{:?}", started.elapsed());
    // The node still serves.
    let health = support::http_get(addr, "/health").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
}

/// Defect 2: connections that have not finished their request are bounded, and the bound is
/// taken before the work: at the limit, the next connection is not served until one finishes.
#[tokio::test]
async fn connections_without_a_request_are_bounded_before_any_work() {
    let mut cfg = config();
    cfg.max_pending_connections = 4;
    cfg.header_timeout_ms = 60_000;
    let node = start(cfg).await;
    let addr = node.local_addr();
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    // Give the node time to accept all four.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let blocked = tokio::time::timeout(Duration::from_millis(600), support::http_get(addr, "/health")).await;
    assert!(blocked.is_err(), "a fifth connection was served beyond the pending limit: {blocked:?}");
    // One finishes: the next is served. Upgraded WebSockets do not count as pending.
    drop(silent.pop());
    let health = support::http_get(addr, "/health").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let mut clients = Vec::new();
    for _ in 0..6 {
        clients.push(Client::connect(addr).await);
    }
    drop(silent);
    for c in clients {
        c.close().await;
    }
}

/// Defect 2: `--max-connections-per-ip`: more connections from one address are closed at once,
/// and a freed slot is usable again.
#[tokio::test]
async fn connections_per_ip_are_limited() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut cfg = config();
    cfg.max_connections_per_ip = 3;
    let node = start(cfg).await;
    let addr = node.local_addr();
    let a = Client::connect(addr).await;
    let _b = Client::connect(addr).await;
    let _c = Client::connect(addr).await;
    let mut over = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = over.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let mut out = Vec::new();
    let read = tokio::time::timeout(support::STEP, over.read_to_end(&mut out)).await.expect("not closed");
    assert!(
        read.is_err() || out.is_empty(),
        "served over the per-IP limit: {:?}",
        String::from_utf8_lossy(&out)
    );
    a.close().await;
    let mut served = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let _ = tcp.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        let mut out = Vec::new();
        let _ = tokio::time::timeout(support::STEP, tcp.read_to_end(&mut out)).await;
        if out.starts_with(b"HTTP/1.1 200") {
            served = true;
            break;
        }
    }
    assert!(served, "a slot freed by a closed connection is reused");
}

/// Defect 3: a SIGTERM used to wait for a client holding a half-sent request header, forever,
/// and the listener closed at once, so the documented 503 was never seen. Now `/health` answers
/// 503 during the shutdown and the shutdown ends within its grace period.
#[tokio::test]
async fn shutdown_is_bounded_by_its_grace_and_health_says_503_meanwhile() {
    use tokio::io::AsyncWriteExt;
    let mut cfg = config();
    cfg.shutdown_grace_ms = 1500;
    cfg.header_timeout_ms = 60_000;
    let node = start(cfg).await;
    let addr = node.local_addr();
    let mut ws = Client::connect(addr).await;
    let mut half = tokio::net::TcpStream::connect(addr).await.unwrap();
    half.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    let stopping = tokio::spawn(node.shutdown());
    assert_eq!(ws.closed().await, closed(ErrorCode::ShuttingDown));
    let health = support::http_get(addr, "/health").await;
    assert!(health.starts_with("HTTP/1.1 503"), "{health}");
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("shutdown did not finish within 10 s")
        .unwrap()
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "ended before the half-open request: {:?}",
        started.elapsed()
    );
    assert!(support::tcp_ended_within(&mut half, Duration::from_secs(1)).await);
}
