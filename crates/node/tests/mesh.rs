//! The mesh, in process: several nodes on 127.0.0.1 joined over real libp2p (TCP + Noise +
//! Yamux, QUIC), edge clients over real WebSockets. Every wait is bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use signal_mesh_node::{Config, RunningNode};
use signal_mesh_proto::{
    ClientMessage, ErrorCode, Event, PeerId, RequestBody, ResponseBody, ServerMessage, TopicId,
};
use support::{Client, code, config, ok, start, tcp_addr, topic};
use tracing_subscriber::filter::Targets;

/// Generous bound for anything the mesh must converge to.
const CONVERGE: Duration = Duration::from_secs(20);

fn mesh_config() -> Config {
    let mut c = config();
    c.presence_ttl_ms = 3_000;
    c.heartbeat_ms = 500;
    c
}

/// [`mesh_config`] with a request rate limit no test client reaches (tests that flood signals).
fn unthrottled_mesh_config() -> Config {
    let mut c = mesh_config();
    c.requests_per_second = 100_000;
    c.request_burst = 100_000;
    c
}

/// The tests run one at a time: each starts several nodes, and together they would starve a
/// 2-core machine (gossip that waits too long in a send queue is dropped by design).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Starts `n` nodes, the others bootstrapped from the first, and waits until each is synced.
async fn mesh(n: usize, cfg: impl Fn() -> Config) -> Vec<RunningNode> {
    // SIGNAL_MESH_TEST_LOG=debug (a tracing filter) shows the nodes' logs.
    if let Some(filter) = std::env::var("SIGNAL_MESH_TEST_LOG").ok().and_then(|f| f.parse::<Targets>().ok()) {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        let _ = tracing_subscriber::registry()
            .with(filter)
            .with(tracing_subscriber::fmt::layer().with_test_writer())
            .try_init();
    }
    let first = start(cfg()).await;
    let boot = tcp_addr(&first);
    let mut nodes = vec![first];
    for _ in 1..n {
        nodes.push(start(cfg().with_bootstrap(boot.clone())).await);
    }
    for (i, node) in nodes.iter().enumerate() {
        if tokio::time::timeout(CONVERGE, node.mesh().synced()).await.is_err() {
            let status = node.mesh().status().await.unwrap();
            let views: Vec<_> = status.nodes.iter().map(|n| (n.node, n.synced, n.seq, n.peers)).collect();
            panic!("node {i} of {n} not synced: links {}, knows {views:?}", status.local.links.len());
        }
    }
    nodes
}

async fn lookup_set(c: &mut Client, t: TopicId) -> BTreeSet<PeerId> {
    let mut all = Vec::new();
    let mut cursor = None;
    loop {
        match c.lookup(t, 0, cursor).await {
            ResponseBody::Lookup { peers, next_cursor } => {
                all.extend(peers);
                match next_cursor {
                    Some(n) => cursor = Some(n),
                    None => break,
                }
            }
            other => panic!("{other:?}"),
        }
    }
    let set: BTreeSet<PeerId> = all.iter().copied().collect();
    assert_eq!(set.len(), all.len(), "a peer listed twice: {all:?}");
    set
}

