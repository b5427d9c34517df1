//! soak: `clients` clients for `duration_secs` with churn (clients reconnect at
//! `reconnects_per_sec` in total, each session lasting a random time), lookups and signals (each
//! client acts every `action_secs` on average: a lookup of its topic, then a signal to a peer it
//! found), sampling the node's RSS and open file descriptors every `sample_secs`. Reports the
//! curve (in the JSON, `series`) and whether RSS stayed flat after the warm-up.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use serde_json::json;
use signal_mesh_proto::{ErrorCode, PeerId, RequestBody, ResponseBody, ServerMessage};

use super::{Snapshot, block_on, common, identity, topic};
use crate::client::Client;
use crate::error::BenchError;
use crate::report::{Report, fmt_count};
use crate::ws::xorshift;
use crate::{Global, Targets, targets};

/// Options of the soak scenario.
#[derive(Clone, Debug, Args)]
pub struct Opts {
    /// Clients connected at once (each reconnects after a random session length).
    #[arg(long, default_value_t = 5000)]
    pub clients: u64,
    /// Seconds of soak.
    #[arg(long, default_value_t = 1800)]
    pub duration_secs: u64,
    /// Seconds between samples of the node's RSS and descriptors.
    #[arg(long, default_value_t = 10)]
    pub sample_secs: u64,
    /// Seconds excluded from the flatness check at the start (at least two mean session lengths,
    /// clients / reconnects_per_sec, so that the reconnect churn has reached its steady state).
    #[arg(long, default_value_t = 600)]
    pub warmup_secs: u64,
    /// Topics (client i joins topic i mod topics).
    #[arg(long, default_value_t = 100)]
    pub topics: u64,
    /// Mean seconds between one client's actions (lookup, then signal).
    #[arg(long, default_value_t = 5)]
    pub action_secs: u64,
    /// Reconnects per second over all clients (sessions last clients / this on average).
    #[arg(long, default_value_t = 20)]
    pub reconnects_per_sec: u64,
    /// Handshakes in flight at once during the initial connect.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            clients: 5000,
            duration_secs: 1800,
            sample_secs: 10,
            warmup_secs: 600,
            topics: 100,
            action_secs: 5,
            reconnects_per_sec: 20,
            concurrency: 256,
        }
    }
}

#[derive(Debug, Default)]
struct Stats {
    connects: u64,
    live: u64,
    lookups: u64,
    signals: u64,
    signals_not_found: u64,
    signals_busy: u64,
    received: u64,
    errors: u64,
    first_error: Option<String>,
}

impl Stats {
    fn error(&mut self, e: &BenchError) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e.to_string());
        }
    }
}

/// One sample of the curve.
#[derive(Clone, Copy, Debug)]
struct Sample {
    secs: f64,
    rss_kib: u64,
    fds: u64,
    live: u64,
    connects: u64,
    requests: u64,
}

fn open_fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count() as u64).unwrap_or(0)
}

/// Waits for the response to `id`, counting signals received meanwhile.
async fn response(c: &mut Client, id: u64, stats: &RefCell<Stats>) -> Result<ResponseBody, BenchError> {
    loop {
        match c.next().await? {
            ServerMessage::Response { id: rid, body } if rid == id => return Ok(body),
            ServerMessage::Event(_) => stats.borrow_mut().received += 1,
            ServerMessage::Goodbye { code, reason } => {
                return Err(BenchError::Node { code, message: reason });
            }
            _ => {}
        }
    }
}

