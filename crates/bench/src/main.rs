//! `signal-mesh-bench`: a load generator for `signal-mesh-node` (see `BENCHMARKS.md`).
//!
//! # Layout
//! - [`ws`]: a lean WebSocket client (one buffer each way, batched writes, zero-copy frames).
//! - [`client`]: the edge protocol over it: challenge, authentication, requests, events.
//! - [`node`]: starting, pinning, measuring (`/proc`) and stopping the node process.
//! - [`cluster`]: a mesh of node processes (bootstrap, add a node, HTTP `/ready`).
//! - [`scenarios`]: `capacity`, `relay`, `churn`, `soak`, `mesh`.
//! - [`report`]: the table and the JSON.
//!
//! The generator runs on a current-thread tokio runtime pinned to one core (`--bench-core`, 1 by
//! default) and starts the node pinned to the other (`--node-core`, 0). Every scenario starts a
//! fresh node, measures it and stops it; `--url` targets already running nodes instead (several
//! may be given: clients are spread over them, so cross-node scenarios work once the mesh exists).
//! A watchdog ends the whole run after `--max-seconds`.

mod client;
mod cluster;
mod error;
mod node;
mod report;
mod scenarios;
mod ws;

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::error::BenchError;
use crate::node::{NodeProcess, NodeSpec};
use crate::report::Report;
use crate::ws::WsUrl;

/// Pids of the nodes this process started, for the watchdog.
static STARTED_NODES: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Registers a started node with the watchdog (it is killed if the run overstays).
pub fn track_node(pid: u32) {
    if let Ok(mut pids) = STARTED_NODES.lock() {
        pids.push(pid);
    }
}

/// Forgets a stopped node.
pub fn untrack_node(pid: u32) {
    if let Ok(mut pids) = STARTED_NODES.lock() {
        pids.retain(|p| *p != pid);
    }
}

#[derive(Debug, Parser)]
#[command(name = "signal-mesh-bench", about = "Load generator for signal-mesh-node", version)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Clone, Debug, Args)]
pub struct Global {
    /// The node binary to start (a release build; default $SIGNAL_MESH_NODE_BIN, else
    /// signal-mesh-node next to this binary, else target/release/signal-mesh-node).
    #[arg(long, global = true)]
    node_bin: Option<PathBuf>,
    /// Extra flag for the started node (repeatable), e.g. --node-arg=--outbound-queue-frames=256.
    #[arg(long = "node-arg", global = true, allow_hyphen_values = true)]
    node_args: Vec<String>,
    /// Target an already running node instead of starting one (repeatable; clients are spread
    /// over the URLs). Loopback addresses only.
    #[arg(long = "url", global = true)]
    urls: Vec<String>,
    /// Pid of a --url node, to read its CPU and memory from /proc (repeatable, same order).
    #[arg(long = "node-pid", global = true)]
    node_pids: Vec<u32>,
    /// Core the started node is pinned to.
    #[arg(long, global = true, default_value_t = 0)]
    node_core: usize,
    /// Core the generator pins itself to.
    #[arg(long, global = true, default_value_t = 1)]
    bench_core: usize,
    /// Do not pin anything.
    #[arg(long, global = true)]
    no_pin: bool,
    /// Also write the results as JSON here.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
    /// Where the started node's output goes.
    #[arg(long, global = true, default_value = "target/bench-node.log")]
    node_log: PathBuf,
    /// Spread client connections over this many source addresses 127.0.0.1.. (IPv4 targets).
    /// With one address the kernel's ephemeral port search (`__inet_hash_connect`) took 43 % of
    /// the generator's CPU at 15,000 connections; one address has ~28k ports, so 100k+ clients
    /// need several anyway. 1 lets the kernel choose.
    #[arg(long, global = true, default_value_t = 8)]
    source_ips: u8,
    /// Diagnostic: acknowledge every read at once (TCP_QUICKACK), which hides the ~40 ms stalls
    /// of a node without TCP_NODELAY. Not for reporting figures.
    #[arg(long, global = true)]
    quickack: bool,
    /// Hard limit for the whole run; the watchdog stops the node and exits after it.
    #[arg(long, global = true, default_value_t = 900)]
    max_seconds: u64,
}

