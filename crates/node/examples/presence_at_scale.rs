//! Presence at scale (issue 11): 10 nodes in this process, each a real directory task and a real
//! libp2p swarm (TCP + Noise + Yamux on 127.0.0.1, gossipsub, snapshots), joined into one mesh.
//! 100,000 peers (10,000 per node) announce themselves over 10,000 topics (one member of every
//! topic on every node), then 1,000 joins+leaves per second move peers between topics.
//! The WebSocket gateway is left out (200,000 sockets would not fit this machine's descriptor
//! limit): peers are registered with the directory directly, as the gateway does after
//! authentication, with their outbound queues drained by this program.
//!
//! Prints memory per remote record (RSS), gossip bytes per join (libp2p's own bandwidth
//! counters: payload bytes of the mesh's streams, before Yamux and Noise framing) and CPU per
//! join per node. Figures in BENCHMARKS.md ("Mesh scenarios (issue 11)") and docs/scaling.md.
//!
//! `cargo run --release -p signal-mesh-node --example presence_at_scale [-- SECONDS]`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use prometheus_client::registry::Registry;
use signal_mesh_node::Config;
use signal_mesh_node::directory::{self, Command, Directory, DirectoryHandle, Outlet};
use signal_mesh_node::identity;
use signal_mesh_node::mesh::Mesh;
use signal_mesh_node::mesh::presence::ReplicaConfig;
use signal_mesh_node::metrics::Metrics;
use signal_mesh_node::outbox::{OutboxReceiver, outbox};
use signal_mesh_node::session::Op;
use signal_mesh_proto::{Limits, PROTOCOL_VERSION, PeerId, TopicId, Welcome};
use tokio::sync::{mpsc, watch};

const NODES: usize = 10;
const PEERS: u64 = 100_000;
const TOPICS: u64 = 10_000;
/// Join+leave pairs per second during churn.
const RATE: u64 = 1_000;

struct SimNode {
    directory: DirectoryHandle,
    registry: Registry,
    _stop: watch::Sender<bool>,
}

fn peer(i: u64) -> PeerId {
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&i.to_le_bytes());
    b[31] = 7;
    PeerId::from_array(b)
}

fn topic(i: u64) -> TopicId {
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&i.to_le_bytes());
    b[31] = 9;
    TopicId::from_array(b)
}

fn proc_self() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = stat.rsplit_once(')').unwrap().1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let hz = 100; // USER_HZ on Linux
    let cpu_us = (f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()) * 1_000_000 / hz;
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (cpu_us, rss_kib)
}

/// The sum over every node of the metric lines starting with `prefix` and containing `label`.
fn metric_sum(nodes: &[SimNode], prefix: &str, label: &str) -> u64 {
    let mut total = 0;
    for n in nodes {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &n.registry).unwrap();
        for line in text.lines() {
            if line.starts_with(prefix) && line.contains(label) {
                total += line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) as u64;
            }
        }
    }
    total
}

/// Outbound payload bytes of every node's libp2p streams so far.
fn outbound_bytes(nodes: &[SimNode]) -> u64 {
    metric_sum(nodes, "libp2p_bandwidth_bytes_total", "Outbound")
}

/// Presence snapshots fetched by every node so far (each one means a gap, a restart or a new
/// node).
fn snapshots(nodes: &[SimNode]) -> u64 {
    metric_sum(nodes, "signal_mesh_snapshot_fetches", "result")
}

async fn start_node(bootstrap: Option<libp2p::Multiaddr>) -> (SimNode, libp2p::Multiaddr) {
    let mut config = Config::default().with_listen("127.0.0.1:0".parse().unwrap());
    config.p2p_listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    if let Some(b) = bootstrap {
        config = config.with_bootstrap(b);
    }
    let mesh_config = config.mesh();
    let replica = ReplicaConfig {
        ttl: mesh_config.presence_ttl,
        suspect_grace: (mesh_config.heartbeat * 3).min(mesh_config.presence_ttl),
        max_peers_per_origin: mesh_config.max_peers_per_origin,
        ..ReplicaConfig::default()
    };
    let id = identity::generate().unwrap();
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let mesh = Mesh::new(identity::keypair(&id), mesh_config, &mut registry, metrics.clone()).await.unwrap();
    let addr = mesh.listen_addrs()[0].clone();
    let mut dir = Directory::with_mesh(1024, mesh.incarnation(), replica, Box::new(mesh.forwarder()));
    dir.set_metrics(metrics);
    let (mesh_tx, mesh_rx) = mpsc::channel(4096);
    let (directory, _task) = directory::spawn_with_mesh(dir, 8192, Some(mesh_tx));
    let (stop_tx, stop_rx) = watch::channel(false);
    let (_handle, _mesh_task) = mesh.run(directory.clone(), mesh_rx, stop_rx);
    (SimNode { directory, registry, _stop: stop_tx }, addr)
}

