//! The replica against simulated time and message loss.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use super::*;

fn p(n: u8) -> PeerId {
    PeerId::from_array([n; 32])
}

fn t(n: u8) -> TopicId {
    TopicId::from_array([n; 32])
}

/// An origin node: its log, and what it has published (as a receiver would see it).
struct Node {
    key: NodeKey,
    log: LocalLog,
    state: HashMap<PeerId, (u64, Vec<TopicId>)>,
}

impl Node {
    fn new(incarnation: u64) -> Node {
        Node { key: NodeKey::random(), log: LocalLog::new(incarnation), state: HashMap::new() }
    }

    fn up(&mut self, peer: PeerId, since_ms: u64) {
        self.state.insert(peer, (since_ms, Vec::new()));
        self.log.push(Delta::Up { peer, since_ms });
    }

    fn announce(&mut self, peer: PeerId, topic: TopicId) {
        self.state.get_mut(&peer).unwrap().1.push(topic);
        self.log.push(Delta::Announce { peer, topic });
    }

    fn down(&mut self, peer: PeerId) {
        self.state.remove(&peer);
        self.log.push(Delta::Down { peer });
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            incarnation: self.log.incarnation(),
            seq: self.log.seq(),
            peers: self
                .state
                .iter()
                .map(|(peer, (since_ms, topics))| PeerRecord {
                    peer: *peer,
                    since_ms: *since_ms,
                    topics: topics.clone(),
                })
                .collect(),
        }
    }
}

/// The set of (topic, peer) a receiver believes `origin` announces, rebuilt from the changes.
#[derive(Default)]
struct View(std::collections::BTreeSet<(TopicId, PeerId)>);

impl View {
    fn apply(&mut self, fx: &Effects) {
        for c in &fx.changes {
            match *c {
                Change::Announced { topic, peer, .. } => {
                    assert!(self.0.insert((topic, peer)), "announced twice: {c:?}")
                }
                Change::Withdrawn { topic, peer, .. } => {
                    assert!(self.0.remove(&(topic, peer)), "withdrawn unknown: {c:?}")
                }
            }
        }
    }
}

fn status() -> NodeStatus {
    NodeStatus::default()
}

#[test]
fn given_in_order_batches_from_a_new_origin_then_they_apply_without_a_snapshot() {
    let mut r = Replica::new(ReplicaConfig::default());
    let mut a = Node::new(100);
    let now = Instant::now();
    a.up(p(1), 10);
    a.announce(p(1), t(1));
    let mut fx = Effects::default();
    for b in a.log.take_batches() {
        r.on_deltas(a.key, 100, b, now, &mut fx);
    }
    assert!(fx.fetch.is_empty());
    assert_eq!(fx.changes, vec![Change::Announced { origin: a.key, topic: t(1), peer: p(1) }]);
    assert_eq!(r.route(&p(1)), Some(a.key));
    assert!(r.synced());
}

#[test]
fn given_a_lost_batch_then_the_next_one_triggers_a_snapshot_and_state_converges() {
    let mut r = Replica::new(ReplicaConfig::default());
    let mut a = Node::new(100);
    let now = Instant::now();
    let mut view = View::default();
    a.up(p(1), 10);
    a.announce(p(1), t(1));
    let first = a.log.take_batches();
    let mut fx = Effects::default();
    for b in first {
        r.on_deltas(a.key, 100, b, now, &mut fx);
    }
    // This batch is lost in gossip.
    a.up(p(2), 11);
    a.announce(p(2), t(1));
    let _lost = a.log.take_batches();
    a.announce(p(1), t(2));
    for b in a.log.take_batches() {
        r.on_deltas(a.key, 100, b, now, &mut fx);
    }
    // The missing batch may still be on its way: held, no snapshot within the reorder grace.
    assert!(fx.fetch.is_empty());
    r.expire(now + Duration::from_millis(100), &mut fx);
    assert!(fx.fetch.is_empty());
    r.expire(now + ReplicaConfig::default().reorder_grace, &mut fx);
    assert_eq!(fx.fetch, vec![a.key]);
    assert!(!r.synced());
    view.apply(&fx);
    // The snapshot (taken before the last batch) plus the buffered batch give the full state.
    let mut snap = a.snapshot();
    snap.seq -= 1;
    snap.peers.iter_mut().for_each(|rec| rec.topics.retain(|x| *x != t(2)));
    let mut fx = Effects::default();
    r.on_snapshot(a.key, snap, now, &mut fx);
    view.apply(&fx);
    assert!(r.synced());
    let want: std::collections::BTreeSet<_> = [(t(1), p(1)), (t(1), p(2)), (t(2), p(1))].into();
    assert_eq!(view.0, want);
}

