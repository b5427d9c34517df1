//! Who is connected and which topics they joined, owned by one task.
//!
//! [`Directory`] is the plain data structure with synchronous methods (benchmarks and unit tests
//! drive it directly). [`spawn`] moves it into a task that applies [`Command`]s received over a
//! bounded channel; connections reach it through the cloneable [`DirectoryHandle`]. Nothing is
//! shared behind a lock.
//!
//! The directory writes every reply and event straight into the bounded outbound queue of the
//! connection it is for, as pre-encoded frames: a connection task never waits for the directory,
//! an event for many members is encoded once and shared, and signals between two peers keep their
//! order (one channel in, one queue out). A connection whose queue is full is evicted with
//! `SLOW_CONSUMER`.
//!
//! Tables: peer -> [`PeerEntry`] (queue, close signal, joined topics) and topic -> announced peers
//! (a `BTreeSet`, so lookup pages come in peer id order in O(log n + page)) and all members.
//!
//! # The mesh
//! The directory is also the one owner of what other nodes announced (the presence
//! [`Replica`]), so `Lookup` and `PeerJoined`/`PeerLeft` cover the whole mesh and a lookup never
//! sees half an update. A topic's announced set is the union of local announcements and those
//! of other nodes (a per-peer count of the origins announcing it), so a peer held by two nodes
//! for a moment (it moved) is listed once and its members see no leave/join for the move.
//! Local changes are numbered in the [`LocalLog`] and handed to the mesh task as
//! [`Outbound`] messages after each batch of commands; remote presence arrives as
//! [`Command::Presence`]. A signal for a peer on another node is handed to the [`Forwarder`]
//! without waiting; the result comes back to the sender through the link task.

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, BinaryHeap, HashMap, HashSet};
use std::ops::Bound;

use bytes::Bytes;
use signal_mesh_proto::{
    AckMode, ErrorCode, Event, PeerId, RequestId, ResponseBody, ServerMessage, TopicId, encode_server,
};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};

use crate::joined::Joined;
use crate::mesh::links::{Forward, Forwarder, NoMesh, RemoteReply, ReplyTo};
use crate::mesh::presence::{Change, Effects, LocalLog, OriginView, Replica, ReplicaConfig};
use crate::mesh::wire::{Delta, DeltaBatch, NodeStatus, PeerRecord, Snapshot};
use crate::metrics::{Metrics, Route};
use crate::outbox::{OutboxSender, PushError};
use crate::session::Op;
use libp2p::PeerId as NodeKey;
use signal_mesh_proto::Welcome;
use std::time::Instant;

/// Identifies one connection (peer ids repeat across reconnects; connection ids do not).
pub type ConnId = u64;

/// Why the directory closes a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Close {
    /// The code for the `Goodbye` and the WebSocket close.
    pub code: ErrorCode,
    /// A human-readable reason.
    pub reason: &'static str,
}

/// What the directory needs to reach a connection.
#[derive(Debug)]
pub struct Outlet {
    /// The connection.
    pub conn: ConnId,
    /// Its bounded outbound queue of encoded frames, which also carries the close signal
    /// (replaced, slow consumer).
    pub queue: OutboxSender,
}

/// One registered peer.
#[derive(Debug)]
struct PeerEntry {
    conn: ConnId,
    queue: OutboxSender,
    /// Joined topics and whether the peer announces itself in each.
    topics: Joined,
    /// When its session started (Unix ms), the tie-breaker when a peer moves between nodes.
    since_ms: u64,
}

#[derive(Debug, Default)]
struct Topic {
    /// Announced anywhere in the mesh: the union of local and remote announcements.
    announced: BTreeSet<PeerId>,
    /// Local members (announced or silent): they get the topic's events.
    members: HashSet<PeerId>,
    /// Remote announcements: peer -> how many other nodes announce it here.
    remote: HashMap<PeerId, u16>,
}

impl Topic {
    fn is_empty(&self) -> bool {
        self.members.is_empty() && self.announced.is_empty()
    }
}

/// What the directory hands to the mesh task (after each batch of commands).
#[derive(Debug)]
pub enum Outbound {
    /// Local presence changes to gossip.
    Deltas(DeltaBatch),
    /// Fetch this origin's snapshot.
    Fetch(NodeKey),
    /// The local state for the heartbeat (answer to [`Command::Tick`]).
    Report(Report),
}

/// The directory's part of this node's heartbeat status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// The last local presence sequence number.
    pub seq: u64,
    /// Counts.
    pub stats: Stats,
    /// Counters since start.
    pub counters: Counters,
    /// Whether every known origin is synced.
    pub synced: bool,
    /// Origins known.
    pub origins: usize,
}

/// Counters since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Requests served.
    pub requests: u64,
    /// Requests answered with an error.
    pub errors: u64,
    /// Signals delivered between two local peers.
    pub signals_local: u64,
    /// Signals handed to another node.
    pub signals_forwarded: u64,
    /// Signals from other nodes delivered to a local peer.
    pub signals_received: u64,
    /// Remote presence records dropped as invalid or over a limit.
    pub presence_rejected: u64,
}

/// Remote presence input, parsed by the mesh task.
#[derive(Debug)]
pub enum PresenceInput {
    /// A batch of an origin's deltas.
    Deltas { origin: NodeKey, incarnation: u64, batch: DeltaBatch },
    /// An origin's heartbeat.
    Heartbeat { origin: NodeKey, incarnation: u64, seq: u64, status: NodeStatus },
    /// An origin's graceful shutdown.
    Farewell { origin: NodeKey, incarnation: u64 },
    /// The snapshot of an origin.
    Snapshot { origin: NodeKey, snapshot: Snapshot },
    /// Fetching an origin's snapshot failed.
    SnapshotFailed { origin: NodeKey },
    /// The last connection to a node closed.
    LinkDown { node: NodeKey },
}

