//! Directory micro-benchmarks: join/leave (with presence events), lookup pages.
//!
//! `cargo bench -p signal-mesh-node --bench directory`
//!
//! The directory is driven directly (no task, no channel hop): this is the CPU the directory task
//! spends per request, including encoding the response and the events into the members' queues.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use signal_mesh_node::directory::{Directory, Outlet};
use signal_mesh_node::outbox::{OutboxReceiver, outbox};
use signal_mesh_node::session::{Op, PageLimit};
use signal_mesh_proto::{PeerId, TopicId};

struct Conn {
    rx: OutboxReceiver,
}

impl Conn {
    fn drain(&mut self) {
        while self.rx.try_recv().is_some() {}
    }
}

fn peer(i: u64) -> PeerId {
    let mut b = [0u8; 32];
    // Spread ids like real public keys would be (the BTreeSet order matters for lookups).
    b[..8].copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
    b[8..16].copy_from_slice(&i.to_be_bytes());
    PeerId::from_array(b)
}

fn topic(i: u64) -> TopicId {
    let mut b = [0xabu8; 32];
    b[..8].copy_from_slice(&i.to_be_bytes());
    TopicId::from_array(b)
}

/// A directory with `n` peers, `per_topic` announced members per topic.
fn populated(n: u64, per_topic: u64) -> (Directory, Vec<Conn>) {
    let mut d = Directory::new(64);
    let mut conns = Vec::with_capacity(n as usize);
    for i in 0..n {
        let (tx, rx) = outbox(1024);
        d.register(peer(i), Outlet { conn: i, queue: tx }, Bytes::from_static(b"w"));
        d.request(peer(i), i, 1, Op::Join { topic: topic(i / per_topic), announce: true });
        conns.push(Conn { rx });
        // Keep every queue below its capacity, or the directory evicts the slow reader.
        if i % 256 == 255 {
            for c in &mut conns {
                c.drain();
            }
        }
    }
    for c in &mut conns {
        c.drain();
    }
    (d, conns)
}

fn directory(c: &mut Criterion) {
    let mut g = c.benchmark_group("directory");

    // One peer joins and leaves a topic of 10 announced members: 2 responses + 2 x 10 events.
    let (mut d, mut conns) = populated(10_000, 10);
    let extra = 10_000u64;
    let (tx, rx) = outbox(1024);
    d.register(peer(extra), Outlet { conn: extra, queue: tx }, Bytes::from_static(b"w"));
    conns.push(Conn { rx });
    let mut id = 0u64;
    let mut t = 0u64;
    g.bench_function("join_leave/topic_of_10/10k_peers", |b| {
        b.iter(|| {
            id += 2;
            t = (t + 1) % 1000;
            d.request(peer(extra), extra, id, Op::Join { topic: topic(t), announce: true });
            d.request(peer(extra), extra, id + 1, Op::Leave { topic: topic(t) });
            let first = (t * 10) as usize;
            for c in &mut conns[first..first + 10] {
                c.drain();
            }
            conns[extra as usize].drain();
        })
    });

    // Lookups: a 10-member topic, and the first / a middle 256-peer page of a 2,000-peer topic.
    g.bench_function("lookup/topic_of_10", |b| b.iter(|| d.lookup(black_box(topic(7)), 256, None)));
    let (big, _big_conns) = populated(2_000, 2_000);
    g.bench_function("lookup/first_page_256_of_2k", |b| {
        b.iter(|| big.lookup(black_box(topic(0)), 256, None))
    });
    let cursor = match big.lookup(topic(0), 1_000, None) {
        signal_mesh_proto::ResponseBody::Lookup { next_cursor, .. } => next_cursor,
        _ => None,
    };
    g.bench_function("lookup/middle_page_256_of_2k", |b| {
        b.iter(|| big.lookup(black_box(topic(0)), 256, black_box(cursor)))
    });
    // The whole request path for a lookup: serve it and encode the 256-peer page into the queue.
    let (mut big, big_conns) = (big, _big_conns);
    g.bench_function("lookup_request/page_256_encoded", |b| {
        b.iter(|| {
            big.request(
                peer(1),
                1,
                9,
                Op::Lookup { topic: topic(0), limit: PageLimit::up_to(256), cursor: None },
            );
            // The page must really have been queued (an evicted peer would get nothing).
            assert!(big_conns[1].rx.try_recv().is_some());
        })
    });

    // Register + unregister of a peer in 1 topic of 10 (connect/disconnect churn).
    let (mut d2, mut conns2) = populated(1_000, 10);
    let mut next = 1_000_000u64;
    g.bench_function("register_join_unregister/topic_of_10", |b| {
        b.iter(|| {
            next += 1;
            let (tx, rx) = outbox(16);
            d2.register(peer(next), Outlet { conn: next, queue: tx }, Bytes::from_static(b"w"));
            d2.request(peer(next), next, 1, Op::Join { topic: topic(3), announce: true });
            d2.unregister(peer(next), next);
            for c in &mut conns2[30..40] {
                c.drain();
            }
            while rx.try_recv().is_some() {}
        })
    });
    g.finish();
}

criterion_group!(benches, directory);
criterion_main!(benches);