#[test]
fn given_a_lost_last_batch_then_the_heartbeat_reveals_the_gap() {
    let mut r = Replica::new(ReplicaConfig::default());
    let mut a = Node::new(100);
    let now = Instant::now();
    a.up(p(1), 10);
    let mut fx = Effects::default();
    for b in a.log.take_batches() {
        r.on_deltas(a.key, 100, b, now, &mut fx);
    }
    a.down(p(1));
    let _lost = a.log.take_batches();
    r.on_heartbeat(a.key, 100, a.log.seq(), status(), now, &mut fx);
    assert!(fx.fetch.is_empty(), "the last batch may still be on its way");
    r.expire(now + ReplicaConfig::default().reorder_grace, &mut fx);
    assert_eq!(fx.fetch, vec![a.key]);
    r.on_snapshot(a.key, a.snapshot(), now, &mut fx);
    assert_eq!(r.route(&p(1)), None);
    // A repeated heartbeat with the same seq asks for nothing more.
    let mut fx = Effects::default();
    r.on_heartbeat(a.key, 100, a.log.seq(), status(), now, &mut fx);
    assert!(fx.fetch.is_empty());
}

#[test]
fn given_batches_out_of_order_within_the_grace_then_they_apply_in_order_without_a_snapshot() {
    let mut r = Replica::new(ReplicaConfig::default());
    let mut a = Node::new(100);
    let now = Instant::now();
    let mut view = View::default();
    let mut batches = Vec::new();
    for i in 1..=5u8 {
        a.up(p(i), u64::from(i));
        a.announce(p(i), t(1));
        batches.extend(a.log.take_batches());
    }
    // Batch 1 first (a new origin starts from it), then 5, 3, 4 ahead of the missing 2.
    let mut fx = Effects::default();
    for i in [0, 4, 2, 3] {
        r.on_deltas(a.key, 100, batches[i].clone(), now, &mut fx);
    }
    assert!(fx.fetch.is_empty(), "batches ahead are held, not a reason for a snapshot");
    view.apply(&fx);
    assert_eq!(view.0.len(), 1, "only the in-order prefix is applied");
    // A heartbeat in the meantime does not turn the open gap into a fetch either.
    r.on_heartbeat(a.key, 100, a.log.seq(), status(), now + Duration::from_millis(10), &mut fx);
    assert!(fx.fetch.is_empty());
    let mut fx = Effects::default();
    r.on_deltas(a.key, 100, batches[1].clone(), now + Duration::from_millis(20), &mut fx);
    view.apply(&fx);
    r.expire(now + Duration::from_secs(2), &mut fx);
    assert!(fx.fetch.is_empty(), "the gap closed: no snapshot");
    let want: std::collections::BTreeSet<_> = (1..=5u8).map(|i| (t(1), p(i))).collect();
    assert_eq!(view.0, want);
    assert!(r.synced());
}

#[test]
fn given_no_reorder_grace_then_a_gap_fetches_a_snapshot_at_once() {
    let mut r = Replica::new(ReplicaConfig { reorder_grace: Duration::ZERO, ..ReplicaConfig::default() });
    let mut a = Node::new(100);
    let now = Instant::now();
    a.up(p(1), 1);
    let first = a.log.take_batches();
    a.up(p(2), 2);
    let _lost = a.log.take_batches();
    a.up(p(3), 3);
    let mut fx = Effects::default();
    for b in first.into_iter().chain(a.log.take_batches()) {
        r.on_deltas(a.key, 100, b, now, &mut fx);
    }
    assert_eq!(fx.fetch, vec![a.key]);
}

#[test]
fn given_an_unknown_origin_heartbeat_then_empty_origins_need_no_snapshot() {
    let mut r = Replica::new(ReplicaConfig::default());
    let now = Instant::now();
    let empty = NodeKey::random();
    let busy = NodeKey::random();
    let mut fx = Effects::default();
    r.on_heartbeat(empty, 1, 0, status(), now, &mut fx);
    r.on_heartbeat(busy, 1, 5, status(), now, &mut fx);
    assert_eq!(fx.fetch, vec![busy]);
    // Not answered: asked again only after the retry interval.
    let mut fx = Effects::default();
    r.on_heartbeat(busy, 1, 5, status(), now + Duration::from_millis(500), &mut fx);
    assert!(fx.fetch.is_empty());
    r.on_heartbeat(busy, 1, 5, status(), now + Duration::from_secs(4), &mut fx);
    assert_eq!(fx.fetch, vec![busy]);
    r.on_snapshot_failed(busy);
    let mut fx = Effects::default();
    r.on_heartbeat(busy, 1, 5, status(), now + Duration::from_secs(5), &mut fx);
    assert_eq!(fx.fetch, vec![busy]);
}