/// Counts for status pages and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Registered peers.
    pub peers: usize,
    /// Topics with at least one member.
    pub topics: usize,
}

/// A topic and its peer counts ([`Directory::top_topics`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TopicCount {
    /// The topic.
    pub topic: TopicId,
    /// Peers announced in it anywhere in the mesh.
    pub announced: usize,
    /// Members connected to this node (announced or silent).
    pub members: usize,
}

/// The busiest topics ([`Directory::top_topics`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopTopics {
    /// Topics known (local members or announced in the mesh).
    pub total: usize,
    /// The busiest, most announced peers first.
    pub top: Vec<TopicCount>,
}

/// The directory's tables. See the module docs.
#[derive(Debug)]
pub struct Directory {
    peers: HashMap<PeerId, PeerEntry>,
    topics: HashMap<TopicId, Topic>,
    max_topics_per_peer: usize,
    /// Peers to evict once the current command is done (their queue overflowed). A peer may be
    /// listed twice; the second removal finds nothing.
    evictions: Vec<PeerId>,
    /// This node's presence changes, numbered for gossip.
    log: LocalLog,
    /// Other nodes' presence.
    replica: Replica,
    /// How signals reach other nodes.
    forwarder: Box<dyn Forwarder>,
    /// For the mesh task, drained by [`Directory::take_outbound`].
    outbound: Vec<Outbound>,
    counters: Counters,
    /// Prometheus counters (see [`crate::metrics`]).
    metrics: Metrics,
}

impl Directory {
    /// An empty directory enforcing `max_topics_per_peer`.
    pub fn new(max_topics_per_peer: u32) -> Directory {
        let mut d = Directory::with_mesh(max_topics_per_peer, 0, ReplicaConfig::default(), Box::new(NoMesh));
        d.log = LocalLog::disabled();
        d
    }

    /// A directory of a mesh node: `incarnation` numbers its presence log (its start time in
    /// Unix ms), `replica` bounds what other nodes may announce, `forwarder` reaches them.
    pub fn with_mesh(
        max_topics_per_peer: u32,
        incarnation: u64,
        replica: ReplicaConfig,
        forwarder: Box<dyn Forwarder>,
    ) -> Directory {
        Directory {
            peers: HashMap::new(),
            topics: HashMap::new(),
            max_topics_per_peer: max_topics_per_peer as usize,
            evictions: Vec::new(),
            log: LocalLog::new(incarnation),
            replica: Replica::new(replica),
            forwarder,
            outbound: Vec::new(),
            counters: Counters::default(),
            metrics: Metrics::default(),
        }
    }

    /// Counts into `metrics` from now on.
    pub fn set_metrics(&mut self, metrics: Metrics) {
        self.metrics = metrics;
    }

    /// The `n` topics with the most announced peers (most first, then by id), and how many
    /// topics there are: O(topics · log n), for the status page (which caches it).
    pub fn top_topics(&self, n: usize) -> TopTopics {
        let mut heap = BinaryHeap::with_capacity(n.saturating_add(1));
        for (id, t) in &self.topics {
            heap.push(Reverse((t.announced.len(), Reverse(*id))));
            if heap.len() > n {
                heap.pop();
            }
        }
        let mut top: Vec<TopicCount> = heap
            .into_iter()
            .map(|Reverse((announced, Reverse(topic)))| TopicCount {
                topic,
                announced,
                members: self.topics.get(&topic).map_or(0, |t| t.members.len()),
            })
            .collect();
        top.sort_by(|a, b| b.announced.cmp(&a.announced).then(a.topic.cmp(&b.topic)));
        TopTopics { total: self.topics.len(), top }
    }

    /// What the mesh task must do since the last call: presence deltas first.
    pub fn take_outbound(&mut self) -> Vec<Outbound> {
        let mut out: Vec<Outbound> = self.log.take_batches().into_iter().map(Outbound::Deltas).collect();
        out.append(&mut self.outbound);
        out
    }

