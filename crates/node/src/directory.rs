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

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::ops::Bound;

use bytes::Bytes;
use signal_mesh_proto::{
    ErrorCode, Event, PeerId, RequestId, ResponseBody, ServerMessage, TopicId, encode_server,
};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};

use crate::outbox::{OutboxSender, PushError};
use crate::session::Op;

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
    topics: HashMap<TopicId, bool>,
}

#[derive(Debug, Default)]
struct Topic {
    announced: BTreeSet<PeerId>,
    members: HashSet<PeerId>,
}

/// Counts for status pages and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Registered peers.
    pub peers: usize,
    /// Topics with at least one member.
    pub topics: usize,
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
}

impl Directory {
    /// An empty directory enforcing `max_topics_per_peer`.
    pub fn new(max_topics_per_peer: u32) -> Directory {
        Directory {
            peers: HashMap::new(),
            topics: HashMap::new(),
            max_topics_per_peer: max_topics_per_peer as usize,
            evictions: Vec::new(),
        }
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
        // A fresh queue has room for the welcome; a failure means the connection is already gone.
        let _ = outlet.queue.try_send(welcome);
        let mut entry = PeerEntry { conn: outlet.conn, queue: outlet.queue, topics: HashMap::new() };
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
        let body = match op {
            Op::Join { topic, announce } => self.join(peer, topic, announce),
            Op::Leave { topic } => self.leave(peer, topic),
            Op::Lookup { topic, limit, cursor } => self.lookup(topic, limit.get(), cursor),
            Op::Signal { to, payload } => self.signal(peer, to, payload),
        };
        let frame = encode_server(ServerMessage::Response { id, body });
        self.deliver(peer, frame);
        self.run_evictions();
    }

    fn join(&mut self, peer: PeerId, topic: TopicId, announce: bool) -> ResponseBody {
        let Some(entry) = self.peers.get_mut(&peer) else { return internal() };
        let was = match entry.topics.get(&topic) {
            Some(&was) => Some(was),
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
                t.announced.insert(peer);
                self.broadcast(topic, peer, Event::PeerJoined { topic, peer });
            }
            (Some(true), false) => {
                t.announced.remove(&peer);
                self.broadcast(topic, peer, Event::PeerLeft { topic, peer });
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
        if let Some(t) = self.topics.get_mut(&topic) {
            t.members.remove(&peer);
            t.announced.remove(&peer);
            if t.members.is_empty() {
                self.topics.remove(&topic);
            } else if announced {
                self.broadcast(topic, peer, Event::PeerLeft { topic, peer });
            }
        }
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

    fn signal(&mut self, from: PeerId, to: PeerId, payload: Bytes) -> ResponseBody {
        if !self.peers.contains_key(&to) {
            return not_found(to);
        }
        let frame = encode_server(ServerMessage::Event(Event::Signal { from, payload }));
        let Some(entry) = self.peers.get(&to) else { return not_found(to) };
        // Signals count against the receiver's signal watermark and the sender's share of it:
        // a sender can be refused (PEER_BUSY) but cannot get the receiver evicted.
        match entry.queue.try_send_signal(frame, from) {
            Ok(()) => ResponseBody::Ok,
            Err(PushError::Busy | PushError::Full) => busy(to),
            Err(PushError::Closed) => not_found(to),
        }
    }

    /// Queues `frame` for `peer`; a full queue schedules the peer's eviction.
    fn deliver(&mut self, peer: PeerId, frame: Bytes) -> bool {
        let Some(entry) = self.peers.get(&peer) else { return false };
        match entry.queue.try_send(frame) {
            Ok(()) => true,
            Err(PushError::Full) => {
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
                self.evictions.push(*member);
            }
        }
    }

    fn remove(&mut self, peer: PeerId) -> Option<OutboxSender> {
        let mut entry = self.peers.remove(&peer)?;
        for (topic, announced) in entry.topics.drain() {
            self.leave_topic(peer, topic, announced);
        }
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
        /// The encoded `Welcome`, queued first.
        welcome: Bytes,
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
}

impl Directory {
    /// Applies one command.
    pub fn apply(&mut self, command: Command) {
        match command {
            Command::Register { peer, outlet, welcome } => {
                self.register(peer, outlet, welcome);
            }
            Command::Unregister { peer, conn } => self.unregister(peer, conn),
            Command::Request { peer, conn, id, op } => self.request(peer, conn, id, op),
            Command::Stats(reply) => {
                let _ = reply.send(self.stats());
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
}

/// How many commands the directory task takes from its inbox at once.
const BATCH: usize = 64;

/// Moves `directory` into a new task with an inbox of `capacity` commands. The task ends when
/// every handle is dropped.
pub fn spawn(mut directory: Directory, capacity: usize) -> (DirectoryHandle, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel(capacity.max(1));
    let task = tokio::spawn(async move {
        let mut batch = Vec::with_capacity(BATCH);
        while rx.recv_many(&mut batch, BATCH).await > 0 {
            for command in batch.drain(..) {
                directory.apply(command);
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
            d.request(peer(1), 1, id, Op::Signal { to: peer(2), payload: Bytes::from_static(b"x") });
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
        d.request(peer(1), 1, 9, Op::Signal { to: peer(2), payload: Bytes::from_static(b"x") });
        assert!(matches!(
            a.frames().last(),
            Some(ServerMessage::Response {
                id: 9,
                body: ResponseBody::Error { code: ErrorCode::PeerNotFound, .. }
            })
        ));
        assert_eq!(d.stats().peers, 3);
    }
}