#[test]
fn given_a_restarted_origin_then_old_records_go_and_late_old_messages_are_ignored() {
    let mut r = Replica::new(ReplicaConfig::default());
    let mut old = Node::new(100);
    let now = Instant::now();
    let mut view = View::default();
    old.up(p(1), 10);
    old.announce(p(1), t(1));
    let mut fx = Effects::default();
    for b in old.log.take_batches() {
        r.on_deltas(old.key, 100, b, now, &mut fx);
    }
    let mut new = Node::new(200);
    new.key = old.key;
    new.up(p(2), 20);
    new.announce(p(2), t(1));
    for b in new.log.take_batches() {
        r.on_deltas(new.key, 200, b, now, &mut fx);
    }
    view.apply(&fx);
    assert_eq!(view.0, [(t(1), p(2))].into());
    // A late message of the old incarnation changes nothing.
    let mut fx = Effects::default();
    old.up(p(3), 30);
    for b in old.log.take_batches() {
        r.on_deltas(old.key, 100, b, now, &mut fx);
    }
    r.on_heartbeat(old.key, 100, 99, status(), now, &mut fx);
    assert_eq!(fx, Effects::default());
    assert_eq!(r.route(&p(3)), None);
}

#[test]
fn given_silence_then_records_expire_after_the_ttl_and_sooner_when_the_link_is_down() {
    let config = ReplicaConfig {
        ttl: Duration::from_secs(10),
        suspect_grace: Duration::from_secs(3),
        ..ReplicaConfig::default()
    };
    let mut r = Replica::new(config);
    let start = Instant::now();
    let mut a = Node::new(1);
    let mut b = Node::new(1);
    a.up(p(1), 1);
    a.announce(p(1), t(1));
    b.up(p(2), 1);
    b.announce(p(2), t(1));
    let mut fx = Effects::default();
    for x in [&mut a, &mut b] {
        for batch in x.log.take_batches() {
            r.on_deltas(x.key, 1, batch, start, &mut fx);
        }
    }
    // Heartbeats keep them alive.
    for s in 1..=20 {
        let now = start + Duration::from_secs(s);
        r.on_heartbeat(a.key, 1, a.log.seq(), status(), now, &mut fx);
        r.on_heartbeat(b.key, 1, b.log.seq(), status(), now, &mut fx);
        r.expire(now, &mut fx);
    }
    assert_eq!(r.origins().count(), 2);
    // a goes silent; b's link drops too but b keeps being heard through others.
    let t0 = start + Duration::from_secs(20);
    r.on_link_down(b.key, t0);
    r.on_heartbeat(b.key, 1, b.log.seq(), status(), t0 + Duration::from_secs(1), &mut fx);
    let mut fx = Effects::default();
    r.expire(t0 + Duration::from_millis(9_900), &mut fx);
    assert!(fx.changes.is_empty());
    r.expire(t0 + Duration::from_secs(10), &mut fx);
    assert_eq!(fx.changes, vec![Change::Withdrawn { origin: a.key, topic: t(1), peer: p(1) }]);
    assert_eq!(r.route(&p(2)), Some(b.key));
    // b's link is down and b is silent: gone after the grace, well before the TTL.
    let t1 = t0 + Duration::from_secs(10);
    r.on_link_down(b.key, t1);
    let mut fx = Effects::default();
    r.expire(t1 + Duration::from_secs(3), &mut fx);
    assert_eq!(fx.changes, vec![Change::Withdrawn { origin: b.key, topic: t(1), peer: p(2) }]);
}

#[test]
fn given_a_peer_on_two_origins_then_it_routes_to_the_newest_session() {
    let mut r = Replica::new(ReplicaConfig::default());
    let now = Instant::now();
    let mut a = Node::new(1);
    let mut b = Node::new(1);
    a.up(p(1), 100);
    a.announce(p(1), t(1));
    b.up(p(1), 200);
    b.announce(p(1), t(1));
    let mut fx = Effects::default();
    for x in [&mut a, &mut b] {
        for batch in x.log.take_batches() {
            r.on_deltas(x.key, 1, batch, now, &mut fx);
        }
    }
    assert_eq!(r.route(&p(1)), Some(b.key));
    a.down(p(1));
    for batch in a.log.take_batches() {
        r.on_deltas(a.key, 1, batch, now, &mut fx);
    }
    assert_eq!(r.route(&p(1)), Some(b.key));
}