    /// The counters.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// This node's presence as of now, for a snapshot request.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            incarnation: self.log.incarnation(),
            seq: self.log.seq(),
            peers: self
                .peers
                .iter()
                .map(|(peer, e)| PeerRecord {
                    peer: *peer,
                    since_ms: e.since_ms,
                    topics: e.topics.iter().filter(|&(_, a)| a).map(|(t, _)| t).collect(),
                })
                .collect(),
        }
    }

    /// Every other node known, for status pages.
    pub fn origins(&self, now: Instant) -> Vec<OriginView> {
        self.replica.views(now)
    }

    /// The edge URLs of the other live nodes (for `Welcome.node_urls`).
    pub fn node_urls(&self) -> Vec<String> {
        let mut urls: Vec<String> = self
            .replica
            .views(Instant::now())
            .into_iter()
            .filter_map(|v| v.status.map(|s| s.public_url))
            .filter(|u| !u.is_empty() && u.len() <= signal_mesh_proto::message::MAX_NODE_URL_BYTES)
            .collect();
        urls.sort();
        urls.dedup();
        urls.truncate(signal_mesh_proto::message::MAX_NODE_URLS);
        urls
    }

    /// Counts.
    pub fn stats(&self) -> Stats {
        Stats { peers: self.peers.len(), topics: self.topics.len() }
    }

    /// Registers an authenticated connection of `peer` and queues `welcome` as its first frame.
    /// An older connection of the same peer is closed with `SESSION_REPLACED`; the new one takes
    /// over its topic memberships, so other members see no `PeerLeft`/`PeerJoined` for the swap.
    /// Returns whether an older connection was replaced.
    pub fn register(&mut self, peer: PeerId, outlet: Outlet, welcome: Bytes) -> bool {
        self.register_since(peer, outlet, welcome, 0)
    }

    /// [`Directory::register`] of a session that started at `since_ms` (Unix ms).
    pub fn register_since(&mut self, peer: PeerId, outlet: Outlet, welcome: Bytes, since_ms: u64) -> bool {
        // A fresh queue has room for the welcome; a failure means the connection is already gone.
        let _ = outlet.queue.try_send(welcome);
        let mut entry =
            PeerEntry { conn: outlet.conn, queue: outlet.queue, topics: Joined::default(), since_ms };
        let replaced = match self.peers.entry(peer) {
            Entry::Occupied(mut o) => {
                let old = o.get_mut();
                entry.topics = std::mem::take(&mut old.topics);
                old.queue.close(Close {
                    code: ErrorCode::SessionReplaced,
                    reason: "a newer connection with the same peer id replaced this one",
                });
                o.insert(entry);
                true
            }
            Entry::Vacant(v) => {
                v.insert(entry);
                false
            }
        };
        if !replaced {
            self.log.push(Delta::Up { peer, since_ms });
        }
        self.run_evictions();
        replaced
    }

    /// Removes `peer`'s connection `conn` (if it is still the registered one) from every topic;
    /// announced memberships end with a `PeerLeft` to the other members.
    pub fn unregister(&mut self, peer: PeerId, conn: ConnId) {
        if self.peers.get(&peer).is_some_and(|e| e.conn == conn) {
            self.remove(peer);
            self.run_evictions();
        }
    }

    /// Serves request `id` of `peer` on connection `conn`; the one response goes to its queue.
    pub fn request(&mut self, peer: PeerId, conn: ConnId, id: RequestId, op: Op) {
        if self.peers.get(&peer).is_none_or(|e| e.conn != conn) {
            // A replaced connection's late request: it is being closed, nobody to answer.
            return;
        }
        self.counters.requests += 1;
        self.metrics.request(&op);
        let body = match op {
            Op::Join { topic, announce } => self.join(peer, topic, announce),
            Op::Leave { topic } => self.leave(peer, topic),
            Op::Lookup { topic, limit, cursor } => self.lookup(topic, limit.get(), cursor),
            Op::Signal { to, payload, ack } => match self.signal(peer, to, payload, id, ack) {
                // Delivered, and the sender asked to hear about failures only.
                Some(ResponseBody::Ok) if !ack.acks_success() => {
                    self.run_evictions();
                    return;
                }
                Some(body) => body,
                // Forwarded: the link task answers (failures only, if so asked).
                None => {
                    self.run_evictions();
                    return;
                }
            },
        };
        if let ResponseBody::Error { code, .. } = &body {
            self.counters.errors += 1;
            self.metrics.error(*code);
        }
        let frame = encode_server(ServerMessage::Response { id, body });
        self.deliver(peer, frame);
        self.run_evictions();
    }

    fn join(&mut self, peer: PeerId, topic: TopicId, announce: bool) -> ResponseBody {
        let Some(entry) = self.peers.get_mut(&peer) else { return internal() };
        let was = match entry.topics.get(&topic) {
            Some(was) => Some(was),
            None if entry.topics.len() >= self.max_topics_per_peer => {
                return ResponseBody::Error {
                    code: ErrorCode::LimitExceeded,
                    message: format!("at most {} topics per peer", self.max_topics_per_peer),
                };
            }
            None => None,
        };
        entry.topics.insert(topic, announce);
        let t = self.topics.entry(topic).or_default();
        t.members.insert(peer);
        match (was, announce) {
            (Some(true), true) | (Some(false) | None, false) => {}
            (Some(false) | None, true) => {
                self.log.push(Delta::Announce { peer, topic });
                if t.announced.insert(peer) {
                    self.broadcast(topic, peer, Event::PeerJoined { topic, peer });
                }
            }
            (Some(true), false) => {
                self.log.push(Delta::Withdraw { peer, topic });
                if !t.remote.contains_key(&peer) {
                    t.announced.remove(&peer);
                    self.broadcast(topic, peer, Event::PeerLeft { topic, peer });
                }
            }
        }
        ResponseBody::Ok
    }

    fn leave(&mut self, peer: PeerId, topic: TopicId) -> ResponseBody {
        let Some(entry) = self.peers.get_mut(&peer) else { return internal() };
        match entry.topics.remove(&topic) {
            None => ResponseBody::Error {
                code: ErrorCode::NotJoined,
                message: format!("topic {topic:?} was not joined"),
            },
            Some(announced) => {
                self.leave_topic(peer, topic, announced);
                ResponseBody::Ok
            }
        }
    }

    /// Removes `peer` from `topic`'s tables (its own entry is already updated).
    fn leave_topic(&mut self, peer: PeerId, topic: TopicId, announced: bool) {
        if announced {
            self.log.push(Delta::Withdraw { peer, topic });
        }
        if let Some(t) = self.topics.get_mut(&topic) {
            t.members.remove(&peer);
            // Still announced by another node (the peer moved): no leave.
            let gone = announced && !t.remote.contains_key(&peer);
            if gone {
                t.announced.remove(&peer);
            }
            if t.is_empty() {
                self.topics.remove(&topic);
            } else if gone {
                self.broadcast(topic, peer, Event::PeerLeft { topic, peer });
            }
        }
    }

    /// Folds one remote announcement change into the topic tables.
    fn apply_change(&mut self, change: Change) {
        match change {
            Change::Announced { topic, peer, .. } => {
                let t = self.topics.entry(topic).or_default();
                *t.remote.entry(peer).or_default() += 1;
                if t.announced.insert(peer) {
                    self.broadcast(topic, peer, Event::PeerJoined { topic, peer });
                }
            }
            Change::Withdrawn { topic, peer, .. } => {
                let locally = self.peers.get(&peer).and_then(|e| e.topics.get(&topic)) == Some(true);
                let Some(t) = self.topics.get_mut(&topic) else { return };
                let Some(count) = t.remote.get_mut(&peer) else { return };
                *count -= 1;
                if *count > 0 {
                    return;
                }
                t.remote.remove(&peer);
                if locally {
                    return;
                }
                t.announced.remove(&peer);
                if t.is_empty() {
                    self.topics.remove(&topic);
                } else {
                    self.broadcast(topic, peer, Event::PeerLeft { topic, peer });
                }
            }
        }
    }

    /// Applies what the replica decided.
    fn apply_effects(&mut self, fx: Effects) {
        self.counters.presence_rejected += fx.rejected;
        self.metrics.presence_rejected(fx.rejected);
        for change in fx.changes {
            self.apply_change(change);
        }
        self.outbound.extend(fx.fetch.into_iter().map(Outbound::Fetch));
        self.run_evictions();
    }

    /// Remote presence input at `now`.
    pub fn presence(&mut self, input: PresenceInput, now: Instant) {
        let mut fx = Effects::default();
        match input {
            PresenceInput::Deltas { origin, incarnation, batch } => {
                self.replica.on_deltas(origin, incarnation, batch, now, &mut fx)
            }
            PresenceInput::Heartbeat { origin, incarnation, seq, status } => {
                self.replica.on_heartbeat(origin, incarnation, seq, status, now, &mut fx)
            }
            PresenceInput::Farewell { origin, incarnation } => {
                self.replica.on_farewell(origin, incarnation, now, &mut fx)
            }
            PresenceInput::Snapshot { origin, snapshot } => {
                self.replica.on_snapshot(origin, snapshot, now, &mut fx)
            }
            PresenceInput::SnapshotFailed { origin } => self.replica.on_snapshot_failed(origin),
            PresenceInput::LinkDown { node } => self.replica.on_link_down(node, now),
        }
        self.apply_effects(fx);
    }

    /// Expires silent origins; returns the state for the heartbeat.
    pub fn tick(&mut self, now: Instant) -> Report {
        let mut fx = Effects::default();
        self.replica.expire(now, &mut fx);
        self.apply_effects(fx);
        Report {
            seq: self.log.seq(),
            stats: self.stats(),
            counters: self.counters,
            synced: self.replica.synced(),
            origins: self.replica.origins().count(),
        }
    }

    /// A signal forwarded by another node for a local peer.
    pub fn remote_signal(&mut self, from: PeerId, to: PeerId, payload: Bytes, reply: RemoteReply) {
        // Never forwarded again: a peer that is not here is not found (no loops).
        let result = if self.peers.contains_key(&to) {
            let bytes = payload.len();
            let frame = encode_server(ServerMessage::Event(Event::Signal { from, payload }));
            match self.deliver_signal(from, to, frame) {
                Ok(()) => {
                    self.counters.signals_received += 1;
                    self.metrics.signal(Route::Received, bytes);
                    None
                }
                Err(code) => Some(code),
            }
        } else {
            Some(ErrorCode::PeerNotFound)
        };
        reply.send(result);
        self.run_evictions();
    }

    /// A page of `topic`'s announced peers after `cursor`, in ascending peer id order.
    pub fn lookup(&self, topic: TopicId, limit: u32, cursor: Option<PeerId>) -> ResponseBody {
        let Some(t) = self.topics.get(&topic) else {
            return ResponseBody::Lookup { peers: Vec::new(), next_cursor: None };
        };
        let start = match cursor {
            Some(c) => Bound::Excluded(c),
            None => Bound::Unbounded,
        };
        let limit = limit as usize;
        let mut range = t.announced.range((start, Bound::Unbounded));
        let peers: Vec<PeerId> = range.by_ref().take(limit).copied().collect();
        let next_cursor = if range.next().is_some() { peers.last().copied() } else { None };
        ResponseBody::Lookup { peers, next_cursor }
    }

    /// Delivers a signal to a local peer, or hands it to the node the peer is on (`None`: the
    /// link task answers).
    fn signal(
        &mut self,
        from: PeerId,
        to: PeerId,
        payload: Bytes,
        id: RequestId,
        ack: AckMode,
    ) -> Option<ResponseBody> {
        let bytes = payload.len();
        if self.peers.contains_key(&to) {
            let frame = encode_server(ServerMessage::Event(Event::Signal { from, payload }));
            return Some(match self.deliver_signal(from, to, frame) {
                Ok(()) => {
                    self.counters.signals_local += 1;
                    self.metrics.signal(Route::Local, bytes);
                    ResponseBody::Ok
                }
                Err(ErrorCode::PeerBusy) => busy(to),
                Err(_) => not_found(to),
            });
        }
        let Some(node) = self.replica.route(&to) else { return Some(not_found(to)) };
        let Some(queue) = self.peers.get(&from).map(|e| e.queue.replier()) else { return Some(internal()) };
        let fwd = Forward { from, to, payload, reply: ReplyTo { queue, id, ack } };
        match self.forwarder.forward(node, fwd) {
            Ok(()) => {
                self.counters.signals_forwarded += 1;
                self.metrics.signal(Route::Forwarded, bytes);
                None
            }
            Err(_) => Some(ResponseBody::Error {
                code: ErrorCode::PeerUnreachable,
                message: "the target peer's node cannot take more signals now".into(),
            }),
        }
    }

    /// Queues the signal event `frame` from `from` for `to`. Signals count against the receiver's
    /// signal watermark and the sender's share of it (see `outbox`): a sender can be refused
    /// (`PEER_BUSY`) but cannot get the receiver evicted.
    fn deliver_signal(&mut self, from: PeerId, to: PeerId, frame: Bytes) -> Result<(), ErrorCode> {
        let Some(entry) = self.peers.get(&to) else { return Err(ErrorCode::PeerNotFound) };
        match entry.queue.try_send_signal(frame, from) {
            Ok(()) => Ok(()),
            Err(PushError::Busy | PushError::Full) => Err(ErrorCode::PeerBusy),
            Err(PushError::Closed) => Err(ErrorCode::PeerNotFound),
        }
    }

    /// Queues `frame` for `peer`; a full queue schedules the peer's eviction.
    fn deliver(&mut self, peer: PeerId, frame: Bytes) -> bool {
        let Some(entry) = self.peers.get(&peer) else { return false };
        match entry.queue.try_send(frame) {
            Ok(()) => true,
            Err(PushError::Full) => {
                self.metrics.queue_drop();
                self.evictions.push(peer);
                false
            }
            // The connection task ended or is closing; its unregister is on the way.
            Err(PushError::Closed | PushError::Busy) => false,
        }
    }

    /// Sends `event` (encoded once) to every member of `topic` except `except`.
    fn broadcast(&mut self, topic: TopicId, except: PeerId, event: Event) {
        let Some(t) = self.topics.get(&topic) else { return };
        let frame = encode_server(ServerMessage::Event(event));
        for member in &t.members {
            if *member == except {
                continue;
            }
            if let Some(entry) = self.peers.get(member)
                && let Err(PushError::Full) = entry.queue.try_send(frame.clone())
            {
                self.metrics.queue_drop();
                self.evictions.push(*member);
            }
        }
    }

    fn remove(&mut self, peer: PeerId) -> Option<OutboxSender> {
        let mut entry = self.peers.remove(&peer)?;
        for (topic, announced) in entry.topics.take() {
            self.leave_topic(peer, topic, announced);
        }
        self.log.push(Delta::Down { peer });
        Some(entry.queue)
    }

    fn run_evictions(&mut self) {
        while let Some(peer) = self.evictions.pop() {
            if let Some(queue) = self.remove(peer) {
                queue.close(Close {
                    code: ErrorCode::SlowConsumer,
                    reason: "outbound queue overflowed: the client does not read fast enough",
                });
            }
        }
    }
}

