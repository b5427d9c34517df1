//! Topics, lookup, presence, signal relay, session replacement, cleanup, shutdown and scale.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use signal_mesh_proto::{ClientMessage, ErrorCode, Event, Limits, PeerId, RequestBody, ResponseBody};
use support::{Client, closed, code, config, ok, start, topic};

/// Walks every lookup page of `limit` and returns the peers in order.
async fn lookup_all(c: &mut Client, t: signal_mesh_proto::TopicId, limit: u32) -> Vec<PeerId> {
    let mut all = Vec::new();
    let mut cursor = None;
    for _ in 0..1000 {
        match c.lookup(t, limit, cursor).await {
            ResponseBody::Lookup { peers, next_cursor } => {
                assert!(limit == 0 || peers.len() <= limit as usize);
                all.extend(peers);
                match next_cursor {
                    Some(n) => cursor = Some(n),
                    None => return all,
                }
            }
            other => panic!("{other:?}"),
        }
    }
    panic!("lookup did not end");
}

#[tokio::test]
async fn lookup_pages_walk_every_announced_peer_exactly_once() {
    let mut cfg = config();
    cfg.max_lookup_page = 8;
    let node = start(cfg).await;
    let t = topic("paging");
    let mut clients = Vec::new();
    for _ in 0..20 {
        let mut c = Client::connect(node.local_addr()).await;
        assert_eq!(c.join(t, true).await, ok());
        clients.push(c);
    }
    let mut observer = Client::connect(node.local_addr()).await;
    assert_eq!(observer.join(t, false).await, ok());

    let mut expected: Vec<PeerId> = clients.iter().map(Client::peer).collect();
    expected.sort();
    for limit in [1, 3, 7, 8] {
        assert_eq!(lookup_all(&mut observer, t, limit).await, expected, "limit {limit}");
    }
    // 0 means the node's maximum page.
    match observer.lookup(t, 0, None).await {
        ResponseBody::Lookup { peers, next_cursor } => {
            assert_eq!(peers, expected[..8]);
            assert_eq!(next_cursor, Some(expected[7]));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(code(&observer.lookup(t, 9, None).await), Some(ErrorCode::LimitExceeded));
    // Unknown topics are empty; lookup does not need a join.
    let mut stranger = Client::connect(node.local_addr()).await;
    assert_eq!(
        stranger.lookup(topic("nobody"), 0, None).await,
        ResponseBody::Lookup { peers: vec![], next_cursor: None }
    );
    assert_eq!(lookup_all(&mut stranger, t, 5).await, expected);
}

#[tokio::test]
async fn presence_events_reach_members_and_silent_observers_stay_invisible() {
    let node = start(config()).await;
    let addr = node.local_addr();
    let t = topic("presence");
    let mut a = Client::connect(addr).await;
    let mut silent = Client::connect(addr).await;
    let mut b = Client::connect(addr).await;
    assert_eq!(silent.join(t, false).await, ok());
    assert_eq!(a.join(t, true).await, ok());
    assert_eq!(silent.event().await, Event::PeerJoined { topic: t, peer: a.peer() });
    assert_eq!(b.join(t, true).await, ok());
    assert_eq!(a.event().await, Event::PeerJoined { topic: t, peer: b.peer() });
    assert_eq!(silent.event().await, Event::PeerJoined { topic: t, peer: b.peer() });
    // Nobody hears about the silent observer, and a joiner hears nothing about itself.
    a.assert_silent(Duration::from_millis(100)).await;
    b.assert_silent(Duration::from_millis(10)).await;
    match b.lookup(t, 0, None).await {
        ResponseBody::Lookup { peers, .. } => assert!(!peers.contains(&silent.peer()) && peers.len() == 2),
        other => panic!("{other:?}"),
    }
    // Joining again is idempotent; switching announce on or off is seen.
    assert_eq!(b.join(t, true).await, ok());
    a.assert_silent(Duration::from_millis(50)).await;
    assert_eq!(silent.join(t, true).await, ok());
    assert_eq!(a.event().await, Event::PeerJoined { topic: t, peer: silent.peer() });
    assert_eq!(silent.join(t, false).await, ok());
    assert_eq!(a.event().await, Event::PeerLeft { topic: t, peer: silent.peer() });
    assert_eq!(b.event().await, Event::PeerJoined { topic: t, peer: silent.peer() });
    assert_eq!(b.event().await, Event::PeerLeft { topic: t, peer: silent.peer() });
    // Leave.
    assert_eq!(b.leave(t).await, ok());
    assert_eq!(a.event().await, Event::PeerLeft { topic: t, peer: b.peer() });
    assert_eq!(silent.event().await, Event::PeerLeft { topic: t, peer: b.peer() });
    assert_eq!(code(&b.leave(t).await), Some(ErrorCode::NotJoined));
    // A peer that left gets no more events.
    assert_eq!(a.leave(t).await, ok());
    assert_eq!(silent.event().await, Event::PeerLeft { topic: t, peer: a.peer() });
    b.assert_silent(Duration::from_millis(50)).await;
}

#[tokio::test]
async fn a_thousand_signals_arrive_in_order_and_each_gets_one_ok() {
    let mut cfg = config();
    cfg.requests_per_second = 100_000;
    cfg.request_burst = 100_000;
    // All thousand may be queued for `b` before it reads: signals may fill half of the queue
    // (past that the sender gets PEER_BUSY; see hostile.rs).
    cfg.outbound_queue_frames = 2048;
    let node = start(cfg).await;
    let mut a = Client::connect(node.local_addr()).await;
    let mut b = Client::connect(node.local_addr()).await;
    let mut ids = Vec::new();
    for n in 0u32..1000 {
        let id = a.take_id();
        ids.push(id);
        a.feed(ClientMessage::Request {
            id,
            body: RequestBody::Signal {
                to: b.peer(),
                payload: Bytes::from(n.to_be_bytes().to_vec()),
                ack: signal_mesh_proto::AckMode::Always,
            },
        })
        .await;
        if n % 100 == 99 {
            a.flush().await;
        }
    }
    for n in 0u32..1000 {
        assert_eq!(
            b.event().await,
            Event::Signal { from: a.peer(), payload: Bytes::from(n.to_be_bytes().to_vec()) }
        );
    }
    for id in ids {
        assert_eq!(a.response(id).await, ok());
    }
    a.assert_silent(Duration::from_millis(50)).await;
}

#[tokio::test]
async fn a_signal_to_an_unknown_peer_is_peer_not_found() {
    let node = start(config()).await;
    let mut a = Client::connect(node.local_addr()).await;
    let r = a.signal(PeerId::from_array([7; 32]), b"offer").await;
    assert_eq!(code(&r), Some(ErrorCode::PeerNotFound));
    // A peer may signal itself.
    assert_eq!(a.signal(a.peer(), b"me").await, ok());
    assert_eq!(a.event().await, Event::Signal { from: a.peer(), payload: Bytes::from_static(b"me") });
}

#[tokio::test]
async fn a_second_connection_replaces_the_first_without_presence_churn() {
    let node = start(config()).await;
    let addr = node.local_addr();
    let t = topic("replace");
    let mut old = Client::connect(addr).await;
    let mut other = Client::connect(addr).await;
    assert_eq!(old.join(t, true).await, ok());
    assert_eq!(other.join(t, true).await, ok());
    assert_eq!(old.event().await, Event::PeerJoined { topic: t, peer: other.peer() });

    let mut new = Client::connect_as(addr, old.identity.clone()).await;
    assert_eq!(old.closed().await, closed(ErrorCode::SessionReplaced));
    // The membership moved: no PeerLeft/PeerJoined for the swap, lookup still lists the peer.
    other.assert_silent(Duration::from_millis(200)).await;
    match other.lookup(t, 0, None).await {
        ResponseBody::Lookup { peers, .. } => assert!(peers.contains(&new.peer())),
        r => panic!("{r:?}"),
    }
    // Signals go to the new connection; re-joining is a no-op; events reach it.
    assert_eq!(other.signal(new.peer(), b"hi").await, ok());
    assert_eq!(new.event().await, Event::Signal { from: other.peer(), payload: Bytes::from_static(b"hi") });
    assert_eq!(new.join(t, true).await, ok());
    other.assert_silent(Duration::from_millis(50)).await;
    let other_peer = other.peer();
    other.close().await;
    assert_eq!(new.event().await, Event::PeerLeft { topic: t, peer: other_peer });
}

#[tokio::test]
async fn a_disconnect_leaves_every_topic() {
    let node = start(config()).await;
    let addr = node.local_addr();
    let (t1, t2) = (topic("one"), topic("two"));
    let mut gone = Client::connect(addr).await;
    let mut stays = Client::connect(addr).await;
    for t in [t1, t2] {
        assert_eq!(stays.join(t, true).await, ok());
        assert_eq!(gone.join(t, true).await, ok());
    }
    let gone_peer = gone.peer();
    gone.close().await;
    let mut left = HashSet::new();
    while left.len() < 2 {
        match stays.event().await {
            Event::PeerLeft { topic, peer } if peer == gone_peer => assert!(left.insert(topic)),
            Event::PeerJoined { .. } => {}
            e => panic!("{e:?}"),
        };
    }
    assert_eq!(left, HashSet::from([t1, t2]));
    assert_eq!(code(&stays.signal(gone_peer, b"x").await), Some(ErrorCode::PeerNotFound));
    assert_eq!(
        stays.lookup(t1, 0, None).await,
        ResponseBody::Lookup { peers: vec![stays.peer()], next_cursor: None }
    );
}

#[tokio::test]
async fn an_idle_connection_is_closed_and_pings_keep_one_alive() {
    let mut cfg = config();
    cfg.idle_timeout_ms = 1000;
    let node = start(cfg).await;
    let addr = node.local_addr();
    let t = topic("idle");
    let mut idle = Client::connect(addr).await;
    let mut alive = Client::connect(addr).await;
    assert_eq!(idle.join(t, true).await, ok());
    assert_eq!(alive.join(t, true).await, ok());
    let idle_peer = idle.peer();
    // `alive` pings every fifth of the timeout (margin for a loaded machine); it must see `idle`
    // leave and stay connected.
    let pinger = tokio::spawn(async move {
        let mut n = 0;
        loop {
            n += 1;
            alive.send(ClientMessage::Ping(n)).await;
            let left = tokio::time::timeout(Duration::from_millis(200), alive.event()).await;
            if let Ok(Event::PeerLeft { peer, .. }) = left {
                assert_eq!(peer, idle_peer);
                // Still alive well after the idle timeout.
                for _ in 0..6 {
                    n += 1;
                    alive.send(ClientMessage::Ping(n)).await;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                assert_eq!(alive.signal(alive.peer(), b"still here").await, ok());
                return;
            }
            assert!(n < 100, "no PeerLeft for the idle peer");
        }
    });
    assert_eq!(idle.closed().await, closed(ErrorCode::IdleTimeout));
    pinger.await.unwrap();
}

#[tokio::test]
async fn graceful_shutdown_says_goodbye() {
    let node = start(config()).await;
    let mut a = Client::connect(node.local_addr()).await;
    let mut b = Client::connect_raw(node.local_addr(), support::identity()).await;
    let stopping = tokio::spawn(node.shutdown());
    assert_eq!(a.closed().await, closed(ErrorCode::ShuttingDown));
    assert_eq!(b.closed().await, closed(ErrorCode::ShuttingDown));
    stopping.await.unwrap().unwrap();
}

#[tokio::test]
async fn health_is_200_while_serving() {
    let node = start(config()).await;
    let resp = support::http_get(node.local_addr(), "/health").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_discover_each_other_and_exchange_signals() {
    const N: usize = 200;
    let node = start(config().with_limits(Limits { max_connections: 1000, ..Limits::default() })).await;
    let addr = node.local_addr();
    let t = topic("crowd");
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(N));
    let mut tasks = Vec::new();
    for _ in 0..N {
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(addr).await;
            assert_eq!(c.join(t, true).await, ok());
            barrier.wait().await;
            let peers = lookup_all(&mut c, t, 0).await;
            assert_eq!(peers.len(), N, "every client sees all {N} announced peers");
            let me = c.peer();
            let mut ids = Vec::new();
            for p in peers.iter().filter(|p| **p != me) {
                let id = c.take_id();
                ids.push(id);
                c.feed(ClientMessage::Request {
                    id,
                    body: RequestBody::Signal {
                        to: *p,
                        payload: Bytes::copy_from_slice(me.as_bytes()),
                        ack: signal_mesh_proto::AckMode::Always,
                    },
                })
                .await;
            }
            c.flush().await;
            let mut from = HashSet::new();
            while from.len() < N - 1 {
                match c.event().await {
                    Event::Signal { from: f, payload } => {
                        assert_eq!(payload.as_ref(), f.as_bytes());
                        assert!(from.insert(f), "one signal per sender");
                    }
                    Event::PeerJoined { .. } => {}
                    e => panic!("{e:?}"),
                }
            }
            for id in ids {
                assert_eq!(c.response(id).await, ok());
            }
            // Keep the connection until everybody is done.
            barrier.wait().await;
            from.len()
        }));
    }
    let all = tokio::time::timeout(Duration::from_secs(90), async {
        let mut total = 0;
        for t in tasks {
            total += t.await.unwrap();
        }
        total
    })
    .await
    .expect("200 clients finished in time");
    assert_eq!(all, N * (N - 1));
}

