//! The management view: the whole mesh as this node sees it, for `/status`, `/metrics`' gauges
//! and the dashboard.
//!
//! [`Management::view`] builds a [`StatusDoc`] from the mesh's status (this node's heartbeat
//! plus every other node's last heartbeat, held by the directory's presence replica) and the
//! directory's busiest topics. The answer is bounded ([`MAX_NODES`], [`MAX_TOPICS`],
//! [`MAX_ADDRESSES`]) and cached for [`CACHE_FOR`]: however many requests arrive, the directory is
//! asked at most once per period, and concurrent requests wait for the one computation in
//! flight instead of starting their own.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::sync::{Mutex, watch};
use tokio::time::Instant;

use crate::directory::DirectoryHandle;
use crate::mesh::MeshHandle;
use crate::mesh::wire::NodeStatus;
use crate::metrics::Metrics;

/// How long a computed view is served before it is computed again.
pub const CACHE_FOR: Duration = Duration::from_millis(250);
/// Most nodes listed (this node first, then by id).
pub const MAX_NODES: usize = 1024;
/// Most topics listed (most announced peers first).
pub const MAX_TOPICS: usize = 50;
/// Most addresses listed per node.
pub const MAX_ADDRESSES: usize = 8;
/// How long building a view may wait for the directory.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// `/status`: the whole mesh. Ids only: no payloads, no secrets.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct StatusDoc {
    /// The node that answered.
    pub node: String,
    /// When this view was computed (Unix ms).
    pub generated_ms: u64,
    /// Whether the answering node is ready (`/ready`): synced and not shutting down.
    pub ready: bool,
    /// Whether it completed its first presence sync with the mesh.
    pub synced: bool,
    /// A node not heard from for longer than this is marked stale (2 heartbeats).
    pub stale_after_ms: u64,
    /// Every node known, the answering one first.
    pub nodes: Vec<NodeDoc>,
    /// Every link between two nodes, as reported in their heartbeats (each pair once).
    pub links: Vec<LinkDoc>,
    /// The busiest topics.
    pub topics: TopicsDoc,
}

/// One node.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct NodeDoc {
    /// Node id (libp2p peer id).
    pub id: String,
    /// Whether this is the node that answered.
    pub local: bool,
    /// Software version (empty until its first heartbeat arrived).
    pub version: String,
    /// Uptime at its last heartbeat.
    pub uptime_ms: u64,
    /// Its edge URL, if configured.
    pub public_url: String,
    /// Its mesh listen addresses (at most [`MAX_ADDRESSES`]).
    pub addresses: Vec<String>,
    /// Edge peers connected to it.
    pub edge_peers: u32,
    /// Topics it knows.
    pub topics: u32,
    /// Its peers recorded here (presence records).
    pub presence_records: usize,
    /// Counters since its start.
    pub signals_local: u64,
    /// Signals it handed to another node.
    pub signals_forwarded: u64,
    /// Signals it received from other nodes.
    pub signals_received: u64,
    /// Requests it served.
    pub requests: u64,
    /// Requests it answered with an error.
    pub errors: u64,
    /// Signals per second over its last heartbeat interval.
    pub signals_per_second: u32,
    /// Requests per second over its last heartbeat interval.
    pub requests_per_second: u32,
    /// Malformed mesh messages it dropped.
    pub malformed_mesh_messages: u64,
    /// Its live links.
    pub links: usize,
    /// How long ago it was last heard from (0 for the answering node).
    pub last_heard_ms: u64,
    /// Not heard from for longer than `stale_after_ms`: probably gone, soon dropped.
    pub stale: bool,
    /// Whether its presence records here are complete.
    pub synced: bool,
}

/// A link between two nodes.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct LinkDoc {
    /// One end (the smaller id).
    pub a: String,
    /// The other end.
    pub b: String,
    /// Ping round trip in microseconds, if measured.
    pub rtt_us: Option<u32>,
}

/// Topics and their peer counts.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct TopicsDoc {
    /// Topics known to the answering node.
    pub total: usize,
    /// The busiest (at most [`MAX_TOPICS`]).
    pub top: Vec<TopicDoc>,
}

/// One topic.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct TopicDoc {
    /// The topic id, hex.
    pub id: String,
    /// Peers announced in it anywhere in the mesh.
    pub peers: usize,
    /// Members on the answering node.
    pub local_members: usize,
}

/// The view could not be built: the node is stopping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the node is stopping: no status")]
pub struct Unavailable;

/// A computed view and its encodings.
#[derive(Debug)]
pub struct View {
    /// The document.
    pub doc: StatusDoc,
    /// Its JSON.
    pub json: Bytes,
}

