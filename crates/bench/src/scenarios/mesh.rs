//! mesh: real node processes joined over libp2p on 127.0.0.1. Measures what the mesh adds:
//! - mesh join: a new node's process start until a lookup on it lists peers announced on every
//!   other node (its first complete presence sync), with `preload` peers in the mesh;
//! - presence propagation: a join on node 1 until `PeerJoined` on every other node, and until a
//!   lookup on node 2 lists it;
//! - cross-node signal round trip: a signal from node 1 to node 2 and its echo back;
//! - eviction: a node killed with SIGKILL until its peer's `PeerLeft` on node 1 (default TTL).

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use hdrhistogram::Histogram;
use serde_json::json;
use signal_mesh_proto::{Event, PeerId, RequestBody, ResponseBody, ServerMessage, TopicId};

use super::{block_on, connect_many, identity, topic};
use crate::client::{Client, expect_ok};
use crate::error::BenchError;
use crate::node::{MeshBoot, NodeProcess, NodeSpec};
use crate::report::{self, Report, fmt_quantiles};
use crate::{Global, Targets};

/// Targets from the mesh performance issue.
const TARGET_JOIN_MS: f64 = 1000.0;
const TARGET_PROPAGATION_P50_MS: f64 = 20.0;
const TARGET_PROPAGATION_P99_MS: f64 = 100.0;

