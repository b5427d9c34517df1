//! churn: `churners` clients join and leave random topics back to back (closed loop), while
//! `lookers` clients look topics up at a fixed interval and `stable_per_topic` members stay in
//! every topic (they receive the PeerJoined/PeerLeft events). Join+leave rate, lookup latency.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use clap::Args;
use hdrhistogram::Histogram;
use serde_json::json;
use signal_mesh_proto::{RequestBody, ResponseBody, ServerMessage};

use super::{Snapshot, block_on, common, connect_many, connect_plain, cpu_rows, identity, topic};
use crate::client::{Client, expect_ok};
use crate::error::BenchError;
use crate::report::{self, Report, fmt_count};
use crate::ws::xorshift;
use crate::{Global, targets};

/// Options of the churn scenario.
#[derive(Clone, Debug, Args)]
pub struct Opts {
    /// Topics.
    #[arg(long, default_value_t = 100)]
    pub topics: u64,
    /// Members that stay in each topic for the whole run.
    #[arg(long, default_value_t = 5)]
    pub stable_per_topic: u64,
    /// Clients that join and leave continuously.
    #[arg(long, default_value_t = 500)]
    pub churners: u64,
    /// Clients that look up.
    #[arg(long, default_value_t = 100)]
    pub lookers: u64,
    /// Interval between one looker's lookups.
    #[arg(long, default_value_t = 10)]
    pub lookup_interval_ms: u64,
    /// Seconds of churn.
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,
    /// Handshakes in flight at once during setup.
    #[arg(long, default_value_t = 128)]
    pub concurrency: usize,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            topics: 100,
            stable_per_topic: 5,
            churners: 500,
            lookers: 100,
            lookup_interval_ms: 10,
            duration_secs: 10,
            concurrency: 128,
        }
    }
}

#[derive(Debug)]
struct Stats {
    joins: u64,
    leaves: u64,
    lookups: u64,
    lookup_peers: u64,
    events: u64,
    errors: u64,
    first_error: Option<String>,
    lookup_latency: Histogram<u64>,
    join_latency: Histogram<u64>,
}

impl Stats {
    fn error(&mut self, e: &BenchError) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e.to_string());
        }
    }
}

/// Waits for the response to `id`, counting events meanwhile.
async fn response(c: &mut Client, id: u64, stats: &RefCell<Stats>) -> Result<ResponseBody, BenchError> {
    loop {
        match c.next().await? {
            ServerMessage::Response { id: rid, body } if rid == id => return Ok(body),
            ServerMessage::Event(_) => stats.borrow_mut().events += 1,
            ServerMessage::Goodbye { code, reason } => {
                return Err(BenchError::Node { code, message: reason });
            }
            _ => {}
        }
    }
}

async fn churner(mut c: Client, i: u64, o: Opts, stop: Instant, stats: Rc<RefCell<Stats>>) {
    let mut rng = 0x1234_5678_9abc_def1 ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    while Instant::now() < stop {
        let tp = topic("churn", xorshift(&mut rng) % o.topics.max(1));
        let t0 = Instant::now();
        let id = c.queue_request(RequestBody::Join { topic: tp, announce: true });
        match response(&mut c, id, &stats).await.and_then(expect_ok) {
            Ok(()) => {
                let mut s = stats.borrow_mut();
                s.joins += 1;
                report::record(&mut s.join_latency, t0.elapsed());
            }
            Err(e) => {
                stats.borrow_mut().error(&e);
                return;
            }
        }
        let id = c.queue_request(RequestBody::Leave { topic: tp });
        match response(&mut c, id, &stats).await.and_then(expect_ok) {
            Ok(()) => stats.borrow_mut().leaves += 1,
            Err(e) => {
                stats.borrow_mut().error(&e);
                return;
            }
        }
    }
    c.close().await;
}

async fn looker(mut c: Client, i: u64, o: Opts, stop: Instant, stats: Rc<RefCell<Stats>>) {
    let mut rng = 0x0fed_cba9_8765_4321 ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let period = Duration::from_millis(o.lookup_interval_ms.max(1));
    // Spread the lookers over the period.
    let offset = period.mul_f64((i % 100) as f64 / 100.0);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while Instant::now() < stop {
        tick.tick().await;
        let tp = topic("churn", xorshift(&mut rng) % o.topics.max(1));
        let t0 = Instant::now();
        let id = c.queue_request(RequestBody::Lookup { topic: tp, limit: 0, cursor: None });
        match response(&mut c, id, &stats).await {
            Ok(ResponseBody::Lookup { peers, .. }) => {
                let mut s = stats.borrow_mut();
                report::record(&mut s.lookup_latency, t0.elapsed());
                s.lookups += 1;
                s.lookup_peers += peers.len() as u64;
            }
            Ok(other) => {
                let e = BenchError::Protocol(format!("lookup answered {other:?}"));
                stats.borrow_mut().error(&e);
                return;
            }
            Err(e) => {
                stats.borrow_mut().error(&e);
                return;
            }
        }
    }
    c.close().await;
}

async fn stable(mut c: Client, stats: Rc<RefCell<Stats>>) {
    while let Ok(msg) = c.next().await {
        if let ServerMessage::Event(_) = msg {
            stats.borrow_mut().events += 1;
        }
    }
}

