//! The management endpoints over real HTTP: `/metrics` counting real traffic, `/ready`,
//! `/status` of a real 3-node mesh on 127.0.0.1 (including a node that crashes), bad requests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libp2p::Multiaddr;
use serde_json::Value;
use signal_mesh_node::{Config, RunningNode};
use signal_mesh_proto::{ErrorCode, PeerId, ResponseBody, ServerMessage};
use support::{Client, code, config, ok, start, tcp_addr, topic};

/// Generous bound for anything that must converge.
const CONVERGE: Duration = Duration::from_secs(20);

/// The mesh tests run one at a time (a 2-core machine).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Status line and body of `GET path`.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    request(addr, "GET", path).await
}

async fn request(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = String::new();
    tokio::time::timeout(support::STEP, s.read_to_string(&mut out)).await.expect("timeout").expect("read");
    let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).expect("a status line");
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

async fn status_json(addr: SocketAddr) -> Value {
    let (code, body) = get(addr, "/status").await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("/status is JSON")
}

/// The value of the sample `name` (with its labels, as exposed) in a Prometheus text body.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

async fn metrics(addr: SocketAddr) -> String {
    let (code, body) = get(addr, "/metrics").await;
    assert_eq!(code, 200, "{body}");
    body
}

/// Polls `/metrics` until `name` has `want` (bounded); returns the body.
async fn await_sample(addr: SocketAddr, name: &str, want: f64) -> String {
    let start = Instant::now();
    loop {
        let text = metrics(addr).await;
        if sample(&text, name) == Some(want) {
            return text;
        }
        assert!(start.elapsed() < CONVERGE, "{name} never became {want}:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_joins_lookups_signals_errors_and_connections() {
    let node = start(config()).await;
    let addr = node.local_addr();
    let before = metrics(addr).await;
    for family in [
        "# TYPE signal_mesh_edge_connections gauge",
        "# TYPE signal_mesh_edge_connections_closed counter",
        "# TYPE signal_mesh_relay_latency_seconds histogram",
        "# TYPE signal_mesh_presence_records gauge",
        "# TYPE signal_mesh_snapshot_fetches counter",
        "# TYPE signal_mesh_malformed_mesh_messages counter",
        "# TYPE signal_mesh_outbound_queue_drops counter",
        "# TYPE libp2p_swarm_connections_incoming counter",
        "# TYPE libp2p_bandwidth_bytes counter",
    ] {
        assert!(before.contains(family), "{family} missing:\n{before}");
    }
    assert_eq!(sample(&before, "signal_mesh_joins_total"), Some(0.0));
    assert_eq!(sample(&before, "signal_mesh_edge_connections"), Some(0.0));

    let t = topic("metrics");
    let mut a = Client::connect(addr).await;
    let mut b = Client::connect(addr).await;
    assert_eq!(a.join(t, true).await, ok());
    assert_eq!(b.join(t, true).await, ok());
    assert!(matches!(a.lookup(t, 10, None).await, ResponseBody::Lookup { .. }));
    assert_eq!(a.signal(b.peer(), b"offer-123").await, ok());
    let ap = a.peer();
    b.wait_for(|m| {
        matches!(m, ServerMessage::Event(signal_mesh_proto::Event::Signal { from, .. }) if *from == ap)
            .then_some(())
    })
    .await;
    let nobody = PeerId::from_array([7; 32]);
    assert_eq!(code(&a.signal(nobody, b"x").await), Some(ErrorCode::PeerNotFound));
    assert_eq!(code(&a.leave(topic("never-joined")).await), Some(ErrorCode::NotJoined));
    assert_eq!(a.leave(t).await, ok());

    let text = await_sample(addr, "signal_mesh_edge_peers", 2.0).await;
    assert_eq!(sample(&text, "signal_mesh_edge_connections"), Some(2.0));
    assert_eq!(sample(&text, "signal_mesh_edge_connections_opened_total"), Some(2.0));
    assert_eq!(sample(&text, "signal_mesh_joins_total"), Some(2.0));
    assert_eq!(sample(&text, "signal_mesh_leaves_total"), Some(2.0));
    assert_eq!(sample(&text, "signal_mesh_lookups_total"), Some(1.0));
    assert_eq!(sample(&text, "signal_mesh_signal_requests_total"), Some(2.0));
    assert_eq!(sample(&text, "signal_mesh_signals_total{route=\"local\"}"), Some(1.0));
    assert_eq!(sample(&text, "signal_mesh_signal_payload_bytes_total{route=\"local\"}"), Some(9.0));
    assert_eq!(sample(&text, "signal_mesh_errors_total{code=\"PEER_NOT_FOUND\"}"), Some(1.0));
    assert_eq!(sample(&text, "signal_mesh_errors_total{code=\"NOT_JOINED\"}"), Some(1.0));
    assert_eq!(sample(&text, "signal_mesh_topics"), Some(1.0));

    // A bad frame is an error by code too (the session answers it), and a client leaving is
    // counted as closed by the client.
    a.send_raw(bytes::Bytes::from_static(&[0xff, 0xff, 0xff])).await;
    let _ = a.error().await;
    b.close().await;
    let text = await_sample(addr, "signal_mesh_edge_connections_closed_total{reason=\"client\"}", 1.0).await;
    assert_eq!(sample(&text, "signal_mesh_errors_total{code=\"BAD_REQUEST\"}"), Some(1.0), "{text}");
    await_sample(addr, "signal_mesh_edge_connections", 1.0).await;
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_waits_for_the_first_sync_and_bad_requests_get_http_errors() {
    let alone = start(config()).await;
    assert_eq!(get(alone.local_addr(), "/ready").await.0, 200, "no bootstrap: ready at once");
    assert_eq!(get(alone.local_addr(), "/health").await.0, 200);
    // Bootstrapping from a node that is not there: alive, but not ready.
    let dead: Multiaddr = "/ip4/127.0.0.1/tcp/9".parse().unwrap();
    let lonely = start(config().with_bootstrap(dead)).await;
    let (code, body) = get(lonely.local_addr(), "/ready").await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(get(lonely.local_addr(), "/health").await.0, 200);
    assert_eq!(status_json(lonely.local_addr()).await["ready"], false);
    for (method, path, want) in [
        ("POST", "/status", 405),
        ("DELETE", "/metrics", 405),
        ("PUT", "/ready", 405),
        ("GET", "/status/../../etc/passwd", 404),
        ("GET", "/nothing-here", 404),
    ] {
        assert_eq!(request(alone.local_addr(), method, path).await.0, want, "{method} {path}");
    }
    // The dashboard is served at / (no --static-dir) and its assets under /dashboard/.
    let (code, page) = get(alone.local_addr(), "/").await;
    assert_eq!(code, 200);
    assert!(page.contains("/dashboard/app.js"), "{page}");
    assert_eq!(get(alone.local_addr(), "/dashboard/app.js").await.0, 200);
    assert_eq!(get(alone.local_addr(), "/dashboard/style.css").await.0, 200);
    alone.shutdown().await.unwrap();
    lonely.shutdown().await.unwrap();
}

fn mesh_config() -> Config {
    let mut c = config();
    c.presence_ttl_ms = 3_000;
    c.heartbeat_ms = 500;
    c
}

async fn mesh(n: usize) -> Vec<RunningNode> {
    let first = start(mesh_config()).await;
    let boot = tcp_addr(&first);
    let mut nodes = vec![first];
    for _ in 1..n {
        nodes.push(start(mesh_config().with_bootstrap(boot.clone())).await);
    }
    for node in &nodes {
        tokio::time::timeout(CONVERGE, node.mesh().synced()).await.expect("synced");
    }
    nodes
}

fn ids(doc: &Value) -> BTreeSet<String> {
    doc["nodes"].as_array().unwrap().iter().map(|n| n["id"].as_str().unwrap().to_owned()).collect()
}

fn node<'a>(doc: &'a Value, id: &str) -> Option<&'a Value> {
    doc["nodes"].as_array().unwrap().iter().find(|n| n["id"] == id)
}

/// Polls `/status` of `addr` until `done` holds (bounded); returns that document.
async fn await_status(addr: SocketAddr, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let doc = status_json(addr).await;
        if done(&doc) {
            return doc;
        }
        assert!(start.elapsed() < CONVERGE, "{what}: never; last /status {doc:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_on_every_node_lists_the_whole_mesh_and_a_killed_node_turns_stale_then_goes() {
    let _serial = SERIAL.lock().await;
    let mut nodes = mesh(3).await;
    let all: BTreeSet<String> = nodes.iter().map(|n| n.mesh().node().to_string()).collect();
    let t = topic("status");
    // One peer per node, all in one topic; the first node's peer in a second one too.
    let mut clients = Vec::new();
    for n in &nodes {
        let mut c = Client::connect(n.local_addr()).await;
        assert_eq!(c.join(t, true).await, ok());
        clients.push(c);
    }
    assert_eq!(clients[0].join(topic("status-2"), true).await, ok());
    let pairs: BTreeSet<(String, String)> = all
        .iter()
        .flat_map(|a| all.iter().filter(move |b| a < *b).map(move |b| (a.clone(), b.clone())))
        .collect();
    for (i, n) in nodes.iter().enumerate() {
        let me = n.mesh().node().to_string();
        let doc = await_status(n.local_addr(), "the whole mesh with its links and peers", |doc| {
            let links: BTreeSet<(String, String)> = doc["links"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| (l["a"].as_str().unwrap().to_owned(), l["b"].as_str().unwrap().to_owned()))
                .collect();
            ids(doc) == all
                && links == pairs
                && all.iter().all(|id| node(doc, id).is_some_and(|n| n["edge_peers"] == 1 && n["links"] == 2))
                && doc["topics"]["top"][0]["peers"] == 3
        })
        .await;
        assert_eq!(doc["node"], me.as_str(), "node {i}");
        assert_eq!(doc["nodes"][0]["id"], me.as_str(), "the answering node comes first");
        assert_eq!(doc["nodes"][0]["local"], true);
        assert_eq!(doc["ready"], true);
        assert_eq!(doc["topics"]["top"][0]["id"], t.to_hex().as_str());
        assert_eq!(doc["topics"]["top"][1]["peers"], 1);
        assert!(doc["nodes"].as_array().unwrap().iter().all(|n| n["stale"] == false && n["version"] != ""));
    }

    // A signal across nodes is counted on both ends, with its relay latency.
    let to = clients[1].peer();
    assert_eq!(clients[0].signal(to, b"cross").await, ok());
    let text = metrics(nodes[0].local_addr()).await;
    assert_eq!(sample(&text, "signal_mesh_signals_total{route=\"forwarded\"}"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "signal_mesh_signal_payload_bytes_total{route=\"forwarded\"}"), Some(5.0));
    assert_eq!(sample(&text, "signal_mesh_relay_latency_seconds_count{result=\"delivered\"}"), Some(1.0));
    assert_eq!(sample(&text, "signal_mesh_mesh_links"), Some(2.0));
    assert!(sample(&text, "signal_mesh_snapshot_fetches_total{result=\"ok\"}").is_some_and(|n| n >= 1.0));
    let text = metrics(nodes[1].local_addr()).await;
    assert_eq!(sample(&text, "signal_mesh_signals_total{route=\"received\"}"), Some(1.0), "{text}");
    // libp2p's own metrics, in the same registry, saw the mesh connections.
    let established: f64 = text
        .lines()
        .filter(|l| l.starts_with("libp2p_swarm_connections_established_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(established >= 1.0, "{text}");

    // A crash: the dead node is marked stale first, then dropped.
    let dead = nodes.pop().unwrap();
    let dead_id = dead.mesh().node().to_string();
    dead.kill();
    let killed = Instant::now();
    let watcher = nodes[0].local_addr();
    let doc = await_status(watcher, "the killed node marked stale", |doc| {
        node(doc, &dead_id).is_none_or(|n| n["stale"] == true)
    })
    .await;
    assert!(
        node(&doc, &dead_id).is_some(),
        "the killed node vanished without being shown stale first: {doc:#}"
    );
    await_status(watcher, "the killed node dropped", |doc| node(doc, &dead_id).is_none()).await;
    assert!(killed.elapsed() < Duration::from_secs(3 + 2), "dropped after {:?}", killed.elapsed());
    let doc = await_status(nodes[1].local_addr(), "the survivors only", |doc| {
        ids(doc).len() == 2 && doc["links"].as_array().unwrap().len() == 1
    })
    .await;
    assert!(!ids(&doc).contains(&dead_id));
}