#[derive(Clone, Debug, Subcommand)]
enum Scenario {
    /// C idle authenticated clients, `per_topic` per topic: node RSS per client, connect+auth rate.
    Capacity(scenarios::capacity::Opts),
    /// P pairs relaying signals echoed by the partner: throughput, RTT, node CPU per signal.
    Relay(scenarios::relay::Opts),
    /// Clients joining and leaving topics while others look up.
    Churn(scenarios::churn::Opts),
    /// A mesh of node processes over libp2p: mesh join, presence propagation, cross-node round
    /// trip, eviction of a killed node.
    Mesh(scenarios::mesh::Opts),
    /// Many clients for a long time with churn, lookups and signals: node RSS and descriptors
    /// over time (the curve is in the JSON).
    Soak(scenarios::soak::Opts),
    /// capacity, relay (every --pairs value) and churn, each against a fresh node, with defaults.
    All {
        /// Clients for capacity.
        #[arg(long, default_value_t = 19_500)]
        clients: u64,
        /// Pair counts for relay.
        #[arg(long, value_delimiter = ',', default_value = "100,1000")]
        pairs: Vec<u64>,
        /// Seconds per relay and churn run.
        #[arg(long, default_value_t = 10)]
        duration_secs: u64,
    },
}

/// The nodes a scenario talks to.
#[derive(Debug)]
pub struct Targets {
    /// Edge WebSocket URLs.
    pub urls: Vec<WsUrl>,
    /// Pids to measure (may be empty for external nodes).
    pub pids: Vec<u32>,
    /// Nodes started for this scenario (stopped when dropped).
    started: Vec<NodeProcess>,
    /// How the nodes were started, for the report.
    pub command: Option<String>,
    /// Source addresses to spread clients over (empty: let the OS choose).
    pub sources: Vec<std::net::IpAddr>,
}

impl Targets {
    /// Nodes started elsewhere (e.g. a [`cluster::Cluster`]), not measured through `/proc`.
    pub fn external(urls: Vec<WsUrl>) -> Targets {
        Targets { urls, pids: Vec::new(), started: Vec::new(), command: None, sources: Vec::new() }
    }

    /// Node URL for client `i`.
    pub fn url(&self, i: u64) -> &WsUrl {
        // `urls` is never empty (checked at construction).
        &self.urls[(i % self.urls.len() as u64) as usize]
    }

    /// Source address for client `i`.
    pub fn source(&self, i: u64) -> Option<std::net::IpAddr> {
        (!self.sources.is_empty()).then(|| self.sources[(i % self.sources.len() as u64) as usize])
    }

    /// Summed CPU and memory of the measured nodes (None when no pid is known).
    pub fn sample(&self) -> Result<Option<node::ProcSample>, BenchError> {
        if self.pids.is_empty() {
            return Ok(None);
        }
        let mut total = node::ProcSample::default();
        for pid in &self.pids {
            let s = node::sample(Some(*pid))?;
            total.cpu_us += s.cpu_us;
            total.rss_kib += s.rss_kib;
            total.hwm_kib += s.hwm_kib;
            total.threads += s.threads;
        }
        Ok(Some(total))
    }

    /// Whether every started node is still alive.
    pub fn alive(&mut self) -> bool {
        self.started.iter_mut().all(NodeProcess::is_running)
    }
}

impl Drop for Targets {
    fn drop(&mut self) {
        for n in &mut self.started {
            n.stop();
        }
        if let Ok(mut pids) = STARTED_NODES.lock() {
            pids.retain(|p| !self.started.iter().any(|n| n.pid == *p));
        }
    }
}

/// Starts a node (or uses the --url ones) sized for `max_connections` clients.
pub fn targets(g: &Global, max_connections: u64) -> Result<Targets, BenchError> {
    let ipv4_targets = g.urls.iter().all(|u| !u.contains('['));
    let sources: Vec<std::net::IpAddr> = if g.source_ips > 1 && ipv4_targets {
        (1..=g.source_ips).map(|x| std::net::IpAddr::from([127, 0, 0, x])).collect()
    } else {
        Vec::new()
    };
    if !g.urls.is_empty() {
        let urls = g.urls.iter().map(|u| WsUrl::parse(u)).collect::<Result<Vec<_>, _>>()?;
        return Ok(Targets { urls, pids: g.node_pids.clone(), started: Vec::new(), command: None, sources });
    }
    let spec = NodeSpec {
        binary: g.node_bin.clone().unwrap_or_else(node::default_binary),
        core: (!g.no_pin).then_some(g.node_core),
        extra_args: g.node_args.clone(),
        log: g.node_log.clone(),
    };
    let n = NodeProcess::start(&spec, max_connections + 100)?;
    track_node(n.pid);
    Ok(Targets {
        urls: vec![n.url.clone()],
        pids: vec![n.pid],
        command: Some(n.command.clone()),
        started: vec![n],
        sources,
    })
}

