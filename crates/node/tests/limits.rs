//! Limits, malformed input and abuse: each gets its own code, and other clients are unaffected.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use prost::Message as _;
use signal_mesh_proto::wire::{self, client_frame, request};
use signal_mesh_proto::{ClientMessage, ErrorCode, Event, RequestBody, ResponseBody, encode_client};
use support::{Client, closed, code, config, ok, start, topic};

/// One signal from `a` to `b`, delivered and acknowledged.
async fn flows(a: &mut Client, b: &mut Client, n: u32) {
    let payload = Bytes::from(n.to_be_bytes().to_vec());
    assert_eq!(
        a.request(RequestBody::Signal {
            to: b.peer(),
            payload: payload.clone(),
            ack: signal_mesh_proto::AckMode::Always
        })
        .await,
        ok()
    );
    assert_eq!(b.event().await, Event::Signal { from: a.peer(), payload });
}

fn request_frame(id: u64, kind: Option<request::Kind>) -> Bytes {
    wire::ClientFrame { kind: Some(client_frame::Kind::Request(wire::Request { id, kind })) }
        .encode_to_vec()
        .into()
}

fn response_code(body: &ResponseBody) -> ErrorCode {
    code(body).unwrap_or_else(|| panic!("expected an error, got {body:?}"))
}

#[tokio::test]
async fn malformed_input_gets_typed_errors_while_others_keep_signaling() {
    let node = start(config()).await;
    let addr = node.local_addr();
    let mut a = Client::connect(addr).await;
    let mut b = Client::connect(addr).await;
    let mut bad = Client::connect(addr).await;
    let max_frame = signal_mesh_proto::Limits::DEFAULT_MAX_FRAME_BYTES as usize;

    // Not protobuf at all.
    bad.send_raw(Bytes::from_static(b"\xff\xff\xff\xff")).await;
    assert_eq!(bad.error().await, ErrorCode::BadRequest);
    flows(&mut a, &mut b, 1).await;
    // A truncated frame.
    let full = encode_client(ClientMessage::Request {
        id: 1,
        body: RequestBody::Signal {
            to: bad.peer(),
            payload: Bytes::from_static(b"hello"),
            ack: signal_mesh_proto::AckMode::Always,
        },
    });
    bad.send_raw(full.slice(..full.len() - 3)).await;
    assert_eq!(bad.error().await, ErrorCode::BadRequest);
    flows(&mut a, &mut b, 2).await;
    // Unknown kinds: an empty frame, a field from a future version, a request without a kind.
    bad.send_raw(Bytes::new()).await;
    assert_eq!(bad.error().await, ErrorCode::BadRequest);
    flows(&mut a, &mut b, 3).await;
    bad.send_raw(Bytes::from_static(&[0x78, 0x01])).await;
    assert_eq!(bad.error().await, ErrorCode::BadRequest);
    flows(&mut a, &mut b, 4).await;
    bad.send_raw(request_frame(30, None)).await;
    assert_eq!(response_code(&bad.response(30).await), ErrorCode::BadRequest);
    flows(&mut a, &mut b, 5).await;
    // A text frame.
    bad.send_text("{\"join\": \"room\"}").await;
    assert_eq!(bad.error().await, ErrorCode::BadRequest);
    flows(&mut a, &mut b, 6).await;
    // Invalid peer id and topic lengths, answered on their request ids.
    let short_peer = wire::SendSignal { to: Bytes::from_static(&[1; 31]), payload: Bytes::new(), ack: 0 };
    bad.send_raw(request_frame(31, Some(request::Kind::Signal(short_peer)))).await;
    assert_eq!(response_code(&bad.response(31).await), ErrorCode::BadRequest);
    flows(&mut a, &mut b, 7).await;
    let long_topic = wire::Join { topic: Bytes::from_static(&[1; 33]), announce: true };
    bad.send_raw(request_frame(32, Some(request::Kind::Join(long_topic)))).await;
    assert_eq!(response_code(&bad.response(32).await), ErrorCode::BadRequest);
    flows(&mut a, &mut b, 8).await;
    let no_topic = wire::Lookup { topic: Bytes::new(), limit: 0, cursor: Bytes::new() };
    bad.send_raw(request_frame(33, Some(request::Kind::Lookup(no_topic)))).await;
    assert_eq!(response_code(&bad.response(33).await), ErrorCode::BadRequest);
    flows(&mut a, &mut b, 9).await;
    let bad_cursor =
        wire::Lookup { topic: Bytes::from_static(&[1; 32]), limit: 0, cursor: Bytes::from_static(&[1; 5]) };
    bad.send_raw(request_frame(34, Some(request::Kind::Lookup(bad_cursor)))).await;
    assert_eq!(response_code(&bad.response(34).await), ErrorCode::BadRequest);
    flows(&mut a, &mut b, 10).await;
    // A frame over the size limit, and a payload over its limit.
    bad.send_raw(Bytes::from(vec![0u8; max_frame + 1])).await;
    assert_eq!(bad.error().await, ErrorCode::TooLarge);
    flows(&mut a, &mut b, 11).await;
    let big = Bytes::from(vec![7u8; signal_mesh_proto::Limits::DEFAULT_MAX_PAYLOAD_BYTES as usize + 1]);
    let r = bad
        .request(RequestBody::Signal {
            to: bad.peer(),
            payload: big,
            ack: signal_mesh_proto::AckMode::Always,
        })
        .await;
    assert_eq!(response_code(&r), ErrorCode::TooLarge);
    flows(&mut a, &mut b, 12).await;

    // The connection survived all of it.
    assert_eq!(bad.join(topic("still"), true).await, ok());
    // A frame far over the limit ends the connection with TOO_LARGE.
    bad.send_raw(Bytes::from(vec![0u8; max_frame * 3])).await;
    assert_eq!(bad.closed().await, closed(ErrorCode::TooLarge));

    flows(&mut b, &mut a, 100).await;
}