fn not_found(to: PeerId) -> ResponseBody {
    ResponseBody::Error { code: ErrorCode::PeerNotFound, message: format!("peer {to} is not connected") }
}

fn busy(to: PeerId) -> ResponseBody {
    ResponseBody::Error {
        code: ErrorCode::PeerBusy,
        message: format!("peer {to} has too many signals queued; retry later"),
    }
}

fn internal() -> ResponseBody {
    ResponseBody::Error { code: ErrorCode::Internal, message: "peer is not registered".into() }
}

/// A message for the directory task.
#[derive(Debug)]
pub enum Command {
    /// See [`Directory::register`].
    Register {
        /// The authenticated peer.
        peer: PeerId,
        /// How to reach its connection.
        outlet: Outlet,
        /// The `Welcome`, queued first (the directory adds the other nodes' URLs).
        welcome: Box<Welcome>,
        /// When the session started (Unix ms).
        since_ms: u64,
    },
    /// See [`Directory::unregister`].
    Unregister {
        /// The peer.
        peer: PeerId,
        /// Its connection.
        conn: ConnId,
    },
    /// See [`Directory::request`].
    Request {
        /// The requesting peer.
        peer: PeerId,
        /// Its connection.
        conn: ConnId,
        /// The request id to answer.
        id: RequestId,
        /// The validated request.
        op: Op,
    },
    /// Reports [`Directory::stats`].
    Stats(oneshot::Sender<Stats>),
    /// See [`Directory::remote_signal`].
    RemoteSignal {
        /// The sender (on another node).
        from: PeerId,
        /// The local target.
        to: PeerId,
        /// The payload.
        payload: Bytes,
        /// Where the result goes.
        reply: RemoteReply,
    },
    /// See [`Directory::presence`].
    Presence(Box<PresenceInput>, Instant),
    /// See [`Directory::tick`]; the report goes out as [`Outbound::Report`].
    Tick(Instant),
    /// Reports [`Directory::snapshot`].
    Snapshot(oneshot::Sender<Snapshot>),
    /// Reports [`Directory::origins`].
    Origins(Instant, oneshot::Sender<Vec<OriginView>>),
    /// Reports [`Directory::top_topics`] (at most this many).
    TopTopics(usize, oneshot::Sender<TopTopics>),
}