/// One session: act until `until`, reading whatever comes meanwhile.
async fn session(
    c: &mut Client,
    rng: &mut u64,
    o: &Opts,
    until: Instant,
    stats: &RefCell<Stats>,
) -> Result<(), BenchError> {
    let mut peers: Vec<PeerId> = Vec::new();
    let mean_ms = o.action_secs.max(1) * 1000;
    loop {
        let wait = Duration::from_millis(mean_ms / 2 + xorshift(rng) % mean_ms);
        let next = Instant::now() + wait;
        if next >= until {
            break;
        }
        // Read until the next action (events are counted; the read is cancel safe).
        loop {
            let deadline = tokio::time::Instant::from_std(next);
            match tokio::time::timeout_at(deadline, c.next()).await {
                Err(_) => break,
                Ok(Ok(ServerMessage::Event(_))) => stats.borrow_mut().received += 1,
                Ok(Ok(ServerMessage::Goodbye { code, reason })) => {
                    return Err(BenchError::Node { code, message: reason });
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e),
            }
        }
        let tp = topic("soak", xorshift(rng) % o.topics.max(1));
        let id = c.queue_request(RequestBody::Lookup { topic: tp, limit: 16, cursor: None });
        if let ResponseBody::Lookup { peers: found, .. } = response(c, id, stats).await? {
            peers = found;
        }
        stats.borrow_mut().lookups += 1;
        if !peers.is_empty() {
            let to = peers[(xorshift(rng) % peers.len() as u64) as usize];
            let payload = Bytes::from(vec![0x5a; 200 + (xorshift(rng) % 800) as usize]);
            let id =
                c.queue_request(RequestBody::Signal { to, payload, ack: signal_mesh_proto::AckMode::Always });
            let body = response(c, id, stats).await?;
            let mut s = stats.borrow_mut();
            s.signals += 1;
            match body {
                ResponseBody::Error { code: ErrorCode::PeerNotFound, .. } => s.signals_not_found += 1,
                ResponseBody::Error { code: ErrorCode::PeerBusy, .. } => s.signals_busy += 1,
                _ => {}
            }
        }
    }
    Ok(())
}

