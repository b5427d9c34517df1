//! relay: P pairs; A keeps `in_flight` signals of `payload_bytes` outstanding to its partner B,
//! B echoes each back. Throughput, round-trip time, node CPU per relayed signal, zero lost.
//!
//! A signal's payload starts with its send time (ns) and its sequence number, so the RTT needs
//! no bookkeeping and A checks that echoes arrive in order (which needs both A->B and B->A order).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use hdrhistogram::Histogram;
use serde_json::json;
use signal_mesh_proto::{AckMode, ErrorCode, Event, PeerId, RequestBody, ResponseBody, ServerMessage};

use super::{Snapshot, block_on, common, connect_plain, cpu_rows, identity, now_ns};
use crate::client::Client;
use crate::error::BenchError;
use crate::report::{self, Report, fmt_count};
use crate::{Global, mesh_targets, targets};

/// Target from the issue: node CPU per relayed signal.
const TARGET_CPU_US_PER_SIGNAL: f64 = 3.0;

/// Options of the relay scenario.
#[derive(Clone, Debug, Args)]
pub struct Opts {
    /// Pair counts; each gets its own run against a fresh node.
    #[arg(long, value_delimiter = ',', default_value = "100,1000")]
    pub pairs: Vec<u64>,
    /// Signal payload size (at least 16).
    #[arg(long, default_value_t = 1024)]
    pub payload_bytes: usize,
    /// Signals outstanding per pair.
    #[arg(long, default_value_t = 4)]
    pub in_flight: u64,
    /// Seconds of sending.
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,
    /// Seconds of sending whose RTTs are not recorded (warm-up).
    #[arg(long, default_value_t = 1)]
    pub warmup_secs: u64,
    /// Seconds allowed for the last echoes after sending stops.
    #[arg(long, default_value_t = 5)]
    pub drain_secs: u64,
    /// Handshakes in flight at once during setup.
    #[arg(long, default_value_t = 128)]
    pub concurrency: usize,
    /// Acknowledgement modes to run, each against a fresh node: `always` (an `Ack` per signal,
    /// as clients before `AckMode` did) and/or `failures-only` (`SendSignal.ack`; no response on
    /// delivery, so one frame out of the node per signal instead of two).
    #[arg(long, value_delimiter = ',', default_value = "always")]
    pub ack: Vec<Ack>,
    /// Cross-node relay: after each single-node run, the same run against a mesh of two node
    /// processes (real libp2p on 127.0.0.1, both pinned to --node-core) with the two ends of
    /// every pair on different nodes; node CPU is the two nodes' sum, compared with the
    /// single-node figure of the same invocation.
    #[arg(long)]
    pub cross_node: bool,
    /// With --cross-node: join the two nodes over QUIC instead of TCP + Yamux (Yamux 0.13 can
    /// deadlock when both nodes push signals at each other: see BENCHMARKS.md, issue 11).
    #[arg(long)]
    pub quic: bool,
}

/// Target from issue 11: node CPU per signal of the two nodes together, against one node.
const TARGET_CROSS_NODE_RATIO: f64 = 2.0;

/// `--ack`: which responses the generator's signals ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Ack {
    /// `AckMode::Always`.
    Always,
    /// `AckMode::FailuresOnly`.
    FailuresOnly,
}

impl Ack {
    /// The protocol's mode.
    pub fn mode(self) -> AckMode {
        match self {
            Ack::Always => AckMode::Always,
            Ack::FailuresOnly => AckMode::FailuresOnly,
        }
    }

    /// For titles and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Ack::Always => "always",
            Ack::FailuresOnly => "failures-only",
        }
    }
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            pairs: vec![100, 1000],
            payload_bytes: 1024,
            in_flight: 4,
            duration_secs: 10,
            warmup_secs: 1,
            drain_secs: 5,
            concurrency: 128,
            ack: vec![Ack::Always],
            cross_node: false,
            quic: false,
        }
    }
}

#[derive(Debug)]
struct Stats {
    sent: u64,
    echoed: u64,
    b_events: u64,
    b_echo_sent: u64,
    out_of_order: u64,
    duplicated: u64,
    errors: BTreeMap<String, u64>,
    rtt: Histogram<u64>,
    a_done: u64,
}

fn bump(map: &mut BTreeMap<String, u64>, code: ErrorCode) {
    *map.entry(format!("{code:?}")).or_default() += 1;
}