impl Directory {
    /// Applies one command.
    pub fn apply(&mut self, command: Command) {
        match command {
            Command::Register { peer, outlet, mut welcome, since_ms } => {
                welcome.node_urls = self.node_urls();
                self.register_since(peer, outlet, encode_server(ServerMessage::Welcome(*welcome)), since_ms);
            }
            Command::Unregister { peer, conn } => self.unregister(peer, conn),
            Command::Request { peer, conn, id, op } => self.request(peer, conn, id, op),
            Command::Stats(reply) => {
                let _ = reply.send(self.stats());
            }
            Command::RemoteSignal { from, to, payload, reply } => {
                self.remote_signal(from, to, payload, reply)
            }
            Command::Presence(input, now) => self.presence(*input, now),
            Command::Tick(now) => {
                let report = self.tick(now);
                self.outbound.push(Outbound::Report(report));
            }
            Command::Snapshot(reply) => {
                let _ = reply.send(self.snapshot());
            }
            Command::Origins(now, reply) => {
                let _ = reply.send(self.origins(now));
            }
            Command::TopTopics(n, reply) => {
                let _ = reply.send(self.top_topics(n));
            }
        }
    }
}

/// The directory task is gone (the node is shutting down).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the directory task has stopped")]
pub struct DirectoryClosed;

/// A cloneable way to reach the directory task.
#[derive(Clone, Debug)]
pub struct DirectoryHandle {
    tx: mpsc::Sender<Command>,
}

