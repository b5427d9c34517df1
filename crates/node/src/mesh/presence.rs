//! Presence replication as plain state machines: [`LocalLog`] numbers this node's own changes
//! for gossip, [`Replica`] holds what every other node (an *origin*) announced. No IO, no clock:
//! time comes in as an argument, so the rules (sequence gaps, restarts, TTL, moves) are unit
//! tested with simulated time and message loss.
//!
//! # Rules
//! - Every origin numbers its deltas 1, 2, 3, ... within an *incarnation* (its start time in
//!   Unix ms). A receiver applies a batch only if it continues the origin's sequence. A gap, an
//!   origin never seen with a non-zero sequence, or a larger incarnation (a restart) puts the
//!   origin in `Syncing`: batches are buffered (bounded) and a snapshot is fetched; the snapshot
//!   replaces the origin's records (only the differences become [`Change`]s) and the buffered
//!   batches after it are replayed. A heartbeat tells the origin's last sequence number, so
//!   a lost last batch is noticed within one heartbeat.
//! - An origin's records expire when nothing was heard from it for the TTL; when the last
//!   libp2p connection to it closes, its deadline shortens to the suspect grace (a crashed node's
//!   sockets close at once). A `Farewell` (graceful shutdown) removes them at once.
//! - A peer may be held by several origins for a moment (it reconnected to another node before
//!   the old node noticed). It is listed once; signals go to the holder with the newest
//!   `(since_ms, origin)` (its session start on that node's clock, then the node id).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use libp2p::PeerId as NodeKey;
use signal_mesh_proto::{PeerId, TopicId};

use super::wire::{Delta, DeltaBatch, NodeStatus, PeerRecord, Snapshot};

/// Most delta batches kept while an origin is syncing; more drop the buffer (the snapshot that
/// follows is fetched again).
const MAX_BUFFERED_BATCHES: usize = 256;

/// Most batches held ahead of an origin's sequence while waiting for the missing ones; one more
/// turns the gap into a snapshot fetch at once.
const MAX_AHEAD_BATCHES: usize = 64;

/// Most deltas in one gossip message.
pub const MAX_DELTAS_PER_BATCH: usize = 2048;

/// Replica settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplicaConfig {
    /// An origin not heard from for this long is removed.
    pub ttl: Duration,
    /// After the last connection to an origin closes, its records live at most this long
    /// unless it is heard from again (through another node).
    pub suspect_grace: Duration,
    /// A snapshot request not answered within this long is sent again.
    pub sync_retry: Duration,
    /// Most peers recorded per origin.
    pub max_peers_per_origin: usize,
    /// Most announced topics recorded per peer.
    pub max_topics_per_peer: usize,
    /// How long a gap in an origin's sequence may stay open before a snapshot is fetched.
    /// Gossip does not keep an origin's messages in order (a direct copy and a forwarded one
    /// race), so a batch ahead of the sequence usually means its predecessor is still on its
    /// way; fetching a snapshot at once (all of the origin's records) for that made a 10-node
    /// mesh under load fetch hundreds of snapshots. Zero: fetch at once.
    pub reorder_grace: Duration,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        ReplicaConfig {
            ttl: Duration::from_secs(10),
            suspect_grace: Duration::from_secs(3),
            sync_retry: Duration::from_secs(3),
            max_peers_per_origin: 250_000,
            max_topics_per_peer: 1024,
            reorder_grace: Duration::from_millis(500),
        }
    }
}

/// A change of one origin's announcements, for the directory to fold into its topic tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// `origin` now announces `peer` in `topic`.
    Announced { origin: NodeKey, topic: TopicId, peer: PeerId },
    /// `origin` no longer announces `peer` in `topic`.
    Withdrawn { origin: NodeKey, topic: TopicId, peer: PeerId },
}

/// What the driver must do after an input.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Effects {
    /// Announcement changes, in order.
    pub changes: Vec<Change>,
    /// Origins whose snapshot must be fetched.
    pub fetch: Vec<NodeKey>,
    /// Inputs that were dropped as invalid (counted by the caller).
    pub rejected: u64,
}