#[tokio::test]
async fn a_static_dir_is_served_at_the_root_next_to_the_endpoints() {
    let dir = std::env::temp_dir().join(format!("signal-mesh-node-static-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("index.html"), "<h1>demo</h1>").unwrap();
    let mut cfg = config();
    cfg.static_dir = Some(dir.clone());
    let node = start(cfg).await;
    let page = support::http_get(node.local_addr(), "/").await;
    assert!(page.starts_with("HTTP/1.1 200") && page.ends_with("<h1>demo</h1>"), "{page}");
    let health = support::http_get(node.local_addr(), "/health").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let missing = support::http_get(node.local_addr(), "/nope.js").await;
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    let mut c = Client::connect(node.local_addr()).await;
    assert_eq!(c.signal(c.peer(), b"x").await, ok());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The next frame, which must be a response.
async fn next_response(c: &mut Client) -> (u64, ResponseBody) {
    match c.recv().await {
        signal_mesh_proto::ServerMessage::Response { id, body } => (id, body),
        other => panic!("expected a response, got {other:?}"),
    }
}

/// A failure-only signal (`AckMode::FailuresOnly`) request with id `id`.
fn quiet(id: u64, to: PeerId, payload: &'static [u8]) -> ClientMessage {
    ClientMessage::Request {
        id,
        body: RequestBody::Signal {
            to,
            payload: Bytes::from_static(payload),
            ack: signal_mesh_proto::AckMode::FailuresOnly,
        },
    }
}

#[tokio::test]
async fn failure_only_signals_are_answered_only_when_they_fail_with_their_ids() {
    let mut cfg = config();
    cfg.requests_per_second = 1;
    cfg.request_burst = 4;
    let node = start(cfg).await;
    let mut a = Client::connect(node.local_addr()).await;
    let mut b = Client::connect(node.local_addr()).await;
    let nobody = support::identity().peer_id();
    // Delivered: no response at all; the target gets both, in order.
    a.feed(quiet(1, b.peer(), b"one")).await;
    a.feed(quiet(2, b.peer(), b"two")).await;
    // Nobody connected: PEER_NOT_FOUND with that request's id.
    a.feed(quiet(3, nobody, b"lost")).await;
    // The default mode, as a barrier: its Ok comes after anything queued for the ones before.
    a.feed(ClientMessage::Request {
        id: 4,
        body: RequestBody::Signal {
            to: b.peer(),
            payload: Bytes::from_static(b"four"),
            ack: signal_mesh_proto::AckMode::Always,
        },
    })
    .await;
    // Past the burst of 4: RATE_LIMITED, still answered with the id.
    a.feed(quiet(5, b.peer(), b"five")).await;
    a.flush().await;
    // Exactly these three frames: no Ack for 1 and 2. (The rate limit is answered by the
    // connection itself, the others by the directory, so their order may differ.)
    let mut got = Vec::new();
    for _ in 0..3 {
        let (id, body) = next_response(&mut a).await;
        got.push((id, code(&body)));
    }
    got.sort_by_key(|(id, _)| *id);
    assert_eq!(got, vec![(3, Some(ErrorCode::PeerNotFound)), (4, None), (5, Some(ErrorCode::RateLimited))]);
    a.assert_silent(Duration::from_millis(300)).await;
    for payload in [&b"one"[..], b"two", b"four"] {
        assert_eq!(b.event().await, Event::Signal { from: a.peer(), payload: Bytes::from_static(payload) });
    }
    b.assert_silent(Duration::from_millis(100)).await;
}