async fn client(t: Rc<Targets>, i: u64, o: Opts, stop: Instant, stats: Rc<RefCell<Stats>>) {
    let mut rng = (0x510a_c0de ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1;
    let mean_session_ms = o.clients.max(1) * 1000 / o.reconnects_per_sec.max(1);
    let mut generation = 0u64;
    while Instant::now() < stop {
        let id = identity(b'K', (generation % 251) as u8, i);
        generation += 1;
        let url = t.url(i).clone();
        let mut c = match Client::connect(&url, t.source(i), &id, xorshift(&mut rng)).await {
            Ok(c) => c,
            Err(e) => {
                stats.borrow_mut().error(&e);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        {
            let mut s = stats.borrow_mut();
            s.connects += 1;
            s.live += 1;
        }
        let r = async {
            c.join(topic("soak", i % o.topics.max(1)), true).await?;
            // The first sessions end spread over one mean session length, later ones at random.
            let ms = if generation == 1 {
                xorshift(&mut rng) % mean_session_ms
            } else {
                mean_session_ms / 2 + xorshift(&mut rng) % mean_session_ms
            };
            let until = (Instant::now() + Duration::from_millis(ms)).min(stop);
            session(&mut c, &mut rng, &o, until, &stats).await
        }
        .await;
        stats.borrow_mut().live -= 1;
        if let Err(e) = r {
            stats.borrow_mut().error(&e);
        }
        c.close().await;
    }
}

/// Least-squares slope of `y` over `x` (per unit of `x`).
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let (sx, sy) = points.iter().fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) =
        points.iter().fold((0.0, 0.0), |(a, b), (x, y)| (a + (x - mx) * (y - my), b + (x - mx) * (x - mx)));
    if den == 0.0 { 0.0 } else { num / den }
}

/// Runs the scenario against a fresh node.
pub fn run(g: &Global, o: &Opts) -> Result<Report, BenchError> {
    let t = Rc::new(targets(g, o.clients + 100)?);
    let mut r = Report::new(format!(
        "soak ({} clients, {} reconnects/s, an action every ~{} s each, {} s, sampled every {} s)",
        o.clients, o.reconnects_per_sec, o.action_secs, o.duration_secs, o.sample_secs
    ));
    common(&mut r, g, &t);
    let pid = t.pids.first().copied();
    let stats = Rc::new(RefCell::new(Stats::default()));
    let o2 = o.clone();
    let t2 = t.clone();
    let stats2 = stats.clone();
    let series = block_on(async move {
        let stats = stats2;
        let begin = Instant::now();
        let stop = begin + Duration::from_secs(o2.duration_secs);
        let mut tasks = Vec::new();
        let start_gap = Duration::from_micros(1_000_000 / o2.concurrency.max(1) as u64);
        for i in 0..o2.clients {
            tasks.push(tokio::task::spawn_local(client(t2.clone(), i, o2.clone(), stop, stats.clone())));
            // Ramp up at about 4 × `concurrency` connects per second.
            tokio::time::sleep(start_gap / 4).await;
        }
        let mut series = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_secs(o2.sample_secs.max(1)));
        loop {
            tick.tick().await;
            // Samples end before the run does: clients end their sessions up to an action period
            // before `stop`, and those last seconds are thousands of closes at once (a sample
            // there once read 46 MiB against 41 MiB a minute before).
            if Instant::now() + Duration::from_secs(2 * o2.action_secs) >= stop {
                break;
            }
            let node = t2.sample().ok().flatten();
            let s = stats.borrow();
            series.push(Sample {
                secs: begin.elapsed().as_secs_f64(),
                rss_kib: node.map(|n| n.rss_kib).unwrap_or(0),
                fds: pid.map(open_fds).unwrap_or(0),
                live: s.live,
                connects: s.connects,
                requests: s.lookups + s.signals,
            });
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        for h in tasks {
            if tokio::time::timeout_at(deadline, h).await.is_err() {
                break;
            }
        }
        (series, Snapshot::take(&t2))
    })?;
    let (series, _end) = series;
    let s = stats.borrow();
    let after: Vec<&Sample> = series.iter().filter(|p| p.secs >= o.warmup_secs as f64).collect();
    let rss_points: Vec<(f64, f64)> = after.iter().map(|p| (p.secs / 60.0, p.rss_kib as f64)).collect();
    let per_min = slope(&rss_points);
    let (first, last) = (after.first(), after.last());
    let max_rss = after.iter().map(|p| p.rss_kib).max().unwrap_or(0);
    let (min_fd, max_fd) =
        (after.iter().map(|p| p.fds).min().unwrap_or(0), after.iter().map(|p| p.fds).max().unwrap_or(0));
    if let (Some(a), Some(b)) = (first, last) {
        r.row(
            "node RSS after warm-up / at the end / max",
            format!("{} / {} / {} MiB", a.rss_kib / 1024, b.rss_kib / 1024, max_rss / 1024),
        );
        r.row("RSS trend after warm-up (least squares)", format!("{per_min:+.0} KiB per minute"));
        r.row("node descriptors after warm-up (min / max)", format!("{min_fd} / {max_fd}"));
    } else {
        r.notes.push("no sample after the warm-up: run longer than --warmup-secs".into());
    }
    let secs = series.last().map(|p| p.secs).unwrap_or(1.0).max(1.0);
    r.row(
        "connects (incl. reconnects)",
        format!("{} ({:.1} /s)", fmt_count(s.connects), s.connects as f64 / secs),
    );
    r.row("lookups / signals", format!("{} / {}", fmt_count(s.lookups), fmt_count(s.signals)));
    r.row(
        "signals PEER_NOT_FOUND / PEER_BUSY",
        format!("{} / {}", fmt_count(s.signals_not_found), fmt_count(s.signals_busy)),
    );
    r.row("events received", fmt_count(s.received));
    r.row("errors", fmt_count(s.errors));
    if let Some(e) = &s.first_error {
        r.notes.push(format!("{} errors; first: {e}", s.errors));
    }
    r.json["rss_kib_per_min_after_warmup"] = json!(per_min);
    r.json["warmup_secs"] = json!(o.warmup_secs);
    r.json["connects"] = json!(s.connects);
    r.json["lookups"] = json!(s.lookups);
    r.json["signals"] = json!(s.signals);
    r.json["errors"] = json!(s.errors);
    r.json["series"] = json!(
        series
            .iter()
            .map(|p| json!({"secs": p.secs, "rss_kib": p.rss_kib, "fds": p.fds, "live": p.live,
                "connects": p.connects, "requests": p.requests}))
            .collect::<Vec<_>>()
    );
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::slope;

    #[test]
    fn slope_of_a_line_and_of_a_flat_series() {
        assert!((slope(&[(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)]) - 2.0).abs() < 1e-9);
        assert_eq!(slope(&[(0.0, 7.0), (1.0, 7.0), (2.0, 7.0)]), 0.0);
        assert_eq!(slope(&[(0.0, 7.0)]), 0.0);
    }
}