impl DirectoryHandle {
    /// Sends a command, waiting while the directory's inbox is full.
    pub async fn send(&self, command: Command) -> Result<(), DirectoryClosed> {
        self.tx.send(command).await.map_err(|_| DirectoryClosed)
    }

    /// Sends a command if the inbox has room, without waiting (a full inbox hands the command
    /// back, for [`DirectoryHandle::send`]).
    #[allow(clippy::result_large_err)]
    pub fn try_send(&self, command: Command) -> Result<(), TrySendError<Command>> {
        self.tx.try_send(command)
    }

    /// Waits for room in the directory's inbox (cancel safe: nothing is lost when the wait is
    /// dropped); the permit sends one command.
    pub async fn reserve(&self) -> Result<mpsc::Permit<'_, Command>, DirectoryClosed> {
        self.tx.reserve().await.map_err(|_| DirectoryClosed)
    }

    /// Current counts.
    pub async fn stats(&self) -> Result<Stats, DirectoryClosed> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Stats(tx)).await?;
        rx.await.map_err(|_| DirectoryClosed)
    }

    /// This node's presence snapshot.
    pub async fn snapshot(&self) -> Result<Snapshot, DirectoryClosed> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Snapshot(tx)).await?;
        rx.await.map_err(|_| DirectoryClosed)
    }

    /// The `n` busiest topics ([`Directory::top_topics`]).
    pub async fn top_topics(&self, n: usize) -> Result<TopTopics, DirectoryClosed> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::TopTopics(n, tx)).await?;
        rx.await.map_err(|_| DirectoryClosed)
    }

    /// The other nodes known.
    pub async fn origins(&self) -> Result<Vec<OriginView>, DirectoryClosed> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Origins(Instant::now(), tx)).await?;
        rx.await.map_err(|_| DirectoryClosed)
    }
}

/// How many commands the directory task takes from its inbox at once.
const BATCH: usize = 64;

/// Moves `directory` into a new task with an inbox of `capacity` commands. The task ends when
/// every handle is dropped.
pub fn spawn(directory: Directory, capacity: usize) -> (DirectoryHandle, tokio::task::JoinHandle<()>) {
    spawn_with_mesh(directory, capacity, None)
}

/// [`spawn`], handing [`Outbound`] messages to the mesh task after each batch of commands.
/// The directory never waits for the mesh: when `mesh` is full, deltas are dropped (receivers
/// notice the gap and fetch a snapshot) and so are fetches and reports (repeated later).
pub fn spawn_with_mesh(
    mut directory: Directory,
    capacity: usize,
    mesh: Option<mpsc::Sender<Outbound>>,
) -> (DirectoryHandle, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel(capacity.max(1));
    let task = tokio::spawn(async move {
        let mut batch = Vec::with_capacity(BATCH);
        while rx.recv_many(&mut batch, BATCH).await > 0 {
            for command in batch.drain(..) {
                directory.apply(command);
            }
            let outbound = directory.take_outbound();
            if let Some(mesh) = &mesh {
                for message in outbound {
                    let _ = mesh.try_send(message);
                }
            }
        }
    });
    (DirectoryHandle { tx }, task)
}

#[cfg(test)]
mod tests {
    use signal_mesh_proto::{ServerMessage, decode_server};

    use super::*;
    use crate::outbox::{OutboxReceiver, outbox};

    struct Conn {
        rx: OutboxReceiver,
    }

    impl Conn {
        fn frames(&mut self) -> Vec<ServerMessage> {
            let mut out = Vec::new();
            while let Some(f) = self.rx.try_recv() {
                out.push(decode_server(f, 1 << 20).unwrap());
            }
            out
        }
    }

    fn peer(n: u8) -> PeerId {
        PeerId::from_array([n; 32])
    }

    fn topic() -> TopicId {
        TopicId::from_array([0xee; 32])
    }

    fn connect(d: &mut Directory, p: PeerId, conn: ConnId, queue: usize) -> Conn {
        let (tx, rx) = outbox(queue);
        d.register(p, Outlet { conn, queue: tx }, Bytes::from_static(b""));
        let c = Conn { rx };
        let _welcome = c.rx.try_recv().unwrap();
        c
    }

    fn ok(id: u64) -> ServerMessage {
        ServerMessage::Response { id, body: ResponseBody::Ok }
    }

    #[test]
    fn given_members_then_announced_joins_and_leaves_reach_the_others_only() {
        let mut d = Directory::new(8);
        let mut a = connect(&mut d, peer(1), 1, 16);
        let mut b = connect(&mut d, peer(2), 2, 16);
        let mut silent = connect(&mut d, peer(3), 3, 16);
        d.request(peer(3), 3, 1, Op::Join { topic: topic(), announce: false });
        d.request(peer(1), 1, 1, Op::Join { topic: topic(), announce: true });
        d.request(peer(2), 2, 1, Op::Join { topic: topic(), announce: true });
        assert_eq!(
            a.frames(),
            vec![ok(1), ServerMessage::Event(Event::PeerJoined { topic: topic(), peer: peer(2) })]
        );
        assert_eq!(b.frames(), vec![ok(1)]);
        assert_eq!(
            silent.frames(),
            vec![
                ok(1),
                ServerMessage::Event(Event::PeerJoined { topic: topic(), peer: peer(1) }),
                ServerMessage::Event(Event::PeerJoined { topic: topic(), peer: peer(2) }),
            ]
        );
        d.unregister(peer(1), 1);
        assert_eq!(b.frames(), vec![ServerMessage::Event(Event::PeerLeft { topic: topic(), peer: peer(1) })]);
        assert_eq!(silent.frames().len(), 1);
        d.unregister(peer(3), 3);
        assert!(b.frames().is_empty(), "a silent observer leaves silently");
        assert_eq!(d.stats(), Stats { peers: 1, topics: 1 });
        d.unregister(peer(2), 2);
        assert_eq!(d.stats(), Stats::default());
    }