/// This node's own presence log: numbers local changes and hands them out in batches.
#[derive(Debug)]
pub struct LocalLog {
    incarnation: u64,
    seq: u64,
    pending: Vec<Delta>,
    /// A lone node (no mesh) records nothing.
    enabled: bool,
}

impl LocalLog {
    /// A log for the incarnation started at `incarnation` (Unix ms).
    pub fn new(incarnation: u64) -> LocalLog {
        LocalLog { incarnation, seq: 0, pending: Vec::new(), enabled: true }
    }

    /// The log of a node without a mesh: nothing is recorded.
    pub fn disabled() -> LocalLog {
        LocalLog { incarnation: 0, seq: 0, pending: Vec::new(), enabled: false }
    }

    /// This node's incarnation.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The number of the last change recorded.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Records a change (it gets the next sequence number).
    pub fn push(&mut self, delta: Delta) {
        if !self.enabled {
            return;
        }
        self.seq += 1;
        self.pending.push(delta);
    }

    /// The changes recorded since the last call, in batches of at most
    /// [`MAX_DELTAS_PER_BATCH`].
    pub fn take_batches(&mut self) -> Vec<DeltaBatch> {
        if self.pending.is_empty() {
            return Vec::new();
        }
        let pending = std::mem::take(&mut self.pending);
        let mut first_seq = self.seq + 1 - pending.len() as u64;
        let mut out = Vec::with_capacity(pending.len().div_ceil(MAX_DELTAS_PER_BATCH));
        let mut rest = pending.into_iter().peekable();
        while rest.peek().is_some() {
            let deltas: Vec<Delta> = rest.by_ref().take(MAX_DELTAS_PER_BATCH).collect();
            let n = deltas.len() as u64;
            out.push(DeltaBatch { first_seq, deltas });
            first_seq += n;
        }
        out
    }
}

#[derive(Debug)]
struct Record {
    since_ms: u64,
    topics: HashSet<TopicId>,
}

#[derive(Debug)]
enum Sync {
    /// Records are complete up to `seq`.
    Synced,
    /// Waiting for a snapshot requested at `requested` (None: request failed or not sent).
    Syncing { requested: Option<Instant>, buffered: Vec<DeltaBatch> },
}

#[derive(Debug)]
struct Origin {
    incarnation: u64,
    seq: u64,
    sync: Sync,
    last_heard: Instant,
    deadline: Instant,
    records: HashMap<PeerId, Record>,
    status: Option<NodeStatus>,
    /// While synced: batches that arrived ahead of `seq`, waiting for the missing ones.
    ahead: Vec<DeltaBatch>,
    /// The highest sequence number the origin said it has published (heartbeats, batches).
    published: u64,
    /// Since when `seq` has been behind `published` (None: no gap).
    gap_since: Option<Instant>,
}

/// What the replica knows about one origin, for status pages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginView {
    /// The origin node.
    pub node: NodeKey,
    /// Its incarnation.
    pub incarnation: u64,
    /// The last sequence number applied.
    pub seq: u64,
    /// Whether its records are complete.
    pub synced: bool,
    /// Peers recorded.
    pub peers: usize,
    /// How long ago it was last heard from.
    pub last_heard: Duration,
    /// Its last heartbeat's status.
    pub status: Option<NodeStatus>,
}

/// Every other node's presence. See the module docs.
#[derive(Debug)]
pub struct Replica {
    config: ReplicaConfig,
    origins: HashMap<NodeKey, Origin>,
    /// Peer -> the origins holding it, with the session start there.
    holders: HashMap<PeerId, Vec<(u64, NodeKey)>>,
    /// Origins that said farewell, with that incarnation and when (ignored until a newer one).
    farewells: HashMap<NodeKey, (u64, Instant)>,
}

impl Replica {
    /// An empty replica.
    pub fn new(config: ReplicaConfig) -> Replica {
        Replica { config, origins: HashMap::new(), holders: HashMap::new(), farewells: HashMap::new() }
    }

