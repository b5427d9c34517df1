//! mesh: real node processes joined over libp2p on 127.0.0.1 (issue 11's presence scenarios).
//! Steps, in order, each under its own time limit (`--step-timeout-secs`): a step that fails or
//! stalls is reported as such and ends the run, so a stall never hides the steps before it.
//! - preload: `nodes - 1` nodes, `preload` peers announced over them;
//! - mesh join: one more node, from its process start until `/ready` answers 200 (its first
//!   presence sync) and until lookups on it list the preloaded peers of every other node;
//! - presence propagation: a join on node 1 until `PeerJoined` on every other node, and until
//!   a lookup (polled every millisecond) on every other node lists it; then the leave, until
//!   `PeerLeft` everywhere, before the next round;
//! - cross-node signal round trip: node 1 -> node 2 -> node 1, one at a time;
//! - eviction: the last node is killed with SIGKILL, until its peers are gone from lookups on
//!   every other node (compared with the configured TTL).
//!
//! The ping step used to hang: its warm-up sent one signal each way and then waited for both to
//! arrive, but `Client::request` skips events while it waits for its own response, so the
//! second sender swallowed the first signal. Presence is now awaited with lookups instead.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use hdrhistogram::Histogram;
use serde_json::json;
use signal_mesh_proto::{Event, PeerId, RequestBody, ResponseBody, ServerMessage, TopicId};
use tokio::sync::mpsc;

use super::{block_on, connect_many, identity, topic};
use crate::Global;
use crate::Targets;
use crate::client::{Client, expect_ok};
use crate::cluster::{Cluster, ClusterSpec, wait_ready};
use crate::error::BenchError;
use crate::report::{self, Report, fmt_quantiles};

/// Targets from the mesh performance issue (11).
const TARGET_JOIN_MS: f64 = 1000.0;
const TARGET_PROPAGATION_P50_MS: f64 = 20.0;
const TARGET_PROPAGATION_P99_MS: f64 = 100.0;
/// The node's default `--presence-ttl-ms`.
const DEFAULT_TTL_MS: u64 = 10_000;
/// Topics the preload is spread over (prime, so every topic has members on every node).
const PRELOAD_TOPICS: u64 = 101;
/// Peers announced on the node that is killed.
const VICTIMS: u64 = 100;
/// How long one propagation round may take before the step fails.
const ROUND_LIMIT: Duration = Duration::from_secs(5);
/// Lookup polling interval while waiting for propagation.
const POLL: Duration = Duration::from_millis(1);

