//! capacity: C idle authenticated clients, `per_topic` to a topic; node RSS per client and the
//! connect+auth rate.

use std::time::{Duration, Instant};

use clap::Args;
use hdrhistogram::Histogram;
use serde_json::json;
use signal_mesh_proto::{ClientMessage, RequestBody, ResponseBody, ServerMessage};

use super::{Snapshot, block_on, common, connect_many, cpu_rows, identity, topic};
use crate::error::BenchError;
use crate::report::{self, Report, fmt_count};
use crate::{Global, targets};

/// Target from the issue: node RSS per idle client.
const TARGET_RSS_PER_CLIENT_BYTES: f64 = 4096.0;

/// Options of the capacity scenario.
#[derive(Clone, Debug, Args)]
pub struct Opts {
    /// Idle clients to hold (each is one TCP connection on both sides: the open-file limit bounds it).
    #[arg(long, default_value_t = 19_500)]
    pub clients: u64,
    /// Clients per topic.
    #[arg(long, default_value_t = 10)]
    pub per_topic: u64,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 128)]
    pub concurrency: usize,
    /// Seconds to wait after the last client joined before reading the node's RSS.
    #[arg(long, default_value_t = 2)]
    pub settle_secs: u64,
    /// Limit for connecting everyone.
    #[arg(long, default_value_t = 180)]
    pub setup_timeout_secs: u64,
}

impl Default for Opts {
    fn default() -> Self {
        Opts { clients: 19_500, per_topic: 10, concurrency: 128, settle_secs: 2, setup_timeout_secs: 180 }
    }
}

/// What the async part of a run measured, by name: several fields share a type (two snapshots, two
/// durations), so a positional tuple could swap them unnoticed.
struct Held {
    errors: Vec<String>,
    auth_latency: Histogram<u64>,
    elapsed: Duration,
    after_connect: Result<Snapshot, BenchError>,
    settled: Result<Snapshot, BenchError>,
    clients: u64,
    lookup_peers: Option<usize>,
    alive: u64,
    ping_elapsed: Duration,
    limits: Option<String>,
}