    /// The settings.
    pub fn config(&self) -> &ReplicaConfig {
        &self.config
    }

    /// A gossiped batch of `origin`'s deltas.
    pub fn on_deltas(
        &mut self,
        origin: NodeKey,
        incarnation: u64,
        batch: DeltaBatch,
        now: Instant,
        fx: &mut Effects,
    ) {
        let ttl = self.config.ttl;
        let Some(o) = self.admit(origin, incarnation, now, fx) else { return };
        o.last_heard = now;
        o.deadline = now + ttl;
        // A new origin's first batch needs no snapshot: there was nothing before it.
        let fresh = o.seq == 0
            && o.records.is_empty()
            && matches!(&o.sync, Sync::Syncing { requested: None, buffered } if buffered.is_empty());
        if fresh && batch.first_seq == 1 {
            o.sync = Sync::Synced;
        }
        if let Sync::Syncing { buffered, .. } = &mut o.sync {
            if buffered.len() >= MAX_BUFFERED_BATCHES {
                buffered.clear();
            }
            buffered.push(batch);
            self.request_snapshot(origin, now, fx);
            return;
        }
        if self.apply_batch(origin, &batch, fx) {
            self.drain_ahead(origin);
            self.apply_ahead(origin, fx);
        } else {
            self.hold(origin, batch, now, fx);
        }
    }

    /// A heartbeat: `origin` is alive and has published up to `seq`.
    pub fn on_heartbeat(
        &mut self,
        origin: NodeKey,
        incarnation: u64,
        seq: u64,
        status: NodeStatus,
        now: Instant,
        fx: &mut Effects,
    ) {
        let retry = self.config.sync_retry;
        let ttl = self.config.ttl;
        let Some(o) = self.admit(origin, incarnation, now, fx) else { return };
        o.last_heard = now;
        o.deadline = now + ttl;
        o.status = Some(status);
        match &o.sync {
            Sync::Synced if seq > o.seq => {
                // The last batches may still be on their way: a gap only after the grace.
                o.published = o.published.max(seq);
                let since = *o.gap_since.get_or_insert(now);
                if now.saturating_duration_since(since) >= self.config.reorder_grace {
                    self.start_sync(origin, Vec::new(), now, fx);
                }
            }
            Sync::Synced => {}
            Sync::Syncing { requested, .. } => {
                if o.seq == 0 && seq == 0 && o.records.is_empty() {
                    // A new origin with nothing published: nothing to fetch.
                    o.sync = Sync::Synced;
                } else if requested.is_none_or(|at| now.saturating_duration_since(at) >= retry) {
                    self.request_snapshot(origin, now, fx);
                }
            }
        }
    }