/// Polls `c`'s lookup until it equals `want` (bounded).
async fn await_lookup(c: &mut Client, t: TopicId, want: &BTreeSet<PeerId>) -> Duration {
    let start = Instant::now();
    loop {
        let got = lookup_set(c, t).await;
        if &got == want {
            return start.elapsed();
        }
        assert!(start.elapsed() < CONVERGE, "lookup never converged: got {got:?}, want {want:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn await_event(c: &mut Client, what: impl Fn(&Event) -> bool) {
    tokio::time::timeout(
        CONVERGE,
        c.wait_for(|m| match m {
            ServerMessage::Event(e) if what(e) => Some(()),
            _ => None,
        }),
    )
    .await
    .expect("event arrived in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_presence_events_and_signals() {
    let _serial = SERIAL.lock().await;
    let nodes = mesh(3, mesh_config).await;
    let t = topic("three");
    let mut a = Client::connect(nodes[0].local_addr()).await;
    let mut b = Client::connect(nodes[1].local_addr()).await;
    let mut c = Client::connect(nodes[2].local_addr()).await;
    assert_eq!(a.join(t, true).await, ok());
    assert_eq!(b.join(t, true).await, ok());
    assert_eq!(c.join(t, true).await, ok());
    let all: BTreeSet<PeerId> = [a.peer(), b.peer(), c.peer()].into();
    for client in [&mut a, &mut b, &mut c] {
        await_lookup(client, t, &all).await;
    }
    // a was there first: it hears of b and c joining on other nodes.
    let (bp, cp) = (b.peer(), c.peer());
    await_event(&mut a, |e| matches!(e, Event::PeerJoined { peer, .. } if *peer == bp)).await;
    await_event(&mut a, |e| matches!(e, Event::PeerJoined { peer, .. } if *peer == cp)).await;
    // A signal to a peer on another node is delivered once and acknowledged.
    assert_eq!(a.signal(c.peer(), b"offer").await, ok());
    let ap = a.peer();
    c.wait_for(|m| match m {
        ServerMessage::Event(Event::Signal { from, payload }) if *from == ap && payload == &b"offer"[..] => {
            Some(())
        }
        _ => None,
    })
    .await;
    // A peer on no node is not found, at once.
    assert_eq!(code(&a.signal(PeerId::from_array([7; 32]), b"x").await), Some(ErrorCode::PeerNotFound));
    // Leaving is seen everywhere.
    assert_eq!(b.leave(t).await, ok());
    await_event(&mut a, |e| matches!(e, Event::PeerLeft { peer, .. } if *peer == bp)).await;
    let rest: BTreeSet<PeerId> = [a.peer(), c.peer()].into();
    await_lookup(&mut c, t, &rest).await;
    // Every node describes the whole mesh (each other node's status arrives with its heartbeat).
    let deadline = Instant::now() + CONVERGE;
    for node in &nodes {
        loop {
            let status = node.mesh().status().await.unwrap();
            if status.nodes.len() == 2 && status.nodes.iter().all(|n| n.status.is_some() && n.synced) {
                assert_eq!(status.local.links.len(), 2, "{status:?}");
                break;
            }
            assert!(Instant::now() < deadline, "{status:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_signals_in_flight_cross_nodes_once_and_in_order() {
    let _serial = SERIAL.lock().await;
    let nodes = mesh(2, unthrottled_mesh_config).await;
    let t = topic("order");
    let mut a = Client::connect(nodes[0].local_addr()).await;
    let mut b = Client::connect(nodes[1].local_addr()).await;
    assert_eq!(b.join(t, true).await, ok());
    await_lookup(&mut a, t, &[b.peer()].into()).await;
    const N: u32 = 1000;
    // All in flight at once: written back to back, nothing awaited.
    let mut ids = Vec::new();
    for i in 0..N {
        let id = a.take_id();
        let payload = Bytes::from(i.to_be_bytes().to_vec());
        a.feed(ClientMessage::Request {
            id,
            body: RequestBody::Signal { to: b.peer(), payload, ack: signal_mesh_proto::AckMode::Always },
        })
        .await;
        ids.push(id);
    }
    a.flush().await;
    let mut got = Vec::new();
    while got.len() < N as usize {
        if let ServerMessage::Event(Event::Signal { payload, .. }) =
            tokio::time::timeout(CONVERGE, b.recv()).await.expect("signal arrives")
        {
            got.push(u32::from_be_bytes(payload[..4].try_into().unwrap()));
        }
    }
    assert_eq!(got, (0..N).collect::<Vec<_>>(), "every signal once, in order");
    for id in ids {
        assert_eq!(a.response(id).await, ok(), "request {id}");
    }
    b.assert_silent(Duration::from_millis(300)).await;
}

/// Both nodes push large signals at each other over their one TCP connection at once. Yamux
/// stops reading a connection while a `Pong` it owes cannot be written (rust-yamux #227), so two
/// nodes with full TCP send buffers used to stop reading each other for good and every signal
/// ended `PEER_UNREACHABLE`; the link's byte window keeps the buffers from filling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_signals_flooding_a_tcp_link_both_ways_all_arrive() {
    let _serial = SERIAL.lock().await;
    let nodes = mesh(2, || {
        let mut c = unthrottled_mesh_config();
        c.presence_ttl_ms = 30_000;
        c.forward_timeout_ms = 5_000;
        // Room for a whole burst within each sender's share (an eighth): a busy receiver is
        // not what this test is about.
        c.outbound_queue_bytes = 16 << 20;
        c
    })
    .await;
    const CLIENTS: usize = 8;
    const ROUNDS: u32 = 12;
    const BURST: u32 = 16;
    const PAYLOAD: usize = 30 * 1024;
    let t = topic("flood");
    let mut left = Vec::new();
    let mut right = Vec::new();
    for _ in 0..CLIENTS {
        left.push(Client::connect(nodes[0].local_addr()).await);
        let mut b = Client::connect(nodes[1].local_addr()).await;
        assert_eq!(b.join(t, true).await, ok());
        right.push(b);
    }
    for a in &mut left {
        assert_eq!(a.join(t, true).await, ok());
    }
    let everyone: BTreeSet<PeerId> = left.iter().chain(&right).map(Client::peer).collect();
    await_lookup(&mut left[0], t, &everyone).await;
    await_lookup(&mut right[0], t, &everyone).await;
    // Each client sends bursts to its partner on the other node and reads the partner's.
    let run = |mut me: Client, partner: PeerId| async move {
        for round in 0..ROUNDS {
            let mut ids = Vec::new();
            for i in 0..BURST {
                let mut payload = vec![0u8; PAYLOAD];
                payload[..8].copy_from_slice(&(u64::from(round * BURST + i)).to_be_bytes());
                let id = me.take_id();
                let ack = signal_mesh_proto::AckMode::Always;
                me.feed(ClientMessage::Request {
                    id,
                    body: RequestBody::Signal { to: partner, payload: payload.into(), ack },
                })
                .await;
                ids.push(id);
            }
            me.flush().await;
            for i in 0..BURST {
                let signal = me.wait_for(|m| match m {
                    ServerMessage::Event(Event::Signal { from, payload }) => Some((*from, payload.clone())),
                    _ => None,
                });
                let (from, payload) =
                    tokio::time::timeout(CONVERGE, signal).await.expect("the partner's signal arrives");
                assert_eq!(from, partner);
                assert_eq!(payload[..8], u64::from(round * BURST + i).to_be_bytes(), "in order, once");
            }
            for id in ids {
                let body = tokio::time::timeout(CONVERGE, me.response(id)).await.expect("answered");
                assert_eq!(body, ok(), "signal {id} of round {round}");
            }
        }
    };
    let mut tasks = Vec::new();
    for (a, b) in left.into_iter().zip(right) {
        let (pa, pb) = (a.peer(), b.peer());
        tasks.push(tokio::spawn(run(a, pb)));
        tasks.push(tokio::spawn(run(b, pa)));
    }
    for task in tasks {
        task.await.expect("a client's run succeeds");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_only_signals_cross_the_mesh_unanswered_and_failures_come_back_with_their_ids() {
    let _serial = SERIAL.lock().await;
    let mut nodes = mesh(2, || {
        let mut c = unthrottled_mesh_config();
        c.presence_ttl_ms = 30_000;
        c.heartbeat_ms = 1_000;
        c.forward_timeout_ms = 1_000;
        c
    })
    .await;
    let t = topic("failures-only");
    let mut a = Client::connect(nodes[0].local_addr()).await;
    let mut b = Client::connect(nodes[1].local_addr()).await;
    assert_eq!(b.join(t, true).await, ok());
    await_lookup(&mut a, t, &[b.peer()].into()).await;
    let bp = b.peer();
    let quiet = |i: u64| {
        let payload = Bytes::from(i.to_be_bytes().to_vec());
        RequestBody::Signal { to: bp, payload, ack: signal_mesh_proto::AckMode::FailuresOnly }
    };
    // Delivered across the mesh: no response at all, every signal once and in order.
    for i in 0..500 {
        let id = a.take_id();
        a.feed(ClientMessage::Request { id, body: quiet(i) }).await;
    }
    a.flush().await;
    for i in 0..500u64 {
        let Event::Signal { payload, .. } = b.event().await else { panic!("not a signal") };
        assert_eq!(payload[..8], i.to_be_bytes(), "in order, once");
    }
    // A default-mode signal: its Ok is the only response a gets.
    assert_eq!(a.signal(bp, b"barrier").await, ok());
    a.assert_silent(Duration::from_millis(300)).await;

    // The target's node dies: its record lives on until the TTL, so the signals are forwarded
    // and the link task answers each one, failure-only or not, with its own request id.
    nodes.pop().unwrap().kill();
    let ids: Vec<_> = (0..3u64).map(|_| a.take_id()).collect();
    for (i, id) in ids.iter().enumerate() {
        a.feed(ClientMessage::Request { id: *id, body: quiet(i as u64) }).await;
    }
    a.flush().await;
    for id in ids {
        let body = a.response(id).await;
        assert!(
            matches!(code(&body), Some(ErrorCode::PeerUnreachable | ErrorCode::PeerNotFound)),
            "{id}: {body:?}"
        );
    }
    a.assert_silent(Duration::from_millis(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_s_peers_leave_everywhere_within_the_ttl() {
    let _serial = SERIAL.lock().await;
    let mut nodes = mesh(3, mesh_config).await;
    let t = topic("crash");
    let mut a = Client::connect(nodes[0].local_addr()).await;
    let mut b = Client::connect(nodes[2].local_addr()).await;
    assert_eq!(a.join(t, true).await, ok());
    assert_eq!(b.join(t, true).await, ok());
    let both: BTreeSet<PeerId> = [a.peer(), b.peer()].into();
    await_lookup(&mut a, t, &both).await;
    let bp = b.peer();
    let killed = Instant::now();
    nodes.pop().unwrap().kill();
    await_event(&mut a, |e| matches!(e, Event::PeerLeft { peer, .. } if *peer == bp)).await;
    let took = killed.elapsed();
    assert!(took <= Duration::from_millis(3_000 + 1_000), "PeerLeft after {took:?}, TTL 3 s");
    assert_eq!(lookup_set(&mut a, t).await, [a.peer()].into());
    // Every survivor drops the dead node from its view within the TTL.
    for node in &nodes {
        loop {
            let status = node.mesh().status().await.unwrap();
            if status.nodes.len() == 1 {
                break;
            }
            assert!(killed.elapsed() < Duration::from_millis(3_000 + 1_000), "{status:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_shutdown_withdraws_its_peers_at_once() {
    let _serial = SERIAL.lock().await;
    let mut nodes = mesh(2, || {
        let mut c = mesh_config();
        c.presence_ttl_ms = 60_000;
        c
    })
    .await;
    let t = topic("bye");
    let mut a = Client::connect(nodes[0].local_addr()).await;
    let mut b = Client::connect(nodes[1].local_addr()).await;
    assert_eq!(b.join(t, true).await, ok());
    assert_eq!(a.join(t, true).await, ok());
    let both: BTreeSet<PeerId> = [a.peer(), b.peer()].into();
    await_lookup(&mut a, t, &both).await;
    let bp = b.peer();
    let stopped = Instant::now();
    nodes.pop().unwrap().shutdown().await.unwrap();
    await_event(&mut a, |e| matches!(e, Event::PeerLeft { peer, .. } if *peer == bp)).await;
    assert!(stopped.elapsed() < Duration::from_secs(10), "withdrawn after {:?}, TTL 60 s", stopped.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_moves_to_another_node_is_listed_once_and_reached_there() {
    let _serial = SERIAL.lock().await;
    let nodes = mesh(3, mesh_config).await;
    let t = topic("move");
    let mut watcher = Client::connect(nodes[0].local_addr()).await;
    assert_eq!(watcher.join(t, false).await, ok());
    let id = support::identity();
    let mut first = Client::connect_as(nodes[1].local_addr(), id.clone()).await;
    assert_eq!(first.join(t, true).await, ok());
    let me = first.peer();
    await_event(&mut watcher, |e| matches!(e, Event::PeerJoined { peer, .. } if *peer == me)).await;
    // The same peer id on another node, before the first connection is gone.
    let mut second = Client::connect_as(nodes[2].local_addr(), id).await;
    assert_eq!(second.join(t, true).await, ok());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(lookup_set(&mut watcher, t).await, [me].into());
    first.close().await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(lookup_set(&mut watcher, t).await, [me].into());
    // No leave/join storm for the move.
    watcher.assert_silent(Duration::from_millis(200)).await;
    // Signals go to the new node.
    assert_eq!(watcher.signal(me, b"here?").await, ok());
    second
        .wait_for(|m| {
            matches!(m, ServerMessage::Event(Event::Signal { payload, .. }) if payload == &b"here?"[..])
                .then_some(())
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_with_the_same_key_resyncs() {
    let _serial = SERIAL.lock().await;
    let dir = std::env::temp_dir().join(format!("signal-mesh-restart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("n2.key");
    let _ = std::fs::remove_file(&key);
    let nodes = mesh(1, mesh_config).await;
    let boot = tcp_addr(&nodes[0]);
    let t = topic("restart");
    let keyed = || {
        let mut c = mesh_config().with_bootstrap(boot.clone());
        c.key_file = Some(key.clone());
        c
    };
    let n2 = start(keyed()).await;
    let node_key = n2.mesh().node();
    tokio::time::timeout(CONVERGE, n2.mesh().synced()).await.unwrap();
    let mut a = Client::connect(nodes[0].local_addr()).await;
    let mut b = Client::connect(n2.local_addr()).await;
    assert_eq!(b.join(t, true).await, ok());
    await_lookup(&mut a, t, &[b.peer()].into()).await;
    n2.kill();
    drop(b);
    let n2 = start(keyed()).await;
    assert_eq!(n2.mesh().node(), node_key, "same key, same node id");
    tokio::time::timeout(CONVERGE, n2.mesh().synced()).await.unwrap();
    let mut c = Client::connect(n2.local_addr()).await;
    assert_eq!(c.join(t, true).await, ok());
    // The old incarnation's peer is gone, the new one's is there.
    await_lookup(&mut a, t, &[c.peer()].into()).await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_networks_and_strangers_to_a_private_mesh_stay_out() {
    let _serial = SERIAL.lock().await;
    let nodes = mesh(1, mesh_config).await;
    let boot = tcp_addr(&nodes[0]);
    let t = topic("isolated");
    let mut a = Client::connect(nodes[0].local_addr()).await;
    assert_eq!(a.join(t, true).await, ok());
    // Another network bootstrapped at this one: it connects, is refused, sees nothing.
    let other = start(mesh_config().with_network("other-net").with_bootstrap(boot.clone())).await;
    let mut x = Client::connect(other.local_addr()).await;
    assert_eq!(x.join(t, true).await, ok());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(lookup_set(&mut x, t).await, [x.peer()].into());
    assert_eq!(lookup_set(&mut a, t).await, [a.peer()].into());
    assert!(nodes[0].mesh().status().await.unwrap().nodes.is_empty());

    // A private mesh: only the listed node gets in.
    let friend_key = std::env::temp_dir().join(format!("signal-mesh-friend-{}.key", std::process::id()));
    let _ = std::fs::remove_file(&friend_key);
    let friend_id = signal_mesh_node::identity::node_key(
        &signal_mesh_node::identity::load_or_create(&friend_key).unwrap(),
    );
    let mut private = mesh_config();
    private.allow_nodes = vec![friend_id];
    let p = start(private).await;
    let pboot = tcp_addr(&p);
    let stranger = start(mesh_config().with_bootstrap(pboot.clone())).await;
    let mut friend_cfg = mesh_config().with_bootstrap(pboot);
    friend_cfg.key_file = Some(friend_key.clone());
    let friend = start(friend_cfg).await;
    tokio::time::timeout(CONVERGE, friend.mesh().synced()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let view = p.mesh().status().await.unwrap();
    let known: Vec<_> = view.nodes.iter().map(|n| n.node).collect();
    assert_eq!(known, vec![friend_id], "only the allowed node is in the private mesh");
    assert!(stranger.mesh().status().await.unwrap().nodes.is_empty());
    std::fs::remove_file(&friend_key).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn welcome_lists_the_other_nodes_public_urls() {
    let _serial = SERIAL.lock().await;
    let first = start({
        let mut c = mesh_config();
        c.public_url = Some("ws://n1.test/signal".into());
        c
    })
    .await;
    let boot = tcp_addr(&first);
    let mut others = Vec::new();
    for i in 2..=3 {
        let mut c = mesh_config().with_bootstrap(boot.clone());
        c.public_url = Some(format!("ws://n{i}.test/signal"));
        others.push(start(c).await);
    }
    let deadline = Instant::now() + CONVERGE;
    loop {
        let c = Client::connect(first.local_addr()).await;
        let urls = c.welcome.as_ref().unwrap().node_urls.clone();
        if urls == ["ws://n2.test/signal", "ws://n3.test/signal"] {
            break;
        }
        assert!(Instant::now() < deadline, "welcome node_urls {urls:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_nodes_converge_and_every_lookup_lists_every_peer_once() {
    let _serial = SERIAL.lock().await;
    let nodes = mesh(10, || {
        let mut c = mesh_config();
        c.heartbeat_ms = 1_000;
        c.presence_ttl_ms = 10_000;
        c
    })
    .await;
    let t = topic("ten");
    let mut clients = Vec::new();
    for node in &nodes {
        let mut c = Client::connect(node.local_addr()).await;
        assert_eq!(c.join(t, true).await, ok());
        clients.push(c);
    }
    let all: BTreeSet<PeerId> = clients.iter().map(Client::peer).collect();
    for c in &mut clients {
        await_lookup(c, t, &all).await;
    }
    // A signal from the first to the last crosses one link.
    let last = clients[9].peer();
    assert_eq!(clients[0].signal(last, b"hi").await, ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_to_a_dead_node_s_peer_is_peer_unreachable_not_silence() {
    let _serial = SERIAL.lock().await;
    let mut nodes = mesh(2, || {
        let mut c = mesh_config();
        c.presence_ttl_ms = 30_000;
        c.heartbeat_ms = 1_000;
        c.forward_timeout_ms = 1_000;
        c
    })
    .await;
    let t = topic("unreachable");
    let mut a = Client::connect(nodes[0].local_addr()).await;
    let mut b = Client::connect(nodes[1].local_addr()).await;
    assert_eq!(b.join(t, true).await, ok());
    await_lookup(&mut a, t, &[b.peer()].into()).await;
    let bp = b.peer();
    nodes.pop().unwrap().kill();
    // Until the records expire the peer is still routed to the dead node: the sender learns
    // that it is unreachable, within the forwarding timeout.
    let start = Instant::now();
    let body = a.signal(bp, b"x").await;
    assert!(matches!(code(&body), Some(ErrorCode::PeerUnreachable | ErrorCode::PeerNotFound)), "{body:?}");
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_heals_and_gossip_lost_meanwhile_is_repaired_by_a_snapshot() {
    let _serial = SERIAL.lock().await;
    let nodes = mesh(2, mesh_config).await;
    let (ka, kb) = (nodes[0].mesh().node(), nodes[1].mesh().node());
    let t = topic("partition");
    let mut a = Client::connect(nodes[0].local_addr()).await;
    let mut b1 = Client::connect(nodes[1].local_addr()).await;
    assert_eq!(a.join(t, true).await, ok());
    assert_eq!(b1.join(t, true).await, ok());
    let both: BTreeSet<PeerId> = [a.peer(), b1.peer()].into();
    await_lookup(&mut a, t, &both).await;
    // Cut the link both ways.
    assert!(nodes[0].mesh().block(kb, true).await);
    assert!(nodes[1].mesh().block(ka, true).await);
    let b1p = b1.peer();
    await_event(&mut a, |e| matches!(e, Event::PeerLeft { peer, .. } if *peer == b1p)).await;
    // Meanwhile on the other side: a join whose gossip never reaches node A.
    let mut b2 = Client::connect(nodes[1].local_addr()).await;
    assert_eq!(b2.join(t, true).await, ok());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(lookup_set(&mut a, t).await, [a.peer()].into());
    // Heal: A learns B's state from the snapshot its heartbeat makes it fetch.
    assert!(nodes[0].mesh().block(kb, false).await);
    assert!(nodes[1].mesh().block(ka, false).await);
    let all: BTreeSet<PeerId> = [a.peer(), b1.peer(), b2.peer()].into();
    await_lookup(&mut a, t, &all).await;
    await_lookup(&mut b2, t, &all).await;
}

/// A hostile node: a libp2p swarm of its own that speaks the mesh's protocols with garbage.
mod rogue {
    use std::time::Duration;

    use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
    use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
    use libp2p::{Multiaddr, StreamProtocol, Swarm, gossipsub, identify, noise, tcp, yamux};

    #[derive(NetworkBehaviour)]
    pub struct Behaviour {
        pub identify: identify::Behaviour,
        pub gossipsub: gossipsub::Behaviour,
        pub stream: libp2p_stream::Behaviour,
    }

    pub fn swarm(network: &str) -> Swarm<Behaviour> {
        libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
            .unwrap()
            .with_behaviour(|key| {
                let config = gossipsub::ConfigBuilder::default()
                    .protocol_id_prefix(format!("/signal-mesh/{network}/meshsub/1"))
                    .max_transmit_size(4 << 20)
                    .build()
                    .unwrap();
                Behaviour {
                    identify: identify::Behaviour::new(identify::Config::new(
                        format!("/signal-mesh/{network}/1"),
                        key.public(),
                    )),
                    gossipsub: gossipsub::Behaviour::new(
                        gossipsub::MessageAuthenticity::Signed(key.clone()),
                        config,
                    )
                    .unwrap(),
                    stream: libp2p_stream::Behaviour::new(),
                }
            })
            .unwrap()
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build()
    }

    /// Dials `addr` and drives the swarm until `done` says so (bounded by the caller).
    pub async fn connect(swarm: &mut Swarm<Behaviour>, addr: Multiaddr) {
        swarm.dial(addr).unwrap();
        loop {
            if let SwarmEvent::ConnectionEstablished { .. } = swarm.select_next_some().await {
                return;
            }
        }
    }

    /// Writes `bytes` on a fresh signal stream and returns whether the node closed it.
    pub async fn garbage_stream(
        mut control: libp2p_stream::Control,
        node: libp2p::PeerId,
        bytes: Vec<u8>,
    ) -> bool {
        let protocol = StreamProtocol::new("/signal-mesh/default/signal/1");
        let Ok(mut stream) = control.open_stream(node, protocol).await else { return false };
        let _ = stream.write_all(&bytes).await;
        let _ = stream.flush().await;
        let mut buf = [0u8; 64];
        // The node answers nothing and closes (or resets) the stream.
        matches!(
            tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await,
            Ok(Ok(0) | Err(_))
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_oversize_mesh_messages_are_dropped_and_a_persistent_sender_is_cut_off() {
    let _serial = SERIAL.lock().await;
    let nodes = mesh(1, mesh_config).await;
    let node = nodes[0].mesh().node();
    let mut swarm = rogue::swarm("default");
    tokio::time::timeout(CONVERGE, rogue::connect(&mut swarm, tcp_addr(&nodes[0]))).await.unwrap();
    let control = swarm.behaviour().stream.new_control();
    let driver = tokio::spawn(async move {
        let topic = libp2p::gossipsub::IdentTopic::new("signal-mesh/default/presence/1");
        swarm.behaviour_mut().gossipsub.subscribe(&topic).unwrap();
        let mut published = 0;
        let mut disconnected = false;
        let deadline = tokio::time::Instant::now() + CONVERGE;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        while tokio::time::Instant::now() < deadline && !disconnected {
            tokio::select! {
                _ = tick.tick() => {
                    // Garbage, and a message over the 1 MiB presence limit.
                    let data = if published % 2 == 0 { vec![0xff; 64] } else { vec![0x0a; (1 << 20) + 10] };
                    if swarm.behaviour_mut().gossipsub.publish(topic.clone(), data).is_ok() {
                        published += 1;
                    }
                }
                event = futures::StreamExt::select_next_some(&mut swarm) => {
                    if let libp2p::swarm::SwarmEvent::ConnectionClosed { num_established: 0, .. } = event {
                        disconnected = true;
                    }
                }
            }
        }
        (published, disconnected)
    });
    // Garbage on the signal stream: an undecodable frame, then one announcing 1 GB.
    assert!(rogue::garbage_stream(control.clone(), node, vec![0, 0, 0, 3, 0xff, 0xff, 0xff]).await);
    assert!(rogue::garbage_stream(control, node, vec![0x40, 0, 0, 0, 1, 2, 3]).await);
    let (published, disconnected) = driver.await.unwrap();
    assert!(disconnected, "the node keeps a link to a node that sent {published} malformed messages");
    let status = nodes[0].mesh().status().await.unwrap();
    assert!(status.nodes.is_empty(), "nothing of the rogue's was recorded: {status:?}");
    // The node still serves its clients.
    let mut c = Client::connect(nodes[0].local_addr()).await;
    assert_eq!(c.join(topic("after-rogue"), true).await, ok());
}