/// Runs the scenario against a fresh node.
pub fn run(g: &Global, o: &Opts, nofile: u64) -> Result<Report, BenchError> {
    // Each client is one file descriptor here; keep some for the runtime and the node's pipe.
    if o.clients + 64 > nofile {
        return Err(BenchError::Usage(format!(
            "{} clients need more than the open-file limit of {nofile}; see BENCHMARKS.md for the OS tuning",
            o.clients
        )));
    }
    let mut t = targets(g, o.clients)?;
    let mut r = Report::new(format!("capacity C={}", fmt_count(o.clients)));
    common(&mut r, g, &t);
    // Let the node finish starting before the baseline.
    std::thread::sleep(Duration::from_millis(300));
    let baseline = Snapshot::take(&t)?;
    let per_topic = o.per_topic.max(1);
    let result = block_on(async {
        let connected = connect_many(
            &t,
            o.clients,
            o.concurrency,
            Duration::from_secs(o.setup_timeout_secs),
            |i| identity(b'C', 0, i),
            |i| i,
            move |i, mut c| async move {
                c.join(topic("capacity", i / per_topic), true).await?;
                Ok(c)
            },
        )
        .await;
        let after_connect = Snapshot::take(&t);
        tokio::time::sleep(Duration::from_secs(o.settle_secs)).await;
        let settled = Snapshot::take(&t);
        let mut held: Vec<_> = connected.clients.into_iter().flatten().collect();
        let clients = held.len() as u64;
        // Check that the node really holds them: one lookup, then a ping to every client.
        let mut lookup_peers = None;
        let limits = held.first().map(|c| format!("{:?}", c.limits));
        if let Some(c) = held.first_mut()
            && let Ok(ResponseBody::Lookup { peers, .. }) =
                c.request(RequestBody::Lookup { topic: topic("capacity", 0), limit: 0, cursor: None }).await
        {
            lookup_peers = Some(peers.len());
        }
        let ping_start = Instant::now();
        let mut alive = 0u64;
        for chunk in held.chunks_mut(512) {
            for c in chunk.iter_mut() {
                c.queue(ClientMessage::Ping(7));
                let _ = c.flush().await;
            }
            for c in chunk.iter_mut() {
                let pong = tokio::time::timeout(Duration::from_secs(10), async {
                    loop {
                        match c.next().await {
                            Ok(ServerMessage::Pong(7)) => return true,
                            Ok(_) => {}
                            Err(_) => return false,
                        }
                    }
                })
                .await;
                if pong == Ok(true) {
                    alive += 1;
                }
            }
        }
        let ping_elapsed = ping_start.elapsed();
        for c in held {
            c.close().await;
        }
        Held {
            errors: connected.errors,
            auth_latency: connected.auth_latency,
            elapsed: connected.elapsed,
            after_connect,
            settled,
            clients,
            lookup_peers,
            alive,
            ping_elapsed,
            limits,
        }
    })?;
    let Held {
        errors,
        auth_latency,
        elapsed,
        after_connect,
        settled,
        clients,
        lookup_peers,
        alive,
        ping_elapsed,
        limits,
    } = result;
    let after_connect = after_connect?;
    let settled = settled?;
    let node_alive = t.alive();

    r.row("clients requested", fmt_count(o.clients));
    r.row("clients connected, authenticated and joined", fmt_count(clients));
    r.row("clients answering a ping afterwards", fmt_count(alive));
    let rate = clients as f64 / elapsed.as_secs_f64().max(1e-9);
    r.row("connect+auth+join rate", format!("{rate:.0} clients/s ({:.1} s)", elapsed.as_secs_f64()));
    r.row("connect+auth latency p50 / p99 / p999", report::fmt_quantiles(&auth_latency));
    r.json["clients"] = json!(clients);
    r.json["clients_requested"] = json!(o.clients);
    r.json["per_topic"] = json!(per_topic);
    r.json["alive_after"] = json!(alive);
    r.json["ping_all_secs"] = json!(ping_elapsed.as_secs_f64());
    r.json["connect_rate_per_s"] = json!(rate);
    r.json["connect_auth_latency"] = report::quantiles_us(&auth_latency);
    r.json["lookup_topic0_peers"] = json!(lookup_peers);
    r.json["node_limits"] = json!(limits);
    if let (Some(b), Some(s)) = (baseline.node, settled.node) {
        let delta_kib = s.rss_kib.saturating_sub(b.rss_kib);
        let per_client = delta_kib as f64 * 1024.0 / clients.max(1) as f64;
        r.row("node RSS baseline", format!("{:.1} MiB", b.rss_kib as f64 / 1024.0));
        r.row("node RSS with all clients", format!("{:.1} MiB", s.rss_kib as f64 / 1024.0));
        r.row("node VmHWM (peak)", format!("{:.1} MiB", s.hwm_kib as f64 / 1024.0));
        r.target(
            "node RSS per client",
            format!("{:.0} B", per_client),
            "<= 4096 B",
            per_client <= TARGET_RSS_PER_CLIENT_BYTES && clients > 0,
        );
        let peak_per_client = s.hwm_kib.saturating_sub(b.rss_kib) as f64 * 1024.0 / clients.max(1) as f64;
        r.row("node peak (VmHWM) per client", format!("{peak_per_client:.0} B"));
        r.row("node threads", s.threads.to_string());
        r.json["node_baseline"] = json!({ "rss_kib": b.rss_kib, "hwm_kib": b.hwm_kib });
        r.json["node_settled"] = json!({ "rss_kib": s.rss_kib, "hwm_kib": s.hwm_kib, "threads": s.threads });
        r.json["rss_per_client_bytes"] = json!(per_client);
        r.json["hwm_per_client_bytes"] = json!(peak_per_client);
        if let Some(cpu) = super::node_cpu_us(&baseline, &after_connect) {
            let us = cpu as f64 / clients.max(1) as f64;
            r.row("node CPU per connect+auth+join", format!("{us:.0} µs"));
            r.json["node_cpu_us_per_client_setup"] = json!(us);
        }
    }
    cpu_rows(&mut r, &baseline, &after_connect);
    if lookup_peers != Some(per_topic.min(clients) as usize) {
        r.notes.push(format!("lookup of topic 0 returned {lookup_peers:?} peers, expected {per_topic}"));
    }
    if clients < o.clients {
        r.notes.push(format!("{} clients failed to connect; first errors: {errors:?}", o.clients - clients));
    }
    if alive < clients {
        r.notes.push(format!("{} connected clients did not answer a ping", clients - alive));
    }
    if !node_alive {
        r.notes.push("the node exited during the run".into());
    }
    Ok(r)
}