/// Starts `nodes` node processes joined as a mesh over libp2p on 127.0.0.1 (a [`cluster::Cluster`],
/// each node pinned to `--node-core`, so together they get one core), waits until each is
/// serving, and targets them all: client `i` goes to node `i % nodes`, and CPU and memory are
/// their sums.
pub fn mesh_targets(
    g: &Global,
    max_connections: u64,
    nodes: usize,
    quic: bool,
) -> Result<Targets, BenchError> {
    if !g.urls.is_empty() {
        return Err(BenchError::Usage("a scenario that starts a mesh does not take --url".into()));
    }
    let spec = cluster::ClusterSpec {
        quic,
        ..cluster::ClusterSpec::from_global(g, "bench-relay-mesh-node", &[], max_connections + 100)
    };
    let started = cluster::Cluster::start(spec, nodes)?.into_nodes();
    let sources = if g.source_ips <= 1 {
        Vec::new()
    } else {
        (1..=g.source_ips).map(|x| std::net::IpAddr::from([127, 0, 0, x])).collect()
    };
    Ok(Targets {
        urls: started.iter().map(|n| n.url.clone()).collect(),
        pids: started.iter().map(|n| n.pid).collect(),
        command: started.first().map(|n| n.command.clone()),
        started,
        sources,
    })
}

fn watchdog(limit: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        eprintln!("signal-mesh-bench: watchdog: the run exceeded {limit:?}; stopping the node and exiting");
        if let Ok(pids) = STARTED_NODES.lock() {
            for pid in pids.iter() {
                if let Some(p) = i32::try_from(*pid).ok().and_then(rustix::process::Pid::from_raw) {
                    let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
                }
            }
        }
        std::process::exit(3);
    });
}

fn run(cli: Cli) -> Result<Vec<Report>, BenchError> {
    let g = &cli.global;
    let nofile = node::raise_nofile()?;
    if !g.no_pin {
        node::pin_self(g.bench_core)?;
    }
    watchdog(Duration::from_secs(g.max_seconds));
    ws::QUICKACK.store(g.quickack, std::sync::atomic::Ordering::Relaxed);
    let mut reports = Vec::new();
    match &cli.scenario {
        Scenario::Capacity(o) => reports.push(scenarios::capacity::run(g, o, nofile)?),
        Scenario::Relay(o) => {
            for &ack in &o.ack {
                for &p in &o.pairs {
                    reports.extend(scenarios::relay::run(g, o, p, ack)?);
                }
            }
        }
        Scenario::Churn(o) => reports.push(scenarios::churn::run(g, o)?),
        Scenario::Mesh(o) => reports.push(scenarios::mesh::run(g, o)?),
        Scenario::Soak(o) => reports.push(scenarios::soak::run(g, o)?),
        Scenario::All { clients, pairs, duration_secs } => {
            let cap = scenarios::capacity::Opts { clients: *clients, ..Default::default() };
            reports.push(scenarios::capacity::run(g, &cap, nofile)?);
            let relay = scenarios::relay::Opts { duration_secs: *duration_secs, ..Default::default() };
            for &p in pairs {
                reports.extend(scenarios::relay::run(g, &relay, p, scenarios::relay::Ack::Always)?);
            }
            let churn = scenarios::churn::Opts { duration_secs: *duration_secs, ..Default::default() };
            reports.push(scenarios::churn::run(g, &churn)?);
        }
    }
    Ok(reports)
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let json_path = cli.global.json.clone();
    let argv: Vec<String> = std::env::args().collect();
    match run(cli) {
        Ok(reports) => {
            for r in &reports {
                r.print();
            }
            if let Some(path) = json_path {
                let doc = serde_json::json!({
                    "command": argv.join(" "),
                    "machine": node::machine(),
                    "unix_time": std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0),
                    "scenarios": reports.iter().map(Report::to_json).collect::<Vec<_>>(),
                });
                let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
                if let Err(e) = std::fs::write(&path, text + "\n") {
                    eprintln!("signal-mesh-bench: cannot write {}: {e}", path.display());
                    return std::process::ExitCode::FAILURE;
                }
                println!("\nJSON written to {}", path.display());
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("signal-mesh-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