    /// `origin`'s snapshot arrived.
    pub fn on_snapshot(&mut self, origin: NodeKey, snapshot: Snapshot, now: Instant, fx: &mut Effects) {
        let ttl = self.config.ttl;
        let max_peers = self.config.max_peers_per_origin;
        let max_topics = self.config.max_topics_per_peer;
        let Some(o) = self.admit(origin, snapshot.incarnation, now, fx) else { return };
        let mut buffered = match &mut o.sync {
            Sync::Syncing { buffered, .. } => std::mem::take(buffered),
            Sync::Synced if snapshot.seq <= o.seq => return,
            Sync::Synced => Vec::new(),
        };
        buffered.append(&mut o.ahead);
        o.gap_since = None;
        o.last_heard = now;
        o.deadline = now + ttl;
        o.seq = snapshot.seq;
        o.sync = Sync::Synced;
        // Replace the records, emitting only the differences.
        let mut wanted: HashMap<PeerId, PeerRecord> = HashMap::with_capacity(snapshot.peers.len());
        for record in snapshot.peers {
            if wanted.len() >= max_peers && !wanted.contains_key(&record.peer) {
                fx.rejected += 1;
                continue;
            }
            wanted.insert(record.peer, record);
        }
        let stale: Vec<PeerId> = o.records.keys().filter(|p| !wanted.contains_key(p)).copied().collect();
        for peer in stale {
            self.apply(origin, Delta::Down { peer }, fx);
        }
        for (peer, record) in wanted {
            let Some(o) = self.origins.get(&origin) else { return };
            let topics: HashSet<TopicId> = record.topics.into_iter().take(max_topics).collect();
            let old_topics: Vec<TopicId> = match o.records.get(&peer) {
                Some(r) if r.since_ms == record.since_ms => {
                    r.topics.iter().filter(|t| !topics.contains(t)).copied().collect()
                }
                Some(_) => {
                    self.apply(origin, Delta::Down { peer }, fx);
                    Vec::new()
                }
                None => Vec::new(),
            };
            for topic in old_topics {
                self.apply(origin, Delta::Withdraw { peer, topic }, fx);
            }
            self.apply(origin, Delta::Up { peer, since_ms: record.since_ms }, fx);
            for topic in topics {
                self.apply(origin, Delta::Announce { peer, topic }, fx);
            }
        }
        // Replay what arrived while syncing.
        let mut batches = buffered;
        batches.sort_by_key(|b| b.first_seq);
        for (i, batch) in batches.iter().enumerate() {
            if !self.apply_batch(origin, batch, fx) {
                let rest = batches[i..].to_vec();
                self.start_sync(origin, rest, now, fx);
                return;
            }
        }
    }

    /// Fetching `origin`'s snapshot failed: the next heartbeat asks again.
    pub fn on_snapshot_failed(&mut self, origin: NodeKey) {
        if let Some(Origin { sync: Sync::Syncing { requested, .. }, .. }) = self.origins.get_mut(&origin) {
            *requested = None;
        }
    }

    /// `origin` shut down gracefully.
    pub fn on_farewell(&mut self, origin: NodeKey, incarnation: u64, now: Instant, fx: &mut Effects) {
        if self.admit(origin, incarnation, now, fx).is_none() {
            return;
        }
        self.remove_origin(origin, fx);
        self.farewells.insert(origin, (incarnation, now));
    }

    /// The last libp2p connection to `origin` closed: unless it is heard from again, its
    /// records go after the suspect grace.
    pub fn on_link_down(&mut self, origin: NodeKey, now: Instant) {
        if let Some(o) = self.origins.get_mut(&origin) {
            o.deadline = o.deadline.min(now + self.config.suspect_grace);
        }
    }

    /// Removes the origins whose deadline has passed.
    pub fn expire(&mut self, now: Instant, fx: &mut Effects) {
        let expired: Vec<NodeKey> =
            self.origins.iter().filter(|(_, o)| o.deadline <= now).map(|(k, _)| *k).collect();
        for origin in expired {
            self.remove_origin(origin, fx);
        }
        let ttl = self.config.ttl;
        self.farewells.retain(|_, (_, at)| now.saturating_duration_since(*at) < ttl * 2);
        // Gaps that stayed open for the grace are losses: fetch a snapshot.
        let grace = self.config.reorder_grace;
        let overdue: Vec<NodeKey> = self
            .origins
            .iter()
            .filter(|(_, o)| {
                matches!(o.sync, Sync::Synced)
                    && o.gap_since.is_some_and(|at| now.saturating_duration_since(at) >= grace)
            })
            .map(|(k, _)| *k)
            .collect();
        for origin in overdue {
            self.start_sync(origin, Vec::new(), now, fx);
        }
    }

    /// The origin a signal for `peer` goes to: the holder with the newest session.
    pub fn route(&self, peer: &PeerId) -> Option<NodeKey> {
        self.holders.get(peer)?.iter().max().map(|(_, origin)| *origin)
    }

    /// Whether every known origin's records are complete.
    pub fn synced(&self) -> bool {
        self.origins.values().all(|o| matches!(o.sync, Sync::Synced))
    }