    #[test]
    fn given_many_announced_peers_then_cursor_pages_return_each_once_in_order() {
        let mut d = Directory::new(8);
        let mut conns = Vec::new();
        for n in (1..=25u8).rev() {
            conns.push(connect(&mut d, peer(n), u64::from(n), 64));
            d.request(peer(n), u64::from(n), 1, Op::Join { topic: topic(), announce: true });
        }
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let ResponseBody::Lookup { peers, next_cursor } = d.lookup(topic(), 7, cursor) else { panic!() };
            assert!(peers.len() <= 7);
            seen.extend(peers);
            match next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(seen, (1..=25u8).map(peer).collect::<Vec<_>>());
        assert_eq!(
            d.lookup(TopicId::from_array([1; 32]), 7, None),
            ResponseBody::Lookup { peers: vec![], next_cursor: None }
        );
    }

    #[test]
    fn given_the_topic_limit_then_limit_exceeded_and_rejoin_is_free() {
        let mut d = Directory::new(2);
        let mut a = connect(&mut d, peer(1), 1, 16);
        for (id, n) in [(1, 1), (2, 2), (3, 2), (4, 3)] {
            d.request(peer(1), 1, id, Op::Join { topic: TopicId::from_array([n; 32]), announce: true });
        }
        let frames = a.frames();
        assert_eq!(&frames[..3], &[ok(1), ok(2), ok(3)]);
        assert!(matches!(
            &frames[3],
            ServerMessage::Response {
                id: 4,
                body: ResponseBody::Error { code: ErrorCode::LimitExceeded, .. }
            }
        ));
        d.request(peer(1), 1, 5, Op::Leave { topic: TopicId::from_array([9; 32]) });
        assert!(matches!(
            &a.frames()[0],
            ServerMessage::Response { id: 5, body: ResponseBody::Error { code: ErrorCode::NotJoined, .. } }
        ));
    }

    #[test]
    fn given_a_second_connection_then_the_first_is_replaced_and_topics_move_silently() {
        let mut d = Directory::new(8);
        let mut old = connect(&mut d, peer(1), 1, 16);
        let mut other = connect(&mut d, peer(2), 2, 16);
        d.request(peer(1), 1, 1, Op::Join { topic: topic(), announce: true });
        d.request(peer(2), 2, 1, Op::Join { topic: topic(), announce: true });
        other.frames();
        let mut new = connect(&mut d, peer(1), 7, 16);
        assert_eq!(old.rx.close_reason().map(|c| c.code), Some(ErrorCode::SessionReplaced));
        // The old connection's late unregister and requests do nothing.
        d.unregister(peer(1), 1);
        d.request(peer(1), 1, 9, Op::Leave { topic: topic() });
        assert!(other.frames().is_empty());
        old.frames();
        // The new one is a member: it gets the other's leave, and re-joining is a no-op.
        d.request(peer(1), 7, 2, Op::Join { topic: topic(), announce: true });
        assert!(other.frames().is_empty());
        d.unregister(peer(2), 2);
        assert_eq!(
            new.frames(),
            vec![ok(2), ServerMessage::Event(Event::PeerLeft { topic: topic(), peer: peer(2) })]
        );
    }

    #[test]
    fn given_a_receiver_past_its_watermark_then_signals_are_peer_busy_and_it_stays() {
        let mut d = Directory::new(8);
        let mut a = connect(&mut d, peer(1), 1, 64);
        let slow = connect(&mut d, peer(2), 2, 4);
        for id in 1..5 {
            d.request(
                peer(1),
                1,
                id,
                Op::Signal { to: peer(2), payload: Bytes::from_static(b"x"), ack: AckMode::Always },
            );
        }
        // Half of the four-frame queue is for signals.
        let codes: Vec<_> = a
            .frames()
            .into_iter()
            .map(|f| match f {
                ServerMessage::Response { body: ResponseBody::Error { code, .. }, .. } => Some(code),
                _ => None,
            })
            .collect();
        assert_eq!(codes, vec![None, None, Some(ErrorCode::PeerBusy), Some(ErrorCode::PeerBusy)]);
        assert_eq!(slow.rx.close_reason(), None);
        assert_eq!(d.stats().peers, 2);
    }

    #[test]
    fn given_a_full_queue_of_its_own_traffic_then_the_peer_is_evicted_as_slow_consumer() {
        let mut d = Directory::new(8);
        let mut a = connect(&mut d, peer(1), 1, 64);
        let slow = connect(&mut d, peer(2), 2, 2);
        d.request(peer(1), 1, 1, Op::Join { topic: topic(), announce: true });
        d.request(peer(2), 2, 1, Op::Join { topic: topic(), announce: true });
        // The join's response and one event fill the queue; the next event overflows it.
        let _c = connect(&mut d, peer(3), 3, 64);
        d.request(peer(3), 3, 1, Op::Join { topic: topic(), announce: true });
        let _e = connect(&mut d, peer(4), 4, 64);
        d.request(peer(4), 4, 1, Op::Join { topic: topic(), announce: true });
        assert_eq!(slow.rx.close_reason().map(|c| c.code), Some(ErrorCode::SlowConsumer));
        let frames = a.frames();
        assert!(frames.contains(&ServerMessage::Event(Event::PeerLeft { topic: topic(), peer: peer(2) })));
        d.request(
            peer(1),
            1,
            9,
            Op::Signal { to: peer(2), payload: Bytes::from_static(b"x"), ack: AckMode::Always },
        );
        assert!(matches!(
            a.frames().last(),
            Some(ServerMessage::Response {
                id: 9,
                body: ResponseBody::Error { code: ErrorCode::PeerNotFound, .. }
            })
        ));
        assert_eq!(d.stats().peers, 3);
    }