fn drain(queues: &[OutboxReceiver]) -> u64 {
    let mut n = 0;
    for q in queues {
        while q.try_recv().is_some() {
            n += 1;
        }
    }
    n
}

/// Waits until every node holds `per_origin` peers of each of the other nodes, all synced.
async fn wait_replicated(nodes: &[SimNode], per_origin: usize) -> Duration {
    let t = Instant::now();
    loop {
        let mut done = true;
        for n in nodes {
            let views = n.directory.origins().await.unwrap();
            if views.len() != NODES - 1 || views.iter().any(|v| !v.synced || v.peers != per_origin) {
                done = false;
                break;
            }
        }
        if done {
            return t.elapsed();
        }
        assert!(t.elapsed() < Duration::from_secs(300), "replication did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let churn_secs: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(20);
    let per_node = PEERS / NODES as u64;

    // The cost of a local peer (registered, one announced topic) in a lone directory, to
    // subtract from the mesh's growth below.
    let (_, rss_a) = proc_self();
    let (lone, _lone_task) = directory::spawn(Directory::new(1024), 8192);
    let mut lone_queues = Vec::new();
    for i in 0..per_node {
        let (tx, rx) = outbox(256);
        lone_queues.push(rx);
        register(&lone, PEERS + i, tx).await;
        join(&lone, PEERS + i, topic(i % TOPICS), 2).await;
    }
    lone.stats().await.unwrap();
    drain(&lone_queues);
    let (_, rss_b) = proc_self();
    let local_bytes = (rss_b.saturating_sub(rss_a)) as f64 * 1024.0 / per_node as f64;
    println!("local peer (registered, one announced topic, empty queue): {local_bytes:.0} B");

    let (first, boot) = start_node(None).await;
    let mut nodes = vec![first];
    for _ in 1..NODES {
        nodes.push(start_node(Some(boot.clone())).await.0);
    }
    wait_replicated(&nodes, 0).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, rss0) = proc_self();

    // Load: peer k on node k / per_node, announced in topic k % TOPICS.
    let load = Instant::now();
    let mut queues = Vec::with_capacity(PEERS as usize);
    for k in 0..PEERS {
        let node = &nodes[(k / per_node) as usize];
        let (tx, rx) = outbox(256);
        queues.push(rx);
        register(&node.directory, k, tx).await;
        join(&node.directory, k, topic(k % TOPICS), 2).await;
        if k % 10_000 == 9_999 {
            drain(&queues);
        }
    }
    let snaps_before = snapshots(&nodes);
    let replicated = wait_replicated(&nodes, per_node as usize).await;
    println!("snapshot fetches while loading: {}", snapshots(&nodes) - snaps_before);
    println!(
        "loaded {PEERS} peers over {TOPICS} topics on {NODES} nodes in {:.1} s (replicated everywhere {:.1} s after the last join)",
        load.elapsed().as_secs_f64(),
        replicated.as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    drain(&queues);
    let (_, rss1) = proc_self();
    let remote_records = PEERS * (NODES as u64 - 1);
    let grown = (rss1.saturating_sub(rss0)) as f64 * 1024.0;
    let per_remote = (grown - local_bytes * PEERS as f64) / remote_records as f64;
    println!(
        "RSS {:.1} MB -> {:.1} MB (+{:.1} MB) for {PEERS} local and {remote_records} remote records: \
         {per_remote:.0} B per remote record (after {local_bytes:.0} B per local peer)",
        rss0 as f64 / 1024.0,
        rss1 as f64 / 1024.0,
        grown / 1e6
    );

    // Idle baseline: heartbeats and gossipsub upkeep for the same length as the churn.
    let (cpu_i0, _) = proc_self();
    let bytes_i0 = outbound_bytes(&nodes);
    tokio::time::sleep(Duration::from_secs(churn_secs)).await;
    let (cpu_i1, _) = proc_self();
    let bytes_i1 = outbound_bytes(&nodes);

    // Churn: every 10 ms, RATE/100 peers each leave their topic and join the next one.
    let mut current: Vec<u64> = (0..PEERS).map(|k| k % TOPICS).collect();
    let mut next_peer: u64 = 0;
    let mut id = 3;
    let (cpu0, _) = proc_self();
    let bytes0 = outbound_bytes(&nodes);
    let snaps0 = snapshots(&nodes);
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut pairs = 0u64;
    while started.elapsed() < Duration::from_secs(churn_secs) {
        tick.tick().await;
        for _ in 0..RATE / 100 {
            // Stride through the peers so that every node churns.
            let k = (next_peer * 7919) % PEERS;
            next_peer += 1;
            let dir = &nodes[(k / per_node) as usize].directory;
            let old = current[k as usize];
            let new = (old + 1) % TOPICS;
            current[k as usize] = new;
            dir.send(Command::Request { peer: peer(k), conn: k, id, op: Op::Leave { topic: topic(old) } })
                .await
                .unwrap();
            join(dir, k, topic(new), id + 1).await;
            id += 2;
            pairs += 1;
        }
        if pairs.is_multiple_of(10_000) {
            drain(&queues);
        }
    }
    let churn = started.elapsed();
    // Let the last gossip land before reading the counters.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (cpu1, rss2) = proc_self();
    let bytes1 = outbound_bytes(&nodes);
    let idle_cpu = cpu_i1 - cpu_i0;
    let idle_bytes = bytes_i1 - bytes_i0;
    let cpu = (cpu1 - cpu0).saturating_sub(idle_cpu);
    let bytes = (bytes1 - bytes0).saturating_sub(idle_bytes);
    let rate = pairs as f64 / churn.as_secs_f64();
    println!("churn: {pairs} join+leave pairs in {:.1} s ({rate:.0}/s)", churn.as_secs_f64());
    println!(
        "idle baseline over {churn_secs} s: {:.1} % of one core, {:.0} B/s outbound (heartbeats, gossipsub upkeep)",
        idle_cpu as f64 / (churn_secs as f64 * 1e4),
        idle_bytes as f64 / churn_secs as f64
    );
    println!(
        "gossip bytes per join+leave pair (all nodes' outbound, idle subtracted): {:.0} B; per change {:.0} B",
        bytes as f64 / pairs as f64,
        bytes as f64 / (2 * pairs) as f64
    );
    println!(
        "CPU per join+leave pair per node (idle subtracted, driver included): {:.1} µs; whole mesh {:.1} µs",
        cpu as f64 / pairs as f64 / NODES as f64,
        cpu as f64 / pairs as f64
    );
    println!("snapshot fetches during churn: {}", snapshots(&nodes) - snaps0);
    println!("RSS after churn: {:.1} MB", rss2 as f64 / 1024.0);
    let views = nodes[0].directory.origins().await.unwrap();
    let all: usize = views.iter().map(|v| v.peers).sum();
    println!(
        "node 1 still holds {all} remote peers from {} origins, all synced: {}",
        views.len(),
        views.iter().all(|v| v.synced)
    );
}

async fn register(dir: &DirectoryHandle, k: u64, queue: signal_mesh_node::outbox::OutboxSender) {
    let welcome = Welcome {
        protocol_version: PROTOCOL_VERSION,
        peer_id: peer(k),
        limits: Limits::default(),
        node_urls: Vec::new(),
    };
    dir.send(Command::Register {
        peer: peer(k),
        outlet: Outlet { conn: k, queue },
        welcome: Box::new(welcome),
        since_ms: 1,
    })
    .await
    .unwrap();
}

async fn join(dir: &DirectoryHandle, k: u64, t: TopicId, id: u64) {
    dir.send(Command::Request { peer: peer(k), conn: k, id, op: Op::Join { topic: t, announce: true } })
        .await
        .unwrap();
}
