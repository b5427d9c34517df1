//! Authentication: success and every failure, over real WebSockets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use signal_mesh_proto::auth::signed_message;
use signal_mesh_proto::{ErrorCode, Limits, PROTOCOL_VERSION, RequestBody, ServerMessage};
use support::{Client, closed, code, config, identity, start, topic};

#[tokio::test]
async fn a_signed_challenge_is_welcomed_with_the_limits() {
    let node = start(config()).await;
    let mut c = Client::connect_raw(node.local_addr(), identity()).await;
    assert_eq!(c.challenge.protocol_versions, vec![PROTOCOL_VERSION]);
    assert_eq!(c.challenge.node_id, node.node_id());
    let auth = c.identity.authenticate(&c.challenge);
    c.authenticate(auth).await;
    match c.recv().await {
        ServerMessage::Welcome(w) => {
            assert_eq!(w.peer_id, c.peer());
            assert_eq!(w.protocol_version, PROTOCOL_VERSION);
            assert_eq!(w.limits, Limits::default());
        }
        other => panic!("{other:?}"),
    }
    // Nonces are fresh per connection.
    let other = Client::connect_raw(node.local_addr(), identity()).await;
    assert_ne!(other.challenge.nonce, c.challenge.nonce);
    c.close().await;
    other.close().await;
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_bad_signature_is_auth_failed_and_closed() {
    let node = start(config()).await;
    let mut c = Client::connect_raw(node.local_addr(), identity()).await;
    let mut auth = c.identity.authenticate(&c.challenge);
    auth.signature[10] ^= 0x40;
    c.authenticate(auth).await;
    assert_eq!(c.closed().await, closed(ErrorCode::AuthFailed));
}

#[tokio::test]
async fn a_signature_by_another_key_is_auth_failed() {
    let node = start(config()).await;
    let mut c = Client::connect_raw(node.local_addr(), identity()).await;
    let mut auth = c.identity.authenticate(&c.challenge);
    auth.signature = identity().sign(&signed_message(&c.challenge.node_id, &c.challenge.nonce));
    c.authenticate(auth).await;
    assert_eq!(c.closed().await, closed(ErrorCode::AuthFailed));
}

#[tokio::test]
async fn a_nonce_from_another_connection_is_auth_failed() {
    let node = start(config()).await;
    let mut a = Client::connect_raw(node.local_addr(), identity()).await;
    let b = Client::connect_raw(node.local_addr(), identity()).await;
    // A valid signature, but over the other connection's challenge.
    let auth = a.identity.authenticate(&b.challenge);
    a.authenticate(auth).await;
    assert_eq!(a.closed().await, closed(ErrorCode::AuthFailed));
}

#[tokio::test]
async fn an_unsupported_version_is_refused_not_hung() {
    let node = start(config()).await;
    let mut c = Client::connect_raw(node.local_addr(), identity()).await;
    let mut auth = c.identity.authenticate(&c.challenge);
    auth.protocol_version = 99;
    c.authenticate(auth).await;
    assert_eq!(c.closed().await, closed(ErrorCode::UnsupportedVersion));
}

#[tokio::test]
async fn requests_before_auth_are_not_authenticated_and_the_connection_stays() {
    let node = start(config()).await;
    let mut c = Client::connect_raw(node.local_addr(), identity()).await;
    let r = c.request(RequestBody::Join { topic: topic("t"), announce: true }).await;
    assert_eq!(code(&r), Some(ErrorCode::NotAuthenticated));
    let r = c
        .request(RequestBody::Signal {
            to: c.peer(),
            payload: bytes::Bytes::new(),
            ack: signal_mesh_proto::AckMode::Always,
        })
        .await;
    assert_eq!(code(&r), Some(ErrorCode::NotAuthenticated));
    // Authentication still works afterwards.
    let auth = c.identity.authenticate(&c.challenge);
    c.authenticate(auth).await;
    assert!(matches!(c.recv().await, ServerMessage::Welcome(_)));
    assert_eq!(c.join(topic("t"), true).await, support::ok());
}

#[tokio::test]
async fn authentication_must_complete_within_the_timeout() {
    let mut cfg = config();
    cfg.auth_timeout_ms = 1000;
    let node = start(cfg).await;
    let mut c = Client::connect_raw(node.local_addr(), identity()).await;
    // Pings keep the connection active but do not extend the authentication deadline.
    c.send(signal_mesh_proto::ClientMessage::Ping(1)).await;
    assert_eq!(c.recv().await, ServerMessage::Pong(1));
    assert_eq!(c.closed().await, closed(ErrorCode::AuthFailed));
}

#[tokio::test]
async fn connections_over_the_limit_are_refused_with_overloaded() {
    let mut cfg = config();
    cfg.max_connections = 2;
    let node = start(cfg).await;
    let _a = Client::connect(node.local_addr()).await;
    let b = Client::connect(node.local_addr()).await;
    let (first, close_code) = support::refused(node.local_addr()).await;
    assert!(matches!(first, ServerMessage::Goodbye { code: ErrorCode::Overloaded, .. }), "{first:?}");
    assert_eq!(close_code, Some(ErrorCode::Overloaded.close_code()));
    // A freed slot is usable again.
    b.close().await;
    let mut ok = false;
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        if matches!(support::refused(node.local_addr()).await.0, ServerMessage::Challenge(_)) {
            ok = true;
            break;
        }
    }
    assert!(ok, "a slot freed by a closed connection is reused");
}