/// Options of the mesh scenario.
#[derive(Clone, Debug, Args)]
pub struct Opts {
    /// Nodes in the mesh (the last one is started late, for the mesh-join figure, and killed).
    #[arg(long, default_value_t = 5)]
    pub nodes: usize,
    /// Peers announced in the mesh before the last node starts.
    #[arg(long, default_value_t = 10_000)]
    pub preload: u64,
    /// Joins measured for propagation (each followed by its leave).
    #[arg(long, default_value_t = 500)]
    pub joins: u64,
    /// Cross-node signal round trips measured.
    #[arg(long, default_value_t = 1000)]
    pub pings: u64,
    /// Time limit of each step; a step over it is reported as stalled and ends the run.
    #[arg(long, default_value_t = 120)]
    pub step_timeout_secs: u64,
    /// Skip the eviction step (it waits up to the TTL).
    #[arg(long)]
    pub no_eviction: bool,
    /// Extra flag for every node of the mesh (repeatable), e.g. --mesh-arg=--presence-ttl-ms=5000.
    #[arg(long = "mesh-arg", allow_hyphen_values = true)]
    pub mesh_args: Vec<String>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            nodes: 5,
            preload: 10_000,
            joins: 500,
            pings: 1000,
            step_timeout_secs: 120,
            no_eviction: false,
            mesh_args: Vec::new(),
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The `--presence-ttl-ms` the nodes run with (the last one given wins, as with clap).
fn configured_ttl_ms(args: &[String]) -> u64 {
    let mut ttl = DEFAULT_TTL_MS;
    let mut it = args.iter().peekable();
    while let Some(a) = it.next() {
        if let Some(v) = a.strip_prefix("--presence-ttl-ms=") {
            ttl = v.parse().unwrap_or(ttl);
        } else if a == "--presence-ttl-ms"
            && let Some(v) = it.peek()
        {
            ttl = v.parse().unwrap_or(ttl);
        }
    }
    ttl
}

/// Runs the scenario.
pub fn run(g: &Global, o: &Opts) -> Result<Report, BenchError> {
    if o.nodes < 3 {
        return Err(BenchError::Usage("--nodes must be at least 3".into()));
    }
    let spec = ClusterSpec::from_global(g, "bench-mesh-node", &o.mesh_args, o.preload + 1000);
    let mut args = o.mesh_args.clone();
    args.extend(g.node_args.iter().cloned());
    let ttl_ms = configured_ttl_ms(&args);
    eprintln!("mesh: starting {} nodes", o.nodes - 1);
    let mut cluster = Cluster::start(spec, o.nodes - 1)?;
    let mut r = Report::new(format!("mesh: {} node processes, {} peers preloaded", o.nodes, o.preload));
    r.json["nodes"] = json!(o.nodes);
    r.json["preload"] = json!(o.preload);
    r.json["ttl_ms"] = json!(ttl_ms);
    if let Some(c) = cluster.command() {
        r.json["node_command"] = json!(c);
    }
    block_on(measure(o, &mut r, &mut cluster, ttl_ms))??;
    Ok(r)
}

/// Runs `fut` under the step limit; a failure or stall becomes a row and a JSON field.
async fn step<T>(
    r: &mut Report,
    name: &str,
    limit: Duration,
    fut: impl Future<Output = Result<T, BenchError>>,
) -> Option<T> {
    eprintln!("mesh: step {name}");
    let t = Instant::now();
    let outcome = match tokio::time::timeout(limit, fut).await {
        Ok(Ok(v)) => {
            eprintln!("mesh: step {name} done in {:.1} s", t.elapsed().as_secs_f64());
            return Some(v);
        }
        Ok(Err(e)) => format!("FAILED after {:.1} s: {e}", t.elapsed().as_secs_f64()),
        Err(_) => format!("STALLED: not done within {limit:?}"),
    };
    eprintln!("mesh: step {name}: {outcome}");
    r.row(&format!("step {name}"), outcome.clone());
    r.json["failed_step"] = json!({ "step": name, "outcome": outcome });
    r.notes.push(format!("the run ended at step {name}; later steps were not run"));
    None
}

async fn measure(o: &Opts, r: &mut Report, cluster: &mut Cluster, ttl_ms: u64) -> Result<(), BenchError> {
    let limit = Duration::from_secs(o.step_timeout_secs);
    let addrs: Vec<SocketAddr> = cluster.nodes.iter().map(|n| n.url.addr).collect();
    let urls: Vec<_> = cluster.nodes.iter().map(|n| n.url.clone()).collect();
    let targets = Targets::external(urls.clone());

    // Preload: peers spread over the running nodes and over PRELOAD_TOPICS topics.
    let Some(()) = step(r, "mesh formation (every node /ready)", limit, async {
        for a in &addrs {
            wait_ready(*a, Duration::from_millis(20)).await?;
        }
        Ok(())
    })
    .await
    else {
        return Ok(());
    };
    let running = addrs.len() as u64;
    let Some(preloaded) = step(r, "preload", limit, async {
        let connected = connect_many(
            &targets,
            o.preload,
            128,
            limit,
            |i| identity(0x4d, 1, i),
            |i| i % running,
            |i, mut c: Client| async move {
                c.join(topic("mesh-preload", i % PRELOAD_TOPICS), true).await?;
                Ok(c)
            },
        )
        .await;
        let clients: Vec<Client> = connected.clients.into_iter().flatten().collect();
        if clients.len() as u64 != o.preload {
            return Err(BenchError::Protocol(format!("preload: {:?}", connected.errors)));
        }
        // Every running node lists every preloaded peer of the first and last topic.
        for (i, url) in urls.iter().enumerate() {
            let mut probe = Client::connect(url, None, &identity(0x4d, 2, i as u64), i as u64).await?;
            wait_preload(&mut probe, o.preload, Duration::from_millis(10)).await?;
        }
        Ok(clients)
    })
    .await
    else {
        return Ok(());
    };

    // Mesh join.
    let Some((ready, complete)) = step(r, "mesh join", limit, async {
        let started = Instant::now();
        let i = cluster.add()?;
        let node = &cluster.nodes[i];
        let listening = started.elapsed();
        let (addr, url) = (node.url.addr, node.url.clone());
        let ready = async {
            wait_ready(addr, Duration::from_millis(2)).await?;
            Ok::<_, BenchError>(started.elapsed())
        };
        let complete = async {
            let mut c = Client::connect(&url, None, &identity(0x4d, 2, 100), 100).await?;
            wait_preload(&mut c, o.preload, Duration::from_millis(2)).await?;
            Ok::<_, BenchError>(started.elapsed())
        };
        let (ready, complete) = tokio::try_join!(ready, complete)?;
        eprintln!(
            "mesh: join: listening after {:.0} ms, /ready after {:.0} ms, preload listed after {:.0} ms",
            ms(listening),
            ms(ready),
            ms(complete)
        );
        Ok((ready, complete))
    })
    .await
    else {
        return Ok(());
    };
    r.target(
        "mesh join: process start to /ready (first presence sync)",
        format!("{:.0} ms", ms(ready)),
        "<= 1000 ms",
        ms(ready) <= TARGET_JOIN_MS,
    );
    r.row(
        "mesh join: process start to lookups listing every preloaded peer",
        format!("{:.0} ms", ms(complete)),
    );
    r.json["mesh_join_ready_ms"] = json!(ms(ready));
    r.json["mesh_join_complete_ms"] = json!(ms(complete));

    // Propagation.
    let nodes_now: Vec<_> = cluster.nodes.iter().map(|n| n.url.clone()).collect();
    let pids = cluster.pids();
    let cpu_before = nodes_cpu_us(&pids);
    let Some(p) = step(r, "presence propagation", limit, propagation(&nodes_now, o.joins)).await else {
        return Ok(());
    };
    if let (Some(a), Some(b)) = (cpu_before, nodes_cpu_us(&pids)) {
        // Includes the lookup polling (4 probes, one every millisecond) and heartbeats.
        let per = b.saturating_sub(a) as f64 / (o.joins as f64 * pids.len() as f64);
        r.row("node CPU per join+leave round per node (incl. 1 ms lookup polling)", format!("{per:.0} µs"));
        r.json["propagation_cpu_us_per_round_per_node"] = json!(per);
    }
    let (p50, p99) =
        (p.event_all.value_at_quantile(0.5) as f64 / 1e6, p.event_all.value_at_quantile(0.99) as f64 / 1e6);
    r.row(
        &format!(
            "propagation: join on node 1 to PeerJoined on all {} other nodes (n={})",
            nodes_now.len() - 1,
            p.event_all.len()
        ),
        fmt_quantiles(&p.event_all),
    );
    r.target(
        "propagation to PeerJoined everywhere, p50",
        format!("{p50:.2} ms"),
        "<= 20 ms",
        p50 <= TARGET_PROPAGATION_P50_MS,
    );
    r.target(
        "propagation to PeerJoined everywhere, p99",
        format!("{p99:.2} ms"),
        "<= 100 ms",
        p99 <= TARGET_PROPAGATION_P99_MS,
    );
    r.row("propagation: to PeerJoined, each node separately", fmt_quantiles(&p.event_each));
    r.row(
        "propagation: to a lookup listing it on all other nodes (1 ms polls)",
        fmt_quantiles(&p.lookup_all),
    );
    r.row("propagation: leave to PeerLeft on all other nodes", fmt_quantiles(&p.left_all));
    r.json["propagation_event_all_us"] = report::quantiles_us(&p.event_all);
    r.json["propagation_event_each_us"] = report::quantiles_us(&p.event_each);
    r.json["propagation_lookup_all_us"] = report::quantiles_us(&p.lookup_all);
    r.json["propagation_left_all_us"] = report::quantiles_us(&p.left_all);

    // Cross-node round trip.
    let Some(rtt) = step(r, "cross-node round trip", limit, async {
        let mut a = Client::connect(&nodes_now[0], None, &identity(0x4d, 6, 0), 11).await?;
        let mut b = Client::connect(&nodes_now[1], None, &identity(0x4d, 6, 1), 12).await?;
        ping_pong(&mut a, &mut b, o.pings).await
    })
    .await
    else {
        return Ok(());
    };
    r.row("cross-node signal round trip (node 1 -> 2 -> 1)", fmt_quantiles(&rtt));
    r.json["cross_node_rtt_us"] = report::quantiles_us(&rtt);

    if o.no_eviction {
        drop(preloaded);
        return Ok(());
    }
    // Eviction: give it the TTL plus the time to set up.
    let evict_limit = limit.max(Duration::from_millis(ttl_ms * 2 + 10_000));
    let Some(ev) = step(r, "eviction", evict_limit, eviction(cluster, ttl_ms)).await else {
        return Ok(());
    };
    let worst = ev.iter().copied().fold(Duration::ZERO, Duration::max);
    r.target(
        "eviction: SIGKILL until its peers are gone from lookups on every other node",
        format!("{:.0} ms", ms(worst)),
        &format!("<= TTL ({ttl_ms} ms)"),
        ms(worst) <= ttl_ms as f64,
    );
    r.row(
        "eviction: per node",
        ev.iter().map(|d| format!("{:.0}", ms(*d))).collect::<Vec<_>>().join(" / ") + " ms",
    );
    r.json["eviction_ms"] = json!(ev.iter().map(|d| ms(*d)).collect::<Vec<_>>());
    r.notes.push(
        "eviction: a node with a libp2p link to the killed one drops its records 3 heartbeats after the link \
         closes (suspect grace); a node that only hears of it through others after the TTL"
            .into(),
    );
    drop(preloaded);
    Ok(())
}

/// Summed CPU time of the nodes (None if one is unreadable).
fn nodes_cpu_us(pids: &[u32]) -> Option<u64> {
    pids.iter().map(|p| crate::node::sample(Some(*p)).ok().map(|s| s.cpu_us)).sum()
}

/// Waits until lookups on `c` list every preloaded member of the first and the last topic.
async fn wait_preload(c: &mut Client, preload: u64, every: Duration) -> Result<(), BenchError> {
    let members = |t: u64| (0..preload).filter(|i| i % PRELOAD_TOPICS == t).count();
    for t in [0, PRELOAD_TOPICS - 1] {
        let want = members(t);
        while lookup_count(c, topic("mesh-preload", t)).await? < want {
            tokio::time::sleep(every).await;
        }
    }
    Ok(())
}

async fn lookup_count(c: &mut Client, t: TopicId) -> Result<usize, BenchError> {
    let mut n = 0;
    let mut cursor = None;
    // Bounded: a lookup page holds at least one peer, and the mesh holds a finite number.
    loop {
        match c.request(RequestBody::Lookup { topic: t, limit: 0, cursor }).await? {
            ResponseBody::Lookup { peers, next_cursor } => {
                n += peers.len();
                match next_cursor {
                    Some(next) if !peers.is_empty() => cursor = Some(next),
                    _ => return Ok(n),
                }
            }
            other => return Err(BenchError::Protocol(format!("lookup answered {other:?}"))),
        }
    }
}

async fn listed(c: &mut Client, t: TopicId, peer: PeerId) -> Result<bool, BenchError> {
    match c.request(RequestBody::Lookup { topic: t, limit: 0, cursor: None }).await? {
        ResponseBody::Lookup { peers, .. } => Ok(peers.contains(&peer)),
        other => Err(BenchError::Protocol(format!("lookup answered {other:?}"))),
    }
}

/// The next event matching `what`, skipping others.
async fn wait_event(c: &mut Client, what: impl Fn(&Event) -> bool) -> Result<(), BenchError> {
    loop {
        if let ServerMessage::Event(e) = c.next().await?
            && what(&e)
        {
            return Ok(());
        }
    }
}

/// Propagation latencies.
struct Propagation {
    /// Join until `PeerJoined` on the last of the other nodes.
    event_all: Histogram<u64>,
    /// Join until `PeerJoined`, every node a sample.
    event_each: Histogram<u64>,
    /// Join until a lookup lists it on the last of the other nodes.
    lookup_all: Histogram<u64>,
    /// Leave until `PeerLeft` on the last of the other nodes.
    left_all: Histogram<u64>,
}

/// What a watcher reports for one round.
enum Seen {
    Joined { event: Duration, lookup: Duration },
    Left(Duration),
}

/// One watcher per other node: an observer (silent member: events) and a probe (lookups).
/// Each round: the join's `PeerJoined` and a listing lookup, then the leave's `PeerLeft`.
async fn watcher(
    mut observer: Client,
    mut probe: Client,
    t: TopicId,
    me: PeerId,
    mut rounds: mpsc::Receiver<Instant>,
    seen: mpsc::Sender<Result<Seen, BenchError>>,
) {
    while let Some(sent) = rounds.recv().await {
        let event = async {
            wait_event(&mut observer, |e| matches!(e, Event::PeerJoined { peer, .. } if *peer == me)).await?;
            Ok::<_, BenchError>(sent.elapsed())
        };
        let lookup = async {
            while !listed(&mut probe, t, me).await? {
                tokio::time::sleep(POLL).await;
            }
            Ok::<_, BenchError>(sent.elapsed())
        };
        let joined = tokio::try_join!(event, lookup).map(|(event, lookup)| Seen::Joined { event, lookup });
        let failed = joined.is_err();
        if seen.send(joined).await.is_err() || failed {
            return;
        }
        let Some(left_sent) = rounds.recv().await else { return };
        let left = wait_event(&mut observer, |e| matches!(e, Event::PeerLeft { peer, .. } if *peer == me))
            .await
            .map(|()| Seen::Left(left_sent.elapsed()));
        let failed = left.is_err();
        if seen.send(left).await.is_err() || failed {
            return;
        }
    }
}

async fn propagation(urls: &[crate::ws::WsUrl], joins: u64) -> Result<Propagation, BenchError> {
    let t = topic("mesh-propagation", 0);
    let me = identity(0x4d, 5, 0).peer_id();
    let mut announcer = Client::connect(&urls[0], None, &identity(0x4d, 5, 0), 10).await?;
    let (seen_tx, mut seen_rx) = mpsc::channel(urls.len() * 2);
    let mut rounds = Vec::new();
    let mut tasks = Vec::new();
    for (i, url) in urls.iter().enumerate().skip(1) {
        let mut observer = Client::connect(url, None, &identity(0x4d, 3, i as u64), 30 + i as u64).await?;
        observer.join(t, false).await?;
        let probe = Client::connect(url, None, &identity(0x4d, 4, i as u64), 40 + i as u64).await?;
        let (tx, rx) = mpsc::channel(2);
        rounds.push(tx);
        tasks.push(tokio::task::spawn_local(watcher(observer, probe, t, me, rx, seen_tx.clone())));
    }
    drop(seen_tx);
    let mut p = Propagation {
        event_all: report::new_histogram(),
        event_each: report::new_histogram(),
        lookup_all: report::new_histogram(),
        left_all: report::new_histogram(),
    };
    let others = rounds.len();
    let result = async {
        for _ in 0..joins {
            let sent = Instant::now();
            for tx in &rounds {
                tx.send(sent).await.map_err(|_| BenchError::Protocol("a watcher ended".into()))?;
            }
            expect_ok(announcer.request(RequestBody::Join { topic: t, announce: true }).await?)?;
            let (mut ev_max, mut lk_max) = (Duration::ZERO, Duration::ZERO);
            for _ in 0..others {
                match next_seen(&mut seen_rx, "PeerJoined and a listing lookup on every other node").await? {
                    Seen::Joined { event, lookup } => {
                        report::record(&mut p.event_each, event);
                        ev_max = ev_max.max(event);
                        lk_max = lk_max.max(lookup);
                    }
                    Seen::Left(_) => return Err(BenchError::Protocol("PeerLeft out of turn".into())),
                }
            }
            report::record(&mut p.event_all, ev_max);
            report::record(&mut p.lookup_all, lk_max);
            let left_sent = Instant::now();
            for tx in &rounds {
                tx.send(left_sent).await.map_err(|_| BenchError::Protocol("a watcher ended".into()))?;
            }
            expect_ok(announcer.request(RequestBody::Leave { topic: t }).await?)?;
            let mut left_max = Duration::ZERO;
            for _ in 0..others {
                match next_seen(&mut seen_rx, "PeerLeft on every other node").await? {
                    Seen::Left(d) => left_max = left_max.max(d),
                    Seen::Joined { .. } => return Err(BenchError::Protocol("PeerJoined out of turn".into())),
                }
            }
            report::record(&mut p.left_all, left_max);
        }
        Ok(())
    }
    .await;
    drop(rounds);
    for task in tasks {
        task.abort();
    }
    result.map(|()| p)
}

async fn next_seen(
    rx: &mut mpsc::Receiver<Result<Seen, BenchError>>,
    what: &'static str,
) -> Result<Seen, BenchError> {
    match tokio::time::timeout(ROUND_LIMIT, rx.recv()).await {
        Err(_) => Err(BenchError::Timeout(what)),
        Ok(None) => Err(BenchError::Protocol("every watcher ended".into())),
        Ok(Some(seen)) => seen,
    }
}

/// Waits until `c`'s node lists `peer` in `t`.
async fn wait_listed(c: &mut Client, t: TopicId, peer: PeerId) -> Result<(), BenchError> {
    while !listed(c, t, peer).await? {
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}

async fn ping_pong(a: &mut Client, b: &mut Client, n: u64) -> Result<Histogram<u64>, BenchError> {
    let (pa, pb) = (identity(0x4d, 6, 0).peer_id(), identity(0x4d, 6, 1).peer_id());
    // Each must be known on the other's node before a signal can be routed: both announce a
    // topic and wait until their own node lists the other.
    let t = topic("mesh-ping", 0);
    a.join(t, true).await?;
    b.join(t, true).await?;
    wait_listed(a, t, pb).await?;
    wait_listed(b, t, pa).await?;
    let mut h = report::new_histogram();
    let payload = Bytes::from(vec![0x5a; 1024]);
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
            match b.next().await? {
                ServerMessage::Event(Event::Signal { payload, .. }) => {
                    b.queue_request(RequestBody::Signal {
                        to: pa,
                        payload,
                        ack: signal_mesh_proto::AckMode::Always,
                    });
                    b.flush().await?;
                    break;
                }
                ServerMessage::Response { body: ResponseBody::Error { code, message }, .. } => {
                    return Err(BenchError::Node { code, message });
                }
                _ => {}
            }
        }
        loop {
            match a.next().await? {
                ServerMessage::Event(Event::Signal { .. }) => break,
                ServerMessage::Response { body: ResponseBody::Error { code, message }, .. } => {
                    return Err(BenchError::Node { code, message });
                }
                _ => {}
            }
        }
        report::record(&mut h, sent.elapsed());
    }
    Ok(h)
}