    fn signal(to: PeerId, ack: AckMode) -> Op {
        Op::Signal { to, payload: Bytes::from_static(b"cand"), ack }
    }

    fn error_of(m: &ServerMessage) -> Option<(RequestId, ErrorCode)> {
        match m {
            ServerMessage::Response { id, body: ResponseBody::Error { code, .. } } => Some((*id, *code)),
            _ => None,
        }
    }

    #[test]
    fn given_failures_only_then_a_delivered_signal_gets_no_ack_and_failures_keep_their_ids() {
        let mut d = Directory::new(8);
        let mut a = connect(&mut d, peer(1), 1, 64);
        let mut b = connect(&mut d, peer(2), 2, 4);
        d.request(peer(1), 1, 10, signal(peer(2), AckMode::FailuresOnly));
        assert_eq!(a.frames(), vec![], "a delivered failure-only signal is not acknowledged");
        assert_eq!(
            b.frames(),
            vec![ServerMessage::Event(Event::Signal { from: peer(1), payload: Bytes::from_static(b"cand") })]
        );
        // The default mode still acknowledges, in order with the failure-only ones around it.
        d.request(peer(1), 1, 11, signal(peer(2), AckMode::Always));
        d.request(peer(1), 1, 12, signal(peer(2), AckMode::FailuresOnly));
        assert_eq!(a.frames(), vec![ok(11)]);
        assert_eq!(b.frames().len(), 2);
        // Not connected: PEER_NOT_FOUND with the request's id.
        d.request(peer(1), 1, 13, signal(peer(7), AckMode::FailuresOnly));
        assert_eq!(
            a.frames().iter().map(error_of).collect::<Vec<_>>(),
            vec![Some((13, ErrorCode::PeerNotFound))]
        );
        // Past the receiver's watermark (half of its four frames): PEER_BUSY for exactly those.
        for id in 20..24 {
            d.request(peer(1), 1, id, signal(peer(2), AckMode::FailuresOnly));
        }
        assert_eq!(
            a.frames().iter().map(error_of).collect::<Vec<_>>(),
            vec![Some((22, ErrorCode::PeerBusy)), Some((23, ErrorCode::PeerBusy))]
        );
        assert_eq!(d.counters().signals_local, 5);
    }

    /// A forwarder that keeps what it is handed.
    #[derive(Debug, Default, Clone)]
    struct Capture(std::sync::Arc<std::sync::Mutex<Vec<crate::mesh::links::Forward>>>);

    impl Forwarder for Capture {
        fn forward(
            &mut self,
            _node: NodeKey,
            fwd: crate::mesh::links::Forward,
        ) -> Result<(), crate::mesh::links::Forward> {
            self.0.lock().unwrap().push(fwd);
            Ok(())
        }
    }

    #[test]
    fn given_failures_only_then_a_forwarded_signal_is_answered_by_the_link_only_on_failure() {
        let capture = Capture::default();
        let mut d = Directory::with_mesh(8, 1, ReplicaConfig::default(), Box::new(capture.clone()));
        let mut a = connect(&mut d, peer(1), 1, 64);
        let origin = NodeKey::random();
        let batch = DeltaBatch { first_seq: 1, deltas: vec![Delta::Up { peer: peer(9), since_ms: 5 }] };
        d.presence(PresenceInput::Deltas { origin, incarnation: 3, batch }, Instant::now());
        for (id, ack) in [(1, AckMode::FailuresOnly), (2, AckMode::FailuresOnly), (3, AckMode::Always)] {
            d.request(peer(1), 1, id, signal(peer(9), ack));
        }
        let forwarded: Vec<_> = std::mem::take(&mut *capture.0.lock().unwrap());
        assert_eq!(forwarded.len(), 3, "the remote peer is routed to its node");
        assert_eq!(a.frames(), vec![], "nothing is answered before the other node's result");
        let mut results = [None, Some(ErrorCode::PeerBusy), None].into_iter();
        for fwd in forwarded {
            fwd.reply.answer(results.next().flatten());
        }
        // Delivered failure-only: nothing; failed: the error with its id; delivered Always: Ok.
        let frames = a.frames();
        assert_eq!(
            frames.iter().map(error_of).collect::<Vec<_>>(),
            vec![Some((2, ErrorCode::PeerBusy)), None]
        );
        assert_eq!(frames[1], ok(3));
        assert_eq!(d.counters().signals_forwarded, 3);
    }

    #[test]
    fn given_topics_then_top_topics_lists_the_most_announced_first_and_bounded() {
        let mut d = Directory::new(8);
        let mut conns = Vec::new();
        for n in 1..=4u8 {
            conns.push(connect(&mut d, peer(n), u64::from(n), 16));
            // Topic k is announced by peers 1..=k; topic 9 is joined silently by peer 1.
            for k in n..=4 {
                d.request(
                    peer(n),
                    u64::from(n),
                    u64::from(k),
                    Op::Join { topic: TopicId::from_array([k; 32]), announce: true },
                );
            }
        }
        d.request(peer(1), 1, 9, Op::Join { topic: TopicId::from_array([9; 32]), announce: false });
        let top = d.top_topics(2);
        assert_eq!(top.total, 5);
        let counts: Vec<(u8, usize, usize)> =
            top.top.iter().map(|t| (t.topic.as_bytes()[0], t.announced, t.members)).collect();
        assert_eq!(counts, vec![(4, 4, 4), (3, 3, 3)]);
        assert_eq!(d.top_topics(10).top.last().map(|t| (t.announced, t.members)), Some((0, 1)));
        assert!(Directory::new(8).top_topics(5).top.is_empty());
    }
}
