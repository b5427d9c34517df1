//! Presence propagation and cross-node round trip in a 3-node in-process mesh (real libp2p and
//! WebSockets on 127.0.0.1). Prints p50/p99; figures in BENCHMARKS.md ("Mesh latency").
//!
//! `cargo run --release -p signal-mesh-node --example mesh_latency`
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use signal_mesh_proto::{Event, ServerMessage};
use support::{Client, start, topic};

fn quantiles(mut v: Vec<Duration>) -> String {
    v.sort();
    let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e3;
    format!("p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (n = {})", q(0.5), q(0.99), q(1.0), v.len())
}

fn config() -> signal_mesh_node::Config {
    let mut c = support::config();
    c.requests_per_second = 1_000_000;
    c.request_burst = 1_000_000;
    c
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let first = start(config()).await;
    let boot = first.mesh().listen_addrs().iter().find(|a| a.to_string().contains("/tcp/")).cloned().unwrap();
    let mut nodes = vec![first];
    for _ in 0..2 {
        nodes.push(start(config().with_bootstrap(boot.clone())).await);
    }
    for n in &nodes {
        tokio::time::timeout(Duration::from_secs(20), n.mesh().synced()).await.unwrap();
    }
    let t = topic("latency");
    let mut observers = Vec::new();
    for n in &nodes[1..] {
        let mut c = Client::connect(n.local_addr()).await;
        c.join(t, false).await;
        observers.push(c);
    }
    let mut announcer = Client::connect(nodes[0].local_addr()).await;
    let me = announcer.peer();
    let mut by_event = Vec::new();
    let mut by_lookup = Vec::new();
    for round in 0..200 {
        let sent = Instant::now();
        announcer.join(t, true).await;
        if round % 2 == 0 {
            for o in &mut observers {
                o.wait_for(|m| {
                    matches!(m, ServerMessage::Event(Event::PeerJoined { peer, .. }) if *peer == me)
                        .then_some(())
                })
                .await;
                by_event.push(sent.elapsed());
            }
        } else {
            let o = &mut observers[0];
            loop {
                if let signal_mesh_proto::ResponseBody::Lookup { peers, .. } = o.lookup(t, 0, None).await
                    && peers.contains(&me)
                {
                    break;
                }
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            by_lookup.push(sent.elapsed());
        }
        announcer.leave(t).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        for o in &mut observers {
            o.drain_events();
        }
    }
    println!("presence propagation, join on node 1 to PeerJoined on nodes 2 and 3: {}", quantiles(by_event));
    println!(
        "presence propagation, join on node 1 to a lookup on node 2 listing it: {}",
        quantiles(by_lookup)
    );

    // Cross-node round trip: node 1 -> node 2 -> node 1, 1 KB payloads, acks not awaited.
    let mut a = Client::connect(nodes[0].local_addr()).await;
    let mut b = Client::connect(nodes[1].local_addr()).await;
    let (pa, pb) = (a.peer(), b.peer());
    // Wait until each is known on the other node.
    for _ in 0..200 {
        if a.signal(pb, b"warm").await == support::ok() && b.signal(pa, b"warm").await == support::ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut rtt = Vec::new();
    for _ in 0..1000 {
        // The Ack comes back only once node 2 has queued the signal for b: client -> node 1 ->
        // node 2 -> node 1 -> client.
        let sent = Instant::now();
        assert_eq!(a.signal(pb, b"ping").await, support::ok());
        rtt.push(sent.elapsed());
        b.drain_events();
    }
    println!(
        "cross-node signal, request to Ack (client -> node 1 -> node 2 -> node 1 -> client): {}",
        quantiles(rtt)
    );
}