/// Kills the last node, whose peers announce a topic, and measures until lookups on every
/// other node no longer list any of them.
async fn eviction(cluster: &mut Cluster, ttl_ms: u64) -> Result<Vec<Duration>, BenchError> {
    let t = topic("mesh-evict", 0);
    let Some(victim_node) = cluster.nodes.last() else {
        return Err(BenchError::Usage("no node to kill".into()));
    };
    let victim_url = victim_node.url.clone();
    let mut victims = Vec::new();
    for i in 0..VICTIMS {
        let mut c = Client::connect(&victim_url, None, &identity(0x4d, 7, i), 200 + i).await?;
        c.join(t, true).await?;
        victims.push(c);
    }
    let n = cluster.nodes.len();
    let mut probes = Vec::new();
    for (i, node) in cluster.nodes.iter().take(n - 1).enumerate() {
        let mut c = Client::connect(&node.url, None, &identity(0x4d, 8, i as u64), 400 + i as u64).await?;
        while lookup_count(&mut c, t).await? < VICTIMS as usize {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        probes.push(c);
    }
    let killed = Instant::now();
    if let Some(node) = cluster.nodes.last_mut() {
        node.kill();
    }
    eprintln!("mesh: eviction: node {n} killed; waiting up to the TTL ({ttl_ms} ms) and more");
    let mut tasks = Vec::new();
    for mut c in probes {
        tasks.push(tokio::task::spawn_local(async move {
            while lookup_count(&mut c, t).await? > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Ok::<_, BenchError>(killed.elapsed())
        }));
    }
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.map_err(|e| BenchError::Protocol(e.to_string()))??);
    }
    drop(victims);
    Ok(out)
}