    /// Origins currently known.
    pub fn origins(&self) -> impl Iterator<Item = NodeKey> + '_ {
        self.origins.keys().copied()
    }

    /// Peers recorded for `origin`.
    pub fn peer_count(&self, origin: &NodeKey) -> usize {
        self.origins.get(origin).map_or(0, |o| o.records.len())
    }

    /// Every origin, for status pages.
    pub fn views(&self, now: Instant) -> Vec<OriginView> {
        let mut out: Vec<OriginView> = self
            .origins
            .iter()
            .map(|(node, o)| OriginView {
                node: *node,
                incarnation: o.incarnation,
                seq: o.seq,
                synced: matches!(o.sync, Sync::Synced),
                peers: o.records.len(),
                last_heard: now.saturating_duration_since(o.last_heard),
                status: o.status.clone(),
            })
            .collect();
        out.sort_by_key(|v| v.node);
        out
    }

    /// The state of `origin` after an admission check: `None` for a stale incarnation (or one
    /// that said farewell). A new origin or incarnation starts syncing.
    fn admit(
        &mut self,
        origin: NodeKey,
        incarnation: u64,
        now: Instant,
        fx: &mut Effects,
    ) -> Option<&mut Origin> {
        if self.farewells.get(&origin).is_some_and(|(inc, _)| incarnation <= *inc) {
            return None;
        }
        match self.origins.get(&origin).map(|o| o.incarnation) {
            Some(known) if incarnation < known => return None,
            Some(known) if incarnation > known => self.remove_origin(origin, fx),
            _ => {}
        }
        let ttl = self.config.ttl;
        Some(self.origins.entry(origin).or_insert_with(|| Origin {
            incarnation,
            seq: 0,
            sync: Sync::Syncing { requested: None, buffered: Vec::new() },
            last_heard: now,
            deadline: now + ttl,
            records: HashMap::new(),
            status: None,
            ahead: Vec::new(),
            published: 0,
            gap_since: None,
        }))
    }

    fn start_sync(&mut self, origin: NodeKey, mut buffered: Vec<DeltaBatch>, now: Instant, fx: &mut Effects) {
        if let Some(o) = self.origins.get_mut(&origin) {
            buffered.append(&mut o.ahead);
            o.gap_since = None;
            o.sync = Sync::Syncing { requested: None, buffered };
            self.request_snapshot(origin, now, fx);
        }
    }

    fn request_snapshot(&mut self, origin: NodeKey, now: Instant, fx: &mut Effects) {
        let retry = self.config.sync_retry;
        if let Some(Origin { sync: Sync::Syncing { requested, .. }, .. }) = self.origins.get_mut(&origin)
            && requested.is_none_or(|at| now.saturating_duration_since(at) >= retry)
        {
            *requested = Some(now);
            fx.fetch.push(origin);
        }
    }

    /// Holds a batch that arrived ahead of the sequence; past the bound (or with no grace) the
    /// gap is handled as a loss at once.
    fn hold(&mut self, origin: NodeKey, batch: DeltaBatch, now: Instant, fx: &mut Effects) {
        let grace = self.config.reorder_grace;
        let Some(o) = self.origins.get_mut(&origin) else { return };
        if grace.is_zero() || o.ahead.len() >= MAX_AHEAD_BATCHES {
            self.start_sync(origin, vec![batch], now, fx);
            return;
        }
        o.published =
            o.published.max(batch.first_seq.saturating_add(batch.deltas.len() as u64).saturating_sub(1));
        o.gap_since.get_or_insert(now);
        o.ahead.push(batch);
    }

    /// Drops held batches that the sequence has caught up with entirely.
    fn drain_ahead(&mut self, origin: NodeKey) {
        if let Some(o) = self.origins.get_mut(&origin) {
            let seq = o.seq;
            o.ahead.retain(|b| b.first_seq.saturating_add(b.deltas.len() as u64) > seq.saturating_add(1));
        }
    }

    /// Applies held batches that now continue the sequence; closes the gap once caught up.
    fn apply_ahead(&mut self, origin: NodeKey, fx: &mut Effects) {
        // Bounded: each pass removes one held batch.
        loop {
            let Some(o) = self.origins.get_mut(&origin) else { return };
            let next = o.seq.saturating_add(1);
            let Some(i) = o.ahead.iter().position(|b| b.first_seq <= next) else {
                if o.ahead.is_empty() && o.seq >= o.published {
                    o.gap_since = None;
                }
                return;
            };
            let batch = o.ahead.swap_remove(i);
            self.apply_batch(origin, &batch, fx);
        }
    }

    /// Applies a batch that continues (or overlaps) the origin's sequence; false on a gap.
    fn apply_batch(&mut self, origin: NodeKey, batch: &DeltaBatch, fx: &mut Effects) -> bool {
        let Some(o) = self.origins.get(&origin) else { return true };
        let seq = o.seq;
        // Numbers start at 1 (the wire decoder refuses 0); an empty batch moves nothing. Found by
        // the `node_core` fuzz target: an empty batch numbered 0 underflowed `last` below.
        let Some(last) = batch.first_seq.saturating_add(batch.deltas.len() as u64).checked_sub(1) else {
            return true;
        };
        if batch.deltas.is_empty() {
            return true;
        }
        if batch.first_seq > seq.saturating_add(1) {
            return false;
        }
        let skip = (seq.saturating_add(1) - batch.first_seq) as usize;
        for delta in batch.deltas.iter().skip(skip).copied() {
            self.apply(origin, delta, fx);
        }
        if let Some(o) = self.origins.get_mut(&origin) {
            o.seq = o.seq.max(last);
        }
        true
    }

    fn apply(&mut self, origin: NodeKey, delta: Delta, fx: &mut Effects) {
        let max_peers = self.config.max_peers_per_origin;
        let max_topics = self.config.max_topics_per_peer;
        let Some(o) = self.origins.get_mut(&origin) else { return };
        match delta {
            Delta::Up { peer, since_ms } => {
                if let Some(r) = o.records.get_mut(&peer) {
                    if r.since_ms != since_ms {
                        r.since_ms = since_ms;
                        let holders = self.holders.entry(peer).or_default();
                        holders.retain(|(_, h)| *h != origin);
                        holders.push((since_ms, origin));
                    }
                    return;
                }
                if o.records.len() >= max_peers {
                    fx.rejected += 1;
                    return;
                }
                o.records.insert(peer, Record { since_ms, topics: HashSet::new() });
                self.holders.entry(peer).or_default().push((since_ms, origin));
            }
            Delta::Down { peer } => {
                let Some(record) = o.records.remove(&peer) else { return };
                for topic in record.topics {
                    fx.changes.push(Change::Withdrawn { origin, topic, peer });
                }
                if let Some(holders) = self.holders.get_mut(&peer) {
                    holders.retain(|(_, h)| *h != origin);
                    if holders.is_empty() {
                        self.holders.remove(&peer);
                    }
                }
            }
            Delta::Announce { peer, topic } => match o.records.get_mut(&peer) {
                Some(r) if r.topics.len() < max_topics || r.topics.contains(&topic) => {
                    if r.topics.insert(topic) {
                        fx.changes.push(Change::Announced { origin, topic, peer });
                    }
                }
                _ => fx.rejected += 1,
            },
            Delta::Withdraw { peer, topic } => {
                if let Some(r) = o.records.get_mut(&peer)
                    && r.topics.remove(&topic)
                {
                    fx.changes.push(Change::Withdrawn { origin, topic, peer });
                }
            }
        }
    }

    fn remove_origin(&mut self, origin: NodeKey, fx: &mut Effects) {
        let Some(o) = self.origins.get(&origin) else { return };
        let peers: Vec<PeerId> = o.records.keys().copied().collect();
        for peer in peers {
            self.apply(origin, Delta::Down { peer }, fx);
        }
        self.origins.remove(&origin);
    }
}

#[cfg(test)]
mod tests;