fn signal_payload(size: usize, seq: u64) -> Bytes {
    let mut p = vec![0u8; size.max(16)];
    p[..8].copy_from_slice(&now_ns().to_le_bytes());
    p[8..16].copy_from_slice(&seq.to_le_bytes());
    Bytes::from(p)
}

/// Queues signal number `*seq` (`payload_bytes` long, stamped with the time and `*seq`) to
/// `partner`, and advances `*seq`.
fn queue_signal(c: &mut Client, partner: PeerId, payload_bytes: usize, ack: AckMode, seq: &mut u64) {
    c.queue_request(RequestBody::Signal { to: partner, payload: signal_payload(payload_bytes, *seq), ack });
    *seq += 1;
}

fn read_u64(b: &[u8], at: usize) -> Option<u64> {
    let mut w = [0u8; 8];
    w.copy_from_slice(b.get(at..at + 8)?);
    Some(u64::from_le_bytes(w))
}

async fn run_a(
    mut c: Client,
    partner: PeerId,
    o: Opts,
    record_from_ns: u64,
    stop_sending: Instant,
    stats: Rc<RefCell<Stats>>,
) -> Result<(), BenchError> {
    let ack = o.ack.first().copied().unwrap_or(Ack::Always).mode();
    let mut seq = 0u64;
    let mut expected = 0u64;
    let mut outstanding = 0u64;
    for _ in 0..o.in_flight {
        queue_signal(&mut c, partner, o.payload_bytes, ack, &mut seq);
        outstanding += 1;
    }
    stats.borrow_mut().sent += o.in_flight;
    while outstanding > 0 {
        match c.next().await? {
            ServerMessage::Event(Event::Signal { payload, .. }) => {
                let now = now_ns();
                let (Some(ts), Some(sq)) = (read_u64(&payload, 0), read_u64(&payload, 8)) else {
                    return Err(BenchError::Protocol("echo shorter than 16 bytes".into()));
                };
                outstanding -= 1;
                let mut s = stats.borrow_mut();
                s.echoed += 1;
                if sq < expected {
                    s.duplicated += 1;
                } else if sq != expected {
                    s.out_of_order += 1;
                }
                expected = sq + 1;
                if ts >= record_from_ns {
                    s.rtt.saturating_record(now.saturating_sub(ts).max(1));
                }
                if Instant::now() < stop_sending {
                    queue_signal(&mut c, partner, o.payload_bytes, ack, &mut seq);
                    outstanding += 1;
                    s.sent += 1;
                }
            }
            ServerMessage::Response { body: ResponseBody::Error { code, .. }, .. } => {
                // This signal will not come back.
                outstanding = outstanding.saturating_sub(1);
                bump(&mut stats.borrow_mut().errors, code);
            }
            ServerMessage::Goodbye { code, reason } => {
                return Err(BenchError::Node { code, message: reason });
            }
            _ => {}
        }
    }
    stats.borrow_mut().a_done += 1;
    c.close().await;
    Ok(())
}

async fn run_b(mut c: Client, ack: AckMode, stats: Rc<RefCell<Stats>>) -> Result<(), BenchError> {
    loop {
        match c.next().await? {
            ServerMessage::Event(Event::Signal { from, payload }) => {
                // Echo the very bytes back: no copy.
                c.queue_request(RequestBody::Signal { to: from, payload, ack });
                let mut s = stats.borrow_mut();
                s.b_events += 1;
                s.b_echo_sent += 1;
            }
            ServerMessage::Response { body: ResponseBody::Error { code, .. }, .. } => {
                bump(&mut stats.borrow_mut().errors, code);
            }
            ServerMessage::Goodbye { code, reason } => {
                return Err(BenchError::Node { code, message: reason });
            }
            _ => {}
        }
    }
}

/// Runs the scenario with `pairs` pairs in acknowledgement mode `ack` against a fresh node (the
/// --url nodes, if given), then, with `--cross-node`, against a fresh two-node mesh.
pub fn run(g: &Global, o: &Opts, pairs: u64, ack: Ack) -> Result<Vec<Report>, BenchError> {
    if o.payload_bytes < 16 {
        return Err(BenchError::Usage("--payload-bytes must be at least 16".into()));
    }
    let single = measure(g, o, pairs, ack, targets(g, pairs * 2)?, "")?;
    if !o.cross_node {
        return Ok(vec![single]);
    }
    let variant = if o.quic { ", cross-node: 2 nodes, QUIC" } else { ", cross-node: 2 nodes, TCP" };
    let mut cross = measure(g, o, pairs, ack, mesh_targets(g, pairs * 2, 2, o.quic)?, variant)?;
    let one = single.json["node_cpu_us_per_signal"].as_f64();
    let two = cross.json["node_cpu_us_per_signal"].as_f64();
    if let (Some(one), Some(two)) = (one, two) {
        let ratio = two / one.max(1e-9);
        cross.row("single-node CPU per relayed signal (same invocation)", format!("{one:.2} µs"));
        cross.target(
            "cross-node / single-node CPU per signal",
            format!("{ratio:.2}×"),
            "<= 2×",
            ratio <= TARGET_CROSS_NODE_RATIO,
        );
        cross.json["single_node_cpu_us_per_signal"] = json!(one);
        cross.json["cross_node_ratio"] = json!(ratio);
    }
    Ok(vec![single, cross])
}

