//! The scenarios, and what they share: the runtime, identities, connecting many clients.

pub mod capacity;
pub mod churn;
pub mod mesh;
pub mod relay;
pub mod soak;

use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use signal_mesh_proto::TopicId;
use signal_mesh_proto::auth::Identity;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::client::Client;
use crate::error::BenchError;
use crate::node::{self, ProcSample};
use crate::report::{self, Report};
use crate::{Global, Targets};

/// Generator CPU share above which the report says the generator, not the node, was the limit.
const SATURATED_SHARE: f64 = 0.90;

/// Runs `f` on a current-thread runtime (this thread, on the generator's core).
pub fn block_on<F: Future>(f: F) -> Result<F::Output, BenchError> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let local = tokio::task::LocalSet::new();
    Ok(local.block_on(&rt, f))
}

/// A deterministic identity: scenario `tag`, role `role`, index `i`.
pub fn identity(tag: u8, role: u8, i: u64) -> Identity {
    let mut seed = [0u8; 32];
    seed[0] = tag;
    seed[1] = role;
    seed[8..16].copy_from_slice(&i.to_le_bytes());
    seed[31] = 0x5a;
    Identity::from_seed(seed)
}

/// Topic `i` of a scenario.
pub fn topic(tag: &str, i: u64) -> TopicId {
    // Short names, far below the topic-name limit.
    TopicId::from_name(&format!("bench/{tag}/{i}")).unwrap_or_else(|_| TopicId::from_array([0; 32]))
}

/// Nanoseconds since the process's benchmark epoch, for timestamps carried in payloads.
pub fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// What connecting many clients produced.
#[derive(Debug)]
pub struct Connected {
    /// The clients, in index order (None where connecting failed).
    pub clients: Vec<Option<Client>>,
    /// First errors, for the report.
    pub errors: Vec<String>,
    /// Connect + authenticate latency.
    pub auth_latency: Histogram<u64>,
    /// Wall time of the whole phase.
    pub elapsed: Duration,
}

/// Connects `n` clients with at most `concurrency` handshakes at once; client `i` uses
/// `identity_of(i)`, connects to `targets.url(url_of(i))` and then runs `setup` (e.g. a join).
pub async fn connect_many<S, Fut>(
    targets: &Targets,
    n: u64,
    concurrency: usize,
    timeout: Duration,
    identity_of: impl Fn(u64) -> Identity,
    url_of: impl Fn(u64) -> u64,
    setup: S,
) -> Connected
where
    S: Fn(u64, Client) -> Fut + Clone + 'static,
    Fut: Future<Output = Result<Client, BenchError>> + 'static,
{
    let start = Instant::now();
    let sem = Rc::new(Semaphore::new(concurrency.max(1)));
    let hist = Rc::new(RefCell::new(report::new_histogram()));
    let mut handles: Vec<JoinHandle<Result<Client, BenchError>>> = Vec::with_capacity(n as usize);
    for i in 0..n {
        let sem = sem.clone();
        let hist = hist.clone();
        let url = targets.url(url_of(i)).clone();
        let source = targets.source(i);
        let id = identity_of(i);
        let setup = setup.clone();
        handles.push(tokio::task::spawn_local(async move {
            let _permit = sem.acquire().await.map_err(|_| BenchError::Timeout("semaphore closed"))?;
            let t = Instant::now();
            let c =
                Client::connect(&url, source, &id, i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xA5A5).await?;
            report::record(&mut hist.borrow_mut(), t.elapsed());
            setup(i, c).await
        }));
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let mut clients = Vec::with_capacity(n as usize);
    let mut errors = Vec::new();
    for h in handles {
        let r = tokio::time::timeout_at(deadline, h).await;
        match r {
            Ok(Ok(Ok(c))) => clients.push(Some(c)),
            Ok(Ok(Err(e))) => {
                if errors.len() < 5 {
                    errors.push(e.to_string());
                }
                clients.push(None);
            }
            Ok(Err(join)) => {
                if errors.len() < 5 {
                    errors.push(format!("task failed: {join}"));
                }
                clients.push(None);
            }
            Err(_) => {
                if errors.len() < 5 {
                    errors.push(format!("setup did not finish within {timeout:?}"));
                }
                clients.push(None);
            }
        }
    }
    let auth_latency = hist.borrow().clone();
    Connected { clients, errors, auth_latency, elapsed: start.elapsed() }
}

/// [`connect_many`] for clients with nothing to set up: client `i` uses `identity(tag, role, i)`
/// and connects to `targets.url(url_of(i))`.
pub async fn connect_plain(
    targets: &Targets,
    n: u64,
    concurrency: usize,
    timeout: Duration,
    (tag, role): (u8, u8),
    url_of: impl Fn(u64) -> u64,
) -> Connected {
    connect_many(
        targets,
        n,
        concurrency,
        timeout,
        |i| identity(tag, role, i),
        url_of,
        |_, c| async move { Ok(c) },
    )
    .await
}

/// CPU and memory of the nodes and of the generator at one instant.
#[derive(Clone, Copy, Debug)]
pub struct Snapshot {
    /// When.
    pub at: Instant,
    /// The nodes (None for unmeasured external nodes).
    pub node: Option<ProcSample>,
    /// This process.
    pub me: ProcSample,
}

impl Snapshot {
    /// Samples now.
    pub fn take(targets: &Targets) -> Result<Snapshot, BenchError> {
        Ok(Snapshot { at: Instant::now(), node: targets.sample()?, me: node::sample(None)? })
    }
}

/// Node CPU (µs) between two snapshots, if measured.
pub fn node_cpu_us(a: &Snapshot, b: &Snapshot) -> Option<u64> {
    Some(b.node?.cpu_us.saturating_sub(a.node?.cpu_us))
}

/// Adds the CPU-share rows and the saturation note.
pub fn cpu_rows(r: &mut Report, a: &Snapshot, b: &Snapshot) {
    let wall_us = b.at.duration_since(a.at).as_micros().max(1) as f64;
    let me = b.me.cpu_us.saturating_sub(a.me.cpu_us) as f64 / wall_us;
    r.row("generator CPU (share of its core)", format!("{:.0} %", me * 100.0));
    if let Some(n) = node_cpu_us(a, b) {
        r.row("node CPU (share of its core)", format!("{:.0} %", n as f64 / wall_us * 100.0));
    }
    if me >= SATURATED_SHARE {
        r.notes.push(format!(
            "the generator's core was saturated ({:.0} % busy): throughput and latency are bounded by the \
             generator; node CPU per operation stays meaningful",
            me * 100.0
        ));
    }
    r.json["generator_cpu_share"] = serde_json::json!(me);
    if let Some(n) = node_cpu_us(a, b) {
        r.json["node_cpu_share"] = serde_json::json!(n as f64 / wall_us);
    }
}

/// Notes about the environment for every report.
pub fn common(r: &mut Report, g: &Global, targets: &Targets) {
    if let Some(cmd) = &targets.command {
        r.json["node_command"] = serde_json::json!(cmd);
    }
    r.json["urls"] = serde_json::json!(targets.urls.iter().map(|u| u.to_string()).collect::<Vec<_>>());
    r.json["pinned"] = serde_json::json!(!g.no_pin);
    if targets.pids.is_empty() {
        r.notes.push("external node(s) without --node-pid: node CPU and memory not measured".into());
    }
}