/// Options of the mesh scenario.
#[derive(Clone, Debug, Args)]
pub struct Opts {
    /// Nodes in the mesh (the last one is started late, for the mesh-join figure, and killed).
    #[arg(long, default_value_t = 5)]
    pub nodes: usize,
    /// Peers announced in the mesh before the last node starts.
    #[arg(long, default_value_t = 10_000)]
    pub preload: u64,
    /// Joins measured for propagation.
    #[arg(long, default_value_t = 200)]
    pub joins: u64,
    /// Cross-node signal round trips measured.
    #[arg(long, default_value_t = 1000)]
    pub pings: u64,
    /// Extra flag for every node of the mesh (repeatable), e.g. --mesh-arg=--presence-ttl-ms=5000.
    #[arg(long = "mesh-arg", allow_hyphen_values = true)]
    pub mesh_args: Vec<String>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts { nodes: 5, preload: 10_000, joins: 200, pings: 1000, mesh_args: Vec::new() }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Starts node `i` of the mesh.
fn start_node(g: &Global, o: &Opts, i: usize, args: Vec<String>) -> Result<NodeProcess, BenchError> {
    let mut extra = args;
    extra.extend(o.mesh_args.iter().cloned());
    extra.extend(g.node_args.iter().cloned());
    let log = g.node_log.with_file_name(format!("bench-mesh-node{i}.log"));
    let spec = NodeSpec {
        binary: g.node_bin.clone().unwrap_or_else(crate::node::default_binary),
        core: (!g.no_pin).then_some(g.node_core),
        extra_args: extra,
        log,
    };
    NodeProcess::start(&spec, o.preload + 1000)
}

/// Runs the scenario.
pub fn run(g: &Global, o: &Opts) -> Result<Report, BenchError> {
    if o.nodes < 3 {
        return Err(BenchError::Usage("--nodes must be at least 3".into()));
    }
    let binary = g.node_bin.clone().unwrap_or_else(crate::node::default_binary);
    let mesh = MeshBoot::new(&binary, &PathBuf::from("target/bench-mesh"))?;
    let boot = mesh.boot.clone();
    let mut nodes = vec![start_node(g, o, 1, mesh.args(0))?];
    for i in 2..o.nodes {
        nodes.push(start_node(g, o, i, mesh.args(i))?);
    }
    let mut r = Report::new(format!("mesh: {} node processes, {} peers preloaded", o.nodes, o.preload));
    r.json["nodes"] = json!(o.nodes);
    r.json["preload"] = json!(o.preload);
    if let Some(n) = nodes.first() {
        r.json["node_command"] = json!(n.command);
    }
    block_on(measure(g, o, &mut r, &mut nodes, &boot))??;
    Ok(r)
}

async fn measure(
    g: &Global,
    o: &Opts,
    r: &mut Report,
    nodes: &mut Vec<NodeProcess>,
    boot: &str,
) -> Result<(), BenchError> {
    let urls: Vec<_> = nodes.iter().map(|n| n.url.clone()).collect();
    let targets = Targets { urls, pids: Vec::new(), started: Vec::new(), command: None, sources: Vec::new() };
    // Preload: peers spread over the running nodes and over a prime number of topics, so every
    // topic has members on every node.
    const TOPICS: u64 = 101;
    let running = nodes.len() as u64;
    let connected = connect_many(
        &targets,
        o.preload,
        128,
        Duration::from_secs(120),
        |i| identity(0x4d, 1, i),
        |i| i % running,
        |i, mut c: Client| async move {
            c.join(topic("mesh-preload", i % TOPICS), true).await?;
            Ok(c)
        },
    )
    .await;
    let preloaded: Vec<Client> = connected.clients.into_iter().flatten().collect();
    if preloaded.len() as u64 != o.preload {
        return Err(BenchError::Protocol(format!("preload: {:?}", connected.errors)));
    }
    let expect = (0..o.preload).filter(|i| i % TOPICS == 0).count();
    // Let the preload reach every running node.
    let mut probe = Client::connect(&targets.urls[0], None, &identity(0x4d, 2, 0), 1).await?;
    wait_lookup_count(&mut probe, topic("mesh-preload", 0), expect, Duration::from_secs(60)).await?;

    // Mesh join: the last node's process start until a lookup on it lists a topic whose members
    // are on every other node.
    let started = Instant::now();
    let last = start_node(g, o, o.nodes, vec!["--bootstrap".into(), boot.to_owned()])?;
    let last_url = last.url.clone();
    nodes.push(last);
    let mut joiner = Client::connect(&last_url, None, &identity(0x4d, 2, 1), 2).await?;
    wait_lookup_count(&mut joiner, topic("mesh-preload", 0), expect, Duration::from_secs(60)).await?;
    let join = started.elapsed();
    r.target(
        "mesh join: process start to complete presence sync",
        format!("{:.0} ms", ms(join)),
        "<= 1000 ms",
        ms(join) <= TARGET_JOIN_MS,
    );
    r.json["mesh_join_ms"] = json!(ms(join));

    // Propagation: observers (silent members) on every other node.
    let t = topic("mesh-propagation", 0);
    let mut observers = Vec::new();
    for (i, n) in nodes.iter().enumerate().skip(1) {
        let mut c = Client::connect(&n.url, None, &identity(0x4d, 3, i as u64), 3 + i as u64).await?;
        c.join(t, false).await?;
        observers.push(c);
    }
    let mut lookup_probe = Client::connect(&nodes[1].url, None, &identity(0x4d, 4, 0), 9).await?;
    let mut announcer = Client::connect(&nodes[0].url, None, &identity(0x4d, 5, 0), 10).await?;
    let me = identity(0x4d, 5, 0).peer_id();
    let events = Rc::new(RefCell::new(report::new_histogram()));
    let mut by_lookup = report::new_histogram();
    let mut tasks = Vec::new();
    let (tx, _) = tokio::sync::broadcast::channel::<(u64, Instant)>(16);
    let joins = o.joins;
    for mut c in observers {
        let mut rx = tx.subscribe();
        let events = events.clone();
        tasks.push(tokio::task::spawn_local(async move {
            for _ in 0..joins {
                let Ok((round, sent)) = rx.recv().await else { return Err(BenchError::Timeout("round")) };
                loop {
                    match tokio::time::timeout(Duration::from_secs(10), c.next()).await {
                        Err(_) => return Err(BenchError::Timeout("PeerJoined on an observer")),
                        Ok(msg) => {
                            if let ServerMessage::Event(Event::PeerJoined { peer, .. }) = msg?
                                && peer == me
                            {
                                report::record(&mut events.borrow_mut(), sent.elapsed());
                                let _ = round;
                                break;
                            }
                        }
                    }
                }
            }
            Ok(c)
        }));
    }
    for round in 0..o.joins {
        let sent = Instant::now();
        let _ = tx.send((round, sent));
        expect_ok(announcer.request(RequestBody::Join { topic: t, announce: true }).await?)?;
        if round % 4 == 0 {
            wait_listed(&mut lookup_probe, t, me, Duration::from_secs(10)).await?;
            report::record(&mut by_lookup, sent.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
        expect_ok(announcer.request(RequestBody::Leave { topic: t }).await?)?;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    for task in tasks {
        task.await.map_err(|e| BenchError::Protocol(e.to_string()))??;
    }
    let events = events.borrow().clone();
    let p50 = events.value_at_quantile(0.5) as f64 / 1e6;
    let p99 = events.value_at_quantile(0.99) as f64 / 1e6;
    r.row("propagation to PeerJoined on every other node", fmt_quantiles(&events));
    r.target("propagation p50", format!("{p50:.1} ms"), "<= 20 ms", p50 <= TARGET_PROPAGATION_P50_MS);
    r.target("propagation p99", format!("{p99:.1} ms"), "<= 100 ms", p99 <= TARGET_PROPAGATION_P99_MS);
    r.row("propagation to a lookup on node 2 (polled)", fmt_quantiles(&by_lookup));
    r.json["propagation_event_us"] = report::quantiles_us(&events);
    r.json["propagation_lookup_us"] = report::quantiles_us(&by_lookup);

    // Cross-node round trip: node 1 -> node 2 and the echo back, one at a time.
    let mut a = Client::connect(&nodes[0].url, None, &identity(0x4d, 6, 0), 11).await?;
    let mut b = Client::connect(&nodes[1].url, None, &identity(0x4d, 6, 1), 12).await?;
    let (pa, pb) = (identity(0x4d, 6, 0).peer_id(), identity(0x4d, 6, 1).peer_id());
    let rtt = ping_pong(&mut a, &mut b, pa, pb, o.pings).await?;
    r.row("cross-node signal round trip (node 1 -> 2 -> 1)", fmt_quantiles(&rtt));
    r.json["cross_node_rtt_us"] = report::quantiles_us(&rtt);

    // Eviction: a peer on the last node; the node is killed; PeerLeft on node 1.
    let victim_topic = topic("mesh-evict", 0);
    let mut watcher = Client::connect(&nodes[0].url, None, &identity(0x4d, 7, 0), 13).await?;
    watcher.join(victim_topic, false).await?;
    let mut victim = Client::connect(&last_url, None, &identity(0x4d, 7, 1), 14).await?;
    victim.join(victim_topic, true).await?;
    let vp = identity(0x4d, 7, 1).peer_id();
    wait_event(&mut watcher, |e| matches!(e, Event::PeerJoined { peer, .. } if *peer == vp)).await?;
    let killed = Instant::now();
    if let Some(n) = nodes.last_mut() {
        n.kill();
    }
    wait_event(&mut watcher, |e| matches!(e, Event::PeerLeft { peer, .. } if *peer == vp)).await?;
    let evicted = killed.elapsed();
    r.row("eviction: SIGKILL to PeerLeft on node 1", format!("{:.0} ms", ms(evicted)));
    r.json["eviction_ms"] = json!(ms(evicted));
    r.notes.push(
        "eviction: a node with a link to the killed one drops its peers 3 heartbeats after the link closes; \
         others after --presence-ttl-ms"
            .into(),
    );
    drop(preloaded);
    Ok(())
}

async fn lookup_count(c: &mut Client, t: TopicId) -> Result<usize, BenchError> {
    let mut n = 0;
    let mut cursor = None;
    loop {
        match c.request(RequestBody::Lookup { topic: t, limit: 0, cursor }).await? {
            ResponseBody::Lookup { peers, next_cursor } => {
                n += peers.len();
                match next_cursor {
                    Some(next) => cursor = Some(next),
                    None => return Ok(n),
                }
            }
            other => return Err(BenchError::Protocol(format!("lookup answered {other:?}"))),
        }
    }
}

async fn wait_lookup_count(
    c: &mut Client,
    t: TopicId,
    want: usize,
    limit: Duration,
) -> Result<(), BenchError> {
    let deadline = Instant::now() + limit;
    loop {
        if lookup_count(c, t).await? >= want {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(BenchError::Timeout("lookup to reach the preloaded count"));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn wait_listed(c: &mut Client, t: TopicId, peer: PeerId, limit: Duration) -> Result<(), BenchError> {
    let deadline = Instant::now() + limit;
    loop {
        if let ResponseBody::Lookup { peers, .. } =
            c.request(RequestBody::Lookup { topic: t, limit: 0, cursor: None }).await?
            && peers.contains(&peer)
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(BenchError::Timeout("lookup to list the joined peer"));
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
}

async fn wait_event(c: &mut Client, what: impl Fn(&Event) -> bool) -> Result<(), BenchError> {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), c.next()).await {
            Err(_) => return Err(BenchError::Timeout("event")),
            Ok(msg) => {
                if let ServerMessage::Event(e) = msg?
                    && what(&e)
                {
                    return Ok(());
                }
            }
        }
    }
}

async fn ping_pong(
    a: &mut Client,
    b: &mut Client,
    pa: PeerId,
    pb: PeerId,
    n: u64,
) -> Result<Histogram<u64>, BenchError> {
    let mut h = report::new_histogram();
    let payload = Bytes::from(vec![0x5a; 1024]);
    // B's presence must have reached node 1 first (until then: PEER_NOT_FOUND), and A's node 2.
    for (from, to) in [(&mut *a, pb), (&mut *b, pa)] {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !matches!(
            from.request(RequestBody::Signal {
                to,
                payload: payload.clone(),
                ack: signal_mesh_proto::AckMode::Always
            })
            .await?,
            ResponseBody::Ok
        ) {
            if Instant::now() > deadline {
                return Err(BenchError::Timeout("the partner's presence on the other node"));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    for c in [&mut *a, &mut *b] {
        loop {
            if let ServerMessage::Event(Event::Signal { .. }) = c.next().await? {
                break;
            }
        }
    }
    for _ in 0..n {
        let sent = Instant::now();
        // Acknowledgements are not waited for: they are read and skipped below.
        a.queue_request(RequestBody::Signal {
            to: pb,
            payload: payload.clone(),
            ack: signal_mesh_proto::AckMode::Always,
        });
        a.flush().await?;
        loop {
            if let ServerMessage::Event(Event::Signal { payload, .. }) = b.next().await? {
                b.queue_request(RequestBody::Signal {
                    to: pa,
                    payload,
                    ack: signal_mesh_proto::AckMode::Always,
                });
                b.flush().await?;
                break;
            }
        }
        loop {
            if let ServerMessage::Event(Event::Signal { .. }) = a.next().await? {
                break;
            }
        }
        report::record(&mut h, sent.elapsed());
    }
    Ok(h)
}