#[test]
fn given_a_farewell_then_records_go_at_once_and_stay_gone() {
    let mut r = Replica::new(ReplicaConfig::default());
    let now = Instant::now();
    let mut a = Node::new(5);
    a.up(p(1), 1);
    let mut fx = Effects::default();
    for batch in a.log.take_batches() {
        r.on_deltas(a.key, 5, batch, now, &mut fx);
    }
    r.on_farewell(a.key, 5, now, &mut fx);
    assert_eq!(r.route(&p(1)), None);
    r.on_heartbeat(a.key, 5, 1, status(), now, &mut fx);
    assert_eq!(r.origins().count(), 0, "a late heartbeat of the same incarnation is ignored");
    r.on_heartbeat(a.key, 6, 0, status(), now, &mut fx);
    assert_eq!(r.origins().count(), 1, "a restart comes back");
}

#[test]
fn given_limits_then_excess_records_are_rejected_and_counted() {
    let config =
        ReplicaConfig { max_peers_per_origin: 2, max_topics_per_peer: 1, ..ReplicaConfig::default() };
    let mut r = Replica::new(config);
    let now = Instant::now();
    let mut a = Node::new(1);
    for n in 1..=3 {
        a.up(p(n), 1);
    }
    a.announce(p(1), t(1));
    a.announce(p(1), t(2));
    let mut fx = Effects::default();
    for batch in a.log.take_batches() {
        r.on_deltas(a.key, 1, batch, now, &mut fx);
    }
    assert_eq!(r.peer_count(&a.key), 2);
    assert_eq!(fx.rejected, 2);
    assert_eq!(fx.changes.len(), 1);
}

/// Random loss, duplication and reordering of gossip: with heartbeats and snapshots the
/// replica ends equal to the origin's state every time.
#[test]
fn given_random_loss_and_reordering_then_the_replica_converges() {
    let mut seed = 0x9e3779b97f4a7c15u64;
    let mut rnd = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for _round in 0..50 {
        let mut r = Replica::new(ReplicaConfig::default());
        let mut a = Node::new(7);
        let mut view = View::default();
        let mut now = Instant::now();
        let mut in_flight: Vec<DeltaBatch> = Vec::new();
        for step in 0..200u64 {
            now += Duration::from_millis(10);
            let peer = p(rnd(8) as u8);
            match rnd(4) {
                0 if !a.state.contains_key(&peer) => a.up(peer, step),
                1 if a.state.contains_key(&peer) => a.down(peer),
                _ if a.state.contains_key(&peer) => {
                    let topic = t(rnd(3) as u8);
                    if !a.state[&peer].1.contains(&topic) {
                        a.announce(peer, topic);
                    }
                }
                _ => {}
            }
            in_flight.extend(a.log.take_batches());
            let mut fx = Effects::default();
            while !in_flight.is_empty() && rnd(3) != 0 {
                let i = rnd(in_flight.len() as u64) as usize;
                let batch = in_flight.swap_remove(i);
                match rnd(10) {
                    0 => {}
                    1 => {
                        r.on_deltas(a.key, 7, batch.clone(), now, &mut fx);
                        r.on_deltas(a.key, 7, batch, now, &mut fx);
                    }
                    _ => r.on_deltas(a.key, 7, batch, now, &mut fx),
                }
            }
            if step % 25 == 0 {
                r.on_heartbeat(a.key, 7, a.log.seq(), status(), now, &mut fx);
            }
            // Snapshot requests are answered with some delay (or lost).
            for origin in std::mem::take(&mut fx.fetch) {
                assert_eq!(origin, a.key);
                if rnd(4) != 0 {
                    let snap = a.snapshot();
                    view.apply(&fx);
                    fx.changes.clear();
                    r.on_snapshot(origin, snap, now, &mut fx);
                } else {
                    r.on_snapshot_failed(origin);
                }
            }
            view.apply(&fx);
        }
        // Quiet period: everything in flight is lost; heartbeats and snapshots repair it.
        for _ in 0..5 {
            now += Duration::from_secs(4);
            let mut fx = Effects::default();
            r.on_heartbeat(a.key, 7, a.log.seq(), status(), now, &mut fx);
            view.apply(&fx);
            for origin in std::mem::take(&mut fx.fetch) {
                let mut fx2 = Effects::default();
                r.on_snapshot(origin, a.snapshot(), now, &mut fx2);
                view.apply(&fx2);
            }
        }
        let want: std::collections::BTreeSet<(TopicId, PeerId)> =
            a.state.iter().flat_map(|(peer, (_, topics))| topics.iter().map(move |t| (*t, *peer))).collect();
        assert_eq!(view.0, want);
        assert!(r.synced());
        for peer in a.state.keys() {
            assert_eq!(r.route(peer), Some(a.key));
        }
    }
}
