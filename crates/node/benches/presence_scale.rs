//! What full replication of presence costs one node: the directory of a node in a 10-node mesh
//! receiving the other 9 nodes' presence (100,000 announced peers over 10,000 topics), then
//! churn (joins and leaves) from them. Prints memory per remote record (RSS), gossip bytes per
//! join and CPU per applied join. Feeds `docs/scaling.md`.
//!
//! `cargo bench -p signal-mesh-node --bench presence_scale` (release profile; single thread).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use signal_mesh_node::directory::{Directory, PresenceInput};
use signal_mesh_node::mesh::links::NoMesh;
use signal_mesh_node::mesh::presence::ReplicaConfig;
use signal_mesh_node::mesh::wire::{Delta, DeltaBatch, PeerRecord, Presence, PresenceMessage, Snapshot};
use signal_mesh_proto::{PeerId, TopicId};

const ORIGINS: u64 = 9;
const PEERS: u64 = 100_000;
const TOPICS: u64 = 10_000;

fn peer(i: u64) -> PeerId {
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&i.to_le_bytes());
    b[31] = 1;
    PeerId::from_array(b)
}

fn topic(i: u64) -> TopicId {
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&i.to_le_bytes());
    b[31] = 2;
    TopicId::from_array(b)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let origins: Vec<libp2p::PeerId> = (0..ORIGINS).map(|_| libp2p::PeerId::random()).collect();
    let mut d = Directory::with_mesh(64, 1, ReplicaConfig::default(), Box::new(NoMesh));
    let now = std::time::Instant::now();
    let before = rss_kib();
    let t = Instant::now();
    for (o, origin) in origins.iter().enumerate() {
        let peers = (0..PEERS)
            .filter(|i| i % ORIGINS == o as u64)
            .map(|i| PeerRecord { peer: peer(i), since_ms: 1, topics: vec![topic(i % TOPICS)] })
            .collect();
        let snapshot = Snapshot { incarnation: 1, seq: PEERS, peers };
        d.presence(PresenceInput::Snapshot { origin: *origin, snapshot }, now);
    }
    let load = t.elapsed();
    let after = rss_kib();
    let per_record = (after.saturating_sub(before)) as f64 * 1024.0 / PEERS as f64;
    println!("remote records: {PEERS} peers over {TOPICS} topics from {ORIGINS} origins");
    println!(
        "  memory: {} KiB RSS -> {:.0} bytes per remote record (peer + one topic)",
        after - before,
        per_record
    );
    println!(
        "  snapshots applied in {:.0} ms ({:.2} us per record)",
        load.as_secs_f64() * 1e3,
        load.as_secs_f64() * 1e6 / PEERS as f64
    );

    // One join on a remote node (PeerUp + Announce), as gossiped.
    let join = PresenceMessage {
        incarnation: 1_796_000_000_000,
        body: Presence::Deltas(DeltaBatch {
            first_seq: 123_456,
            deltas: vec![
                Delta::Up { peer: peer(1), since_ms: 1_796_000_000_000 },
                Delta::Announce { peer: peer(1), topic: topic(1) },
            ],
        }),
    };
    let body = join.encode().len();
    // gossipsub adds per message: source peer id (38 B), seqno (8 B), topic string, signature
    // (64 B), key omitted (inlined in the peer id), protobuf tags and the length prefix.
    let envelope = 38 + 8 + "signal-mesh/default/presence/1".len() + 64 + 16;
    println!(
        "gossip bytes per join (one peer joining one topic, unbatched): {body} B payload + ~{envelope} B gossipsub envelope = ~{} B per link it crosses",
        body + envelope
    );
    let mut batch = Vec::new();
    for i in 0..100u64 {
        batch.push(Delta::Up { peer: peer(PEERS + i), since_ms: 2 });
        batch.push(Delta::Announce { peer: peer(PEERS + i), topic: topic(i) });
    }
    let batched = PresenceMessage {
        incarnation: 1,
        body: Presence::Deltas(DeltaBatch { first_seq: 1, deltas: batch }),
    }
    .encode()
    .len();
    println!("  batched (100 joins in one message): {:.0} B per join", (batched + envelope) as f64 / 100.0);

    // Churn: joins and leaves from one origin, in batches of 10 as a busy node sends them.
    let origin = origins[0];
    let mut seq = PEERS;
    let rounds = 20_000u64;
    let t = Instant::now();
    for r in 0..rounds {
        let p = peer(10 * PEERS + r);
        let deltas = vec![
            Delta::Up { peer: p, since_ms: 3 },
            Delta::Announce { peer: p, topic: topic(r % TOPICS) },
            Delta::Down { peer: p },
        ];
        let batch = DeltaBatch { first_seq: seq + 1, deltas };
        seq += 3;
        d.presence(PresenceInput::Deltas { origin, incarnation: 1, batch }, now);
    }
    let churn = t.elapsed();
    println!(
        "CPU per remote join+leave applied (directory, incl. topic tables): {:.2} us ({rounds} rounds in {:.0} ms)",
        churn.as_secs_f64() * 1e6 / rounds as f64,
        churn.as_secs_f64() * 1e3
    );
    println!("stats after: {:?}", d.stats());
}