#[tokio::test]
async fn the_topic_limit_is_limit_exceeded() {
    let mut cfg = config();
    cfg.max_topics_per_peer = 2;
    let node = start(cfg).await;
    let mut c = Client::connect(node.local_addr()).await;
    assert_eq!(c.welcome.as_ref().unwrap().limits.max_topics_per_peer, 2);
    assert_eq!(c.join(topic("1"), true).await, ok());
    assert_eq!(c.join(topic("2"), false).await, ok());
    assert_eq!(response_code(&c.join(topic("3"), true).await), ErrorCode::LimitExceeded);
    // Re-joining a joined topic is not a new topic; leaving makes room.
    assert_eq!(c.join(topic("2"), true).await, ok());
    assert_eq!(c.leave(topic("1")).await, ok());
    assert_eq!(c.join(topic("3"), true).await, ok());
}

#[tokio::test]
async fn the_token_bucket_is_rate_limited_and_the_connection_stays() {
    let mut cfg = config();
    cfg.requests_per_second = 1;
    cfg.request_burst = 3;
    let node = start(cfg).await;
    let mut c = Client::connect(node.local_addr()).await;
    let mut other = Client::connect(node.local_addr()).await;
    for _ in 0..3 {
        assert_eq!(c.join(topic("r"), true).await, ok());
    }
    assert_eq!(response_code(&c.join(topic("r"), true).await), ErrorCode::RateLimited);
    // Other connections have their own buckets.
    assert_eq!(other.join(topic("r"), true).await, ok());
    // Tokens come back with time.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(c.join(topic("r"), true).await, ok());
}

#[tokio::test]
async fn sustained_errors_close_with_policy_violation() {
    let mut cfg = config();
    cfg.max_consecutive_errors = 3;
    let node = start(cfg).await;
    let mut c = Client::connect(node.local_addr()).await;
    for _ in 0..3 {
        c.send_raw(Bytes::from_static(b"\x00garbage")).await;
        assert_eq!(c.error().await, ErrorCode::BadRequest);
    }
    c.send_raw(Bytes::from_static(b"\x00garbage")).await;
    assert_eq!(c.error().await, ErrorCode::BadRequest);
    assert_eq!(c.closed().await, closed(ErrorCode::PolicyViolation));
}

#[tokio::test]
async fn a_client_that_does_not_read_its_own_replies_is_disconnected_as_slow_consumer() {
    let mut cfg = config();
    cfg.outbound_queue_frames = 64;
    cfg.requests_per_second = 100_000;
    cfg.request_burst = 100_000;
    let node = start(cfg).await;
    let addr = node.local_addr();
    let t = topic("slow");
    let mut sender = Client::connect(addr).await;
    let mut slow = Client::connect(addr).await;
    let mut watcher = Client::connect(addr).await;
    assert_eq!(watcher.join(t, true).await, ok());
    assert_eq!(slow.join(t, true).await, ok());
    let slow_peer = slow.peer();
    let payload = Bytes::from(vec![1u8; 30_000]);
    // `slow` reads nothing from here on. Signals to it fill its socket, then its queue up to the
    // signal watermark: the sender gets PEER_BUSY, which does not disconnect anyone.
    let mut busy = false;
    for _ in 0..2000 {
        let id = sender.take_id();
        let body = RequestBody::Signal {
            to: slow_peer,
            payload: payload.clone(),
            ack: signal_mesh_proto::AckMode::Always,
        };
        sender.send(ClientMessage::Request { id, body }).await;
        match sender.response(id).await {
            ResponseBody::Ok => {}
            r => {
                assert_eq!(response_code(&r), ErrorCode::PeerBusy);
                busy = true;
                break;
            }
        }
    }
    assert!(busy, "signals to a client that does not read were never refused");
    // Its own replies are another matter: when they overflow its queue, it is disconnected.
    for _ in 0..200 {
        let id = slow.take_id();
        slow.feed(ClientMessage::Request {
            id,
            body: RequestBody::Join { topic: topic("x"), announce: false },
        })
        .await;
    }
    slow.flush().await;
    assert_eq!(watcher.event().await, Event::PeerJoined { topic: t, peer: slow_peer });
    assert_eq!(watcher.event().await, Event::PeerLeft { topic: t, peer: slow_peer });
    let r = sender.signal(slow_peer, b"gone?").await;
    assert_eq!(code(&r), Some(ErrorCode::PeerNotFound));
    // The sender and the watcher are fine.
    assert_eq!(sender.signal(watcher.peer(), b"ok?").await, ok());
    assert_eq!(
        watcher.event().await,
        Event::Signal { from: sender.peer(), payload: Bytes::from_static(b"ok?") }
    );
    // The slow client finds its stream ended; if the goodbye made it, it says SLOW_CONSUMER.
    let goodbye = slow.drain_to_end().await;
    assert!(matches!(goodbye, None | Some(ErrorCode::SlowConsumer)), "{goodbye:?}");
}