/// Runs the scenario against a fresh node.
pub fn run(g: &Global, o: &Opts) -> Result<Report, BenchError> {
    let stable_n = o.topics * o.stable_per_topic;
    let total = stable_n + o.churners + o.lookers;
    let mut t = targets(g, total)?;
    let mut r = Report::new(format!(
        "churn ({} churners, {} lookers every {} ms, {} topics x {} stable, {} s)",
        o.churners, o.lookers, o.lookup_interval_ms, o.topics, o.stable_per_topic, o.duration_secs
    ));
    common(&mut r, g, &t);
    let stats = Rc::new(RefCell::new(Stats {
        joins: 0,
        leaves: 0,
        lookups: 0,
        lookup_peers: 0,
        events: 0,
        errors: 0,
        first_error: None,
        lookup_latency: report::new_histogram(),
        join_latency: report::new_histogram(),
    }));
    let o2 = o.clone();
    let outcome = block_on(async {
        let timeout = Duration::from_secs(120);
        let per = o.stable_per_topic.max(1);
        let stable_c = connect_many(
            &t,
            stable_n,
            o.concurrency,
            timeout,
            |i| identity(b'H', b'S', i),
            |i| i,
            move |i, mut c| async move {
                c.join(topic("churn", i / per), true).await?;
                Ok(c)
            },
        )
        .await;
        let churn_c = connect_plain(&t, o.churners, o.concurrency, timeout, (b'H', b'C'), |i| i).await;
        let look_c = connect_plain(&t, o.lookers, o.concurrency, timeout, (b'H', b'L'), |i| i).await;
        let mut setup_errors = stable_c.errors.clone();
        setup_errors.extend(churn_c.errors.iter().cloned());
        setup_errors.extend(look_c.errors.iter().cloned());
        tokio::time::sleep(Duration::from_millis(500)).await;
        let start = Snapshot::take(&t);
        let begin = Instant::now();
        let stop = begin + Duration::from_secs(o2.duration_secs);
        let mut bg = Vec::new();
        for c in stable_c.clients.into_iter().flatten() {
            bg.push(tokio::task::spawn_local(stable(c, stats.clone())));
        }
        let mut fg = Vec::new();
        for (i, c) in churn_c.clients.into_iter().enumerate() {
            if let Some(c) = c {
                fg.push(tokio::task::spawn_local(churner(c, i as u64, o2.clone(), stop, stats.clone())));
            }
        }
        for (i, c) in look_c.clients.into_iter().enumerate() {
            if let Some(c) = c {
                fg.push(tokio::task::spawn_local(looker(c, i as u64, o2.clone(), stop, stats.clone())));
            }
        }
        let deadline = tokio::time::Instant::from_std(stop + Duration::from_secs(5));
        let mut late = 0u64;
        for h in fg {
            if tokio::time::timeout_at(deadline, h).await.is_err() {
                late += 1;
            }
        }
        let elapsed = begin.elapsed();
        let end = Snapshot::take(&t);
        for h in &bg {
            h.abort();
        }
        (start, end, elapsed, setup_errors, late)
    })?;
    let (start, end, elapsed, setup_errors, late) = outcome;
    let (start, end) = (start?, end?);
    let s = stats.borrow();
    let secs = elapsed.as_secs_f64().max(1e-9);
    let ops = s.joins + s.leaves;
    r.row("joins + leaves", format!("{} ({:.0} /s)", fmt_count(ops), ops as f64 / secs));
    r.row("join latency p50 / p99 / p999", report::fmt_quantiles(&s.join_latency));
    r.row("lookups", format!("{} ({:.0} /s)", fmt_count(s.lookups), s.lookups as f64 / secs));
    r.row("lookup latency p50 / p99 / p999", report::fmt_quantiles(&s.lookup_latency));
    r.row("mean peers per lookup", format!("{:.1}", s.lookup_peers as f64 / s.lookups.max(1) as f64));
    r.row("presence events delivered", format!("{} ({:.0} /s)", fmt_count(s.events), s.events as f64 / secs));
    r.row("errors", fmt_count(s.errors));
    if let Some(cpu) = super::node_cpu_us(&start, &end) {
        let per = cpu as f64 / (ops + s.lookups).max(1) as f64;
        r.row("node CPU per request (join/leave/lookup)", format!("{per:.1} µs"));
        r.json["node_cpu_us_per_request"] = json!(per);
    }
    cpu_rows(&mut r, &start, &end);
    r.json["joins"] = json!(s.joins);
    r.json["leaves"] = json!(s.leaves);
    r.json["joins_leaves_per_s"] = json!(ops as f64 / secs);
    r.json["lookups"] = json!(s.lookups);
    r.json["lookups_per_s"] = json!(s.lookups as f64 / secs);
    r.json["lookup_latency"] = report::quantiles_us(&s.lookup_latency);
    r.json["join_latency"] = report::quantiles_us(&s.join_latency);
    r.json["events"] = json!(s.events);
    r.json["errors"] = json!(s.errors);
    r.json["elapsed_secs"] = json!(secs);
    if let Some(e) = &s.first_error {
        r.notes.push(format!("{} errors; first: {e}", s.errors));
    }
    if !setup_errors.is_empty() {
        r.notes.push(format!("setup errors: {setup_errors:?}"));
    }
    if late > 0 {
        r.notes.push(format!("{late} clients were still busy 5 s after the end"));
    }
    if !t.alive() {
        r.notes.push("the node exited during the run".into());
    }
    Ok(r)
}