/// Waits until every node knows the peers of every other node: a sentinel client connects last
/// to each node, and a probe on every other node signals it until it is found (presence deltas
/// of one node are applied in order, so the others' peers are known by then).
async fn await_presence(t: &crate::Targets) -> Result<(), BenchError> {
    let n = t.urls.len() as u64;
    if n < 2 {
        return Ok(());
    }
    let mut sentinels = Vec::new();
    for j in 0..n {
        sentinels.push(Client::connect(t.url(j), None, &identity(b'R', b'S', j), 0x5e57 + j).await?);
    }
    for k in 0..n {
        let mut probe = Client::connect(t.url(k), None, &identity(b'R', b'P', k), 0x960b + k).await?;
        for j in (0..n).filter(|j| *j != k) {
            let to = identity(b'R', b'S', j).peer_id();
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let body =
                    RequestBody::Signal { to, payload: Bytes::from_static(b"probe"), ack: AckMode::Always };
                if probe.request(body).await? == ResponseBody::Ok {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(BenchError::Timeout("presence of the other node's clients"));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        probe.close().await;
    }
    for s in sentinels {
        s.close().await;
    }
    Ok(())
}

fn measure(
    g: &Global,
    o: &Opts,
    pairs: u64,
    ack: Ack,
    mut t: crate::Targets,
    variant: &str,
) -> Result<Report, BenchError> {
    let mut r = Report::new(format!(
        "relay P={} ({} B, {} in flight, {} s, acks {}{variant})",
        fmt_count(pairs),
        o.payload_bytes,
        o.in_flight,
        o.duration_secs,
        ack.name()
    ));
    r.json["ack"] = json!(ack.name());
    common(&mut r, g, &t);
    let stats = Rc::new(RefCell::new(Stats {
        sent: 0,
        echoed: 0,
        b_events: 0,
        b_echo_sent: 0,
        out_of_order: 0,
        duplicated: 0,
        errors: BTreeMap::new(),
        rtt: report::new_histogram(),
        a_done: 0,
    }));
    // run_a reads the mode from the first entry.
    let o2 = Opts { ack: vec![ack], ..o.clone() };
    let outcome = block_on(async {
        // B (the echoers) first, so every A's partner exists; B_i is on the node after A_i's.
        let timeout = Duration::from_secs(120);
        let b = connect_plain(&t, pairs, o.concurrency, timeout, (b'R', b'B'), |i| i + 1).await;
        let a = connect_plain(&t, pairs, o.concurrency, timeout, (b'R', b'A'), |i| i).await;
        let mut errors = b.errors.clone();
        errors.extend(a.errors.iter().cloned());
        if let Err(e) = await_presence(&t).await {
            errors.push(e.to_string());
        }
        let setup = b.elapsed + a.elapsed;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let start = Snapshot::take(&t);
        let begin = Instant::now();
        let stop_sending = begin + Duration::from_secs(o2.duration_secs);
        let record_from_ns = now_ns() + o2.warmup_secs * 1_000_000_000;
        let mut b_tasks = Vec::new();
        for c in b.clients.into_iter().flatten() {
            b_tasks.push(tokio::task::spawn_local(run_b(c, ack.mode(), stats.clone())));
        }
        let mut a_tasks = Vec::new();
        let mut pairs_running = 0u64;
        for (i, c) in a.clients.into_iter().enumerate() {
            let Some(c) = c else { continue };
            let partner = identity(b'R', b'B', i as u64).peer_id();
            pairs_running += 1;
            a_tasks.push(tokio::task::spawn_local(run_a(
                c,
                partner,
                o2.clone(),
                record_from_ns,
                stop_sending,
                stats.clone(),
            )));
        }
        let deadline = tokio::time::Instant::from_std(stop_sending + Duration::from_secs(o2.drain_secs));
        let mut a_errors = Vec::new();
        for h in a_tasks {
            match tokio::time::timeout_at(deadline, h).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => a_errors.push(e.to_string()),
                Ok(Err(e)) => a_errors.push(e.to_string()),
                Err(_) => {
                    a_errors.push("pair still had signals outstanding at the drain deadline".into());
                    break;
                }
            }
        }
        let elapsed = begin.elapsed();
        let end = Snapshot::take(&t);
        for h in &b_tasks {
            h.abort();
        }
        (start, end, elapsed, setup, errors, a_errors, pairs_running)
    })?;
    let (start, end, elapsed, setup, setup_errors, a_errors, pairs_running) = outcome;
    let (start, end) = (start?, end?);
    let s = stats.borrow();
    let relayed = s.echoed + s.b_events;
    let lost = s.sent.saturating_sub(s.echoed);
    let secs = elapsed.as_secs_f64().max(1e-9);

    r.row("pairs running", fmt_count(pairs_running));
    r.row("setup (connect+auth of all clients)", format!("{:.2} s", setup.as_secs_f64()));
    r.row("signals relayed (both directions)", fmt_count(relayed));
    r.row("throughput", format!("{:.0} signals/s", relayed as f64 / secs));
    r.row("round trips", format!("{:.0} /s", s.echoed as f64 / secs));
    r.row("RTT p50 / p99 / p999", report::fmt_quantiles(&s.rtt));
    r.target("lost (sent - echoed)", fmt_count(lost), "0", lost == 0 && s.errors.is_empty());
    r.row(
        "out-of-order / duplicated echoes",
        format!("{} / {}", fmt_count(s.out_of_order), fmt_count(s.duplicated)),
    );
    let cpu = super::node_cpu_us(&start, &end);
    if let Some(cpu) = cpu {
        let per = cpu as f64 / relayed.max(1) as f64;
        r.target(
            "node CPU per relayed signal",
            format!("{per:.2} µs"),
            "<= 3 µs",
            per <= TARGET_CPU_US_PER_SIGNAL,
        );
        r.json["node_cpu_us_per_signal"] = json!(per);
        r.json["node_cpu_us"] = json!(cpu);
    }
    if let (Some(a), Some(b)) = (start.node, end.node) {
        r.row(
            "node RSS before / after",
            format!("{:.1} / {:.1} MiB", a.rss_kib as f64 / 1024.0, b.rss_kib as f64 / 1024.0),
        );
        r.json["node_rss_kib"] = json!({ "before": a.rss_kib, "after": b.rss_kib, "hwm": b.hwm_kib });
    }
    cpu_rows(&mut r, &start, &end);
    let me_us = end.me.cpu_us.saturating_sub(start.me.cpu_us) as f64;
    r.row("generator CPU per relayed signal", format!("{:.2} µs", me_us / relayed.max(1) as f64));
    r.json["pairs"] = json!(pairs);
    r.json["pairs_running"] = json!(pairs_running);
    r.json["payload_bytes"] = json!(o.payload_bytes);
    r.json["in_flight"] = json!(o.in_flight);
    r.json["duration_secs"] = json!(o.duration_secs);
    r.json["elapsed_secs"] = json!(secs);
    r.json["sent"] = json!(s.sent);
    r.json["echoed"] = json!(s.echoed);
    r.json["b_events"] = json!(s.b_events);
    r.json["relayed"] = json!(relayed);
    r.json["lost"] = json!(lost);
    r.json["out_of_order"] = json!(s.out_of_order);
    r.json["duplicated"] = json!(s.duplicated);
    r.json["errors"] = json!(s.errors);
    r.json["throughput_signals_per_s"] = json!(relayed as f64 / secs);
    r.json["rtt"] = report::quantiles_us(&s.rtt);
    r.json["generator_cpu_us_per_signal"] = json!(me_us / relayed.max(1) as f64);
    if !s.errors.is_empty() {
        r.notes.push(format!("error responses: {:?}", s.errors));
    }
    if !setup_errors.is_empty() {
        r.notes.push(format!("setup errors: {setup_errors:?}"));
    }
    if !a_errors.is_empty() {
        r.notes.push(format!("{} pairs ended with errors; first: {:?}", a_errors.len(), a_errors.first()));
    }
    if s.a_done < pairs_running {
        r.notes.push(format!("{} of {pairs_running} pairs finished cleanly", s.a_done));
    }
    if !t.alive() {
        r.notes.push("the node exited during the run".into());
    }
    Ok(r)
}