/// State of the management endpoints.
#[derive(Debug)]
pub struct Management {
    mesh: MeshHandle,
    directory: DirectoryHandle,
    metrics: Metrics,
    registry: Registry,
    shutdown: watch::Receiver<bool>,
    stale_after: Duration,
    cache: Mutex<Option<(Instant, Arc<View>)>>,
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Management {
    /// The management state of a node; `heartbeat` is the mesh heartbeat interval.
    pub(crate) fn new(
        mesh: MeshHandle,
        directory: DirectoryHandle,
        metrics: Metrics,
        registry: Registry,
        shutdown: watch::Receiver<bool>,
        heartbeat: Duration,
    ) -> Management {
        Management {
            mesh,
            directory,
            metrics,
            registry,
            shutdown,
            stale_after: heartbeat * 2,
            cache: Mutex::new(None),
        }
    }

    /// Whether the node is shutting down.
    pub fn stopping(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Whether the node is ready for traffic: first presence sync done (or alone) and not
    /// shutting down.
    pub fn ready(&self) -> bool {
        !self.stopping() && self.mesh.is_synced()
    }

    /// The registry `/metrics` encodes.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The current view, computed at most once per [`CACHE_FOR`].
    pub async fn view(&self) -> Result<Arc<View>, Unavailable> {
        let mut cache = self.cache.lock().await;
        if let Some((at, view)) = cache.as_ref()
            && at.elapsed() < CACHE_FOR
        {
            return Ok(view.clone());
        }
        let doc = tokio::time::timeout(QUERY_TIMEOUT, self.compute()).await.map_err(|_| Unavailable)??;
        let json = Bytes::from(serde_json::to_vec(&doc).map_err(|_| Unavailable)?);
        let view = Arc::new(View { doc, json });
        *cache = Some((Instant::now(), view.clone()));
        Ok(view)
    }

    async fn compute(&self) -> Result<StatusDoc, Unavailable> {
        let status = self.mesh.status().await.ok_or(Unavailable)?;
        let topics = self.directory.top_topics(MAX_TOPICS).await.map_err(|_| Unavailable)?;
        let me = status.node.to_string();
        let stale_after_ms = self.stale_after.as_millis() as u64;
        let mut nodes = Vec::with_capacity(status.nodes.len().min(MAX_NODES) + 1);
        let mut reported: Vec<(String, &NodeStatus)> = Vec::new();
        nodes.push(node_doc(
            me.clone(),
            true,
            &status.local,
            status.local.edge_peers as usize,
            0,
            false,
            true,
        ));
        reported.push((me.clone(), &status.local));
        for view in status.nodes.iter().take(MAX_NODES - 1) {
            let id = view.node.to_string();
            let last_heard_ms = view.last_heard.as_millis() as u64;
            let empty = NodeStatus::default();
            let s = view.status.as_ref().unwrap_or(&empty);
            nodes.push(node_doc(
                id.clone(),
                false,
                s,
                view.peers,
                last_heard_ms,
                last_heard_ms > stale_after_ms,
                view.synced,
            ));
            if let Some(s) = &view.status {
                reported.push((id, s));
            }
        }
        // Each pair once; the smallest measured round trip of the two ends' reports.
        let mut links: BTreeMap<(String, String), Option<u32>> = BTreeMap::new();
        for (id, s) in &reported {
            for link in &s.links {
                let other = link.node.to_string();
                let key = if *id < other { (id.clone(), other) } else { (other, id.clone()) };
                let rtt = (link.rtt_us > 0).then_some(link.rtt_us);
                let entry = links.entry(key).or_insert(rtt);
                *entry = match (*entry, rtt) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
        }
        let links = links.into_iter().map(|((a, b), rtt_us)| LinkDoc { a, b, rtt_us }).collect();
        let topics = TopicsDoc {
            total: topics.total,
            top: topics
                .top
                .into_iter()
                .map(|t| TopicDoc { id: t.topic.to_hex(), peers: t.announced, local_members: t.members })
                .collect(),
        };
        self.update_gauges(&status, &nodes);
        Ok(StatusDoc {
            node: me,
            generated_ms: unix_ms(),
            ready: !self.stopping() && status.synced,
            synced: status.synced,
            stale_after_ms,
            nodes,
            links,
            topics,
        })
    }

    /// Sets the gauges that describe state owned elsewhere (read at scrape time).
    fn update_gauges(&self, status: &crate::mesh::MeshStatus, nodes: &[NodeDoc]) {
        let m = &self.metrics;
        m.edge_peers.set(i64::from(status.local.edge_peers));
        m.topics.set(i64::from(status.local.topics));
        m.mesh_links.set(status.local.links.len() as i64);
        m.mesh_nodes.set(status.nodes.len() as i64);
        m.presence_synced.set(i64::from(status.synced));
        // Nodes come and go: the per-node families show the current ones only.
        m.presence_records.clear();
        m.presence_last_heard.clear();
        for n in nodes {
            m.presence_records.get_or_create(&[("node", n.id.clone())]).set(n.presence_records as i64);
            if !n.local {
                m.presence_last_heard
                    .get_or_create(&[("node", n.id.clone())])
                    .set(n.last_heard_ms as f64 / 1000.0);
            }
        }
    }
}

fn node_doc(
    id: String,
    local: bool,
    s: &NodeStatus,
    presence_records: usize,
    last_heard_ms: u64,
    stale: bool,
    synced: bool,
) -> NodeDoc {
    NodeDoc {
        id,
        local,
        version: s.version.clone(),
        uptime_ms: s.uptime_ms,
        public_url: s.public_url.clone(),
        addresses: s.addresses.iter().take(MAX_ADDRESSES).cloned().collect(),
        edge_peers: s.edge_peers,
        topics: s.topics,
        presence_records,
        signals_local: s.signals_local,
        signals_forwarded: s.signals_forwarded,
        signals_received: s.signals_received,
        requests: s.requests,
        errors: s.errors,
        signals_per_second: s.signals_per_second,
        requests_per_second: s.requests_per_second,
        malformed_mesh_messages: s.malformed_mesh_messages,
        links: s.links.len(),
        last_heard_ms,
        stale,
        synced,
    }
}
