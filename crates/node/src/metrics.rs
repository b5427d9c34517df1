//! The node's Prometheus metrics: one [`Registry`] holding the node's own families and
//! `libp2p-metrics` (both built on `prometheus-client`), served by `/metrics`.
//!
//! [`Metrics`] is a cloneable handle of atomics (each family is an `Arc` inside): the gateway,
//! the directory and the mesh each hold a clone and count where the event happens, with one
//! call per site. Gauges that describe state owned by the directory or the mesh (peers, topics,
//! links, presence per node) are set from the cached `/status` view when `/metrics` is scraped,
//! so counting never waits for anything.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use signal_mesh_proto::{ErrorCode, ResponseBody, ServerMessage};
use std::sync::atomic::AtomicU64;

use crate::session::Op;

/// A label set with one label whose value is fixed text.
type Label = [(&'static str, &'static str); 1];
/// A label set with one label whose value is made at run time (a node id).
type NodeLabel = [(&'static str, String); 1];

/// How a signal reached its target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Between two peers of this node.
    Local,
    /// Handed to another node.
    Forwarded,
    /// From another node to a peer of this node.
    Received,
}

impl Route {
    fn as_str(self) -> &'static str {
        match self {
            Route::Local => "local",
            Route::Forwarded => "forwarded",
            Route::Received => "received",
        }
    }
}

/// The node's metric families. Cheap to clone; a default value counts into families that are
/// not registered anywhere (for benchmarks and unit tests).
#[derive(Clone, Debug)]
pub struct Metrics {
    edge_connections: Gauge,
    edge_opened: Counter,
    edge_closed: Family<Label, Counter>,
    pub(crate) edge_peers: Gauge,
    pub(crate) topics: Gauge,
    joins: Counter,
    leaves: Counter,
    lookups: Counter,
    signal_requests: Counter,
    signals: Family<Label, Counter>,
    signal_bytes: Family<Label, Counter>,
    errors: Family<Label, Counter>,
    queue_drops: Counter,
    relay_latency: Family<Label, Histogram, fn() -> Histogram>,
    pub(crate) mesh_links: Gauge,
    pub(crate) mesh_nodes: Gauge,
    pub(crate) presence_records: Family<NodeLabel, Gauge>,
    pub(crate) presence_last_heard: Family<NodeLabel, Gauge<f64, AtomicU64>>,
    pub(crate) presence_synced: Gauge,
    snapshot_fetches: Family<Label, Counter>,
    malformed: Counter,
    presence_rejected: Counter,
    /// The per-signal series, looked up once: `signals` and `signal_bytes` by [`Route`], and
    /// `relay_latency` of delivered signals. Counting a signal is then two atomic adds, not two
    /// label-hashing lookups under the families' locks.
    hot: std::sync::Arc<Hot>,
}

/// See [`Metrics::hot`].
#[derive(Debug)]
struct Hot {
    signals: [Counter; 3],
    bytes: [Counter; 3],
    delivered: Histogram,
}

impl Hot {
    fn new(
        signals: &Family<Label, Counter>,
        bytes: &Family<Label, Counter>,
        latency: &Family<Label, Histogram, fn() -> Histogram>,
    ) -> Hot {
        let routes = [Route::Local, Route::Forwarded, Route::Received];
        Hot {
            signals: routes.map(|r| signals.get_or_create(&[("route", r.as_str())]).clone()),
            bytes: routes.map(|r| bytes.get_or_create(&[("route", r.as_str())]).clone()),
            delivered: latency.get_or_create(&[("result", "delivered")]).clone(),
        }
    }
}

fn latency_histogram() -> Histogram {
    // 100 µs .. ~3.3 s: a local hop is sub-millisecond, a forward timeout is seconds.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Metrics {
        let signals = Family::default();
        let signal_bytes = Family::default();
        let relay_latency = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        let hot = std::sync::Arc::new(Hot::new(&signals, &signal_bytes, &relay_latency));
        Metrics {
            hot,
            edge_connections: Gauge::default(),
            edge_opened: Counter::default(),
            edge_closed: Family::default(),
            edge_peers: Gauge::default(),
            topics: Gauge::default(),
            joins: Counter::default(),
            leaves: Counter::default(),
            lookups: Counter::default(),
            signal_requests: Counter::default(),
            signals,
            signal_bytes,
            errors: Family::default(),
            queue_drops: Counter::default(),
            relay_latency,
            mesh_links: Gauge::default(),
            mesh_nodes: Gauge::default(),
            presence_records: Family::default(),
            presence_last_heard: Family::default(),
            presence_synced: Gauge::default(),
            snapshot_fetches: Family::default(),
            malformed: Counter::default(),
            presence_rejected: Counter::default(),
        }
    }
}

impl Metrics {
    /// New families, registered in `registry` under `signal_mesh_`.
    pub fn register(registry: &mut Registry) -> Metrics {
        let m = Metrics::default();
        let r = registry.sub_registry_with_prefix("signal_mesh");
        r.register("edge_connections", "Open edge (WebSocket) connections", m.edge_connections.clone());
        r.register(
            "edge_connections_opened",
            "Edge WebSocket connections upgraded (those refused as OVERLOADED included)",
            m.edge_opened.clone(),
        );
        r.register(
            "edge_connections_closed",
            "Edge connections closed, by reason: the error code the node closed with, or client",
            m.edge_closed.clone(),
        );
        r.register("edge_peers", "Authenticated peers connected to this node", m.edge_peers.clone());
        r.register("topics", "Topics with a member on this node or announced in the mesh", m.topics.clone());
        r.register("joins", "Join requests", m.joins.clone());
        r.register("leaves", "Leave requests", m.leaves.clone());
        r.register("lookups", "Lookup requests", m.lookups.clone());
        r.register("signal_requests", "Signal requests from this node's peers", m.signal_requests.clone());
        r.register(
            "signals",
            "Signals relayed, by route: local (both peers here), forwarded (to another node), received (from another node)",
            m.signals.clone(),
        );
        r.register_with_unit(
            "signal_payload",
            "Payload bytes of the signals relayed, by route",
            Unit::Bytes,
            m.signal_bytes.clone(),
        );
        r.register(
            "errors",
            "Errors sent to clients (responses and unsolicited errors), by error code",
            m.errors.clone(),
        );
        r.register(
            "outbound_queue_drops",
            "Frames not queued because a connection's outbound queue was full (the connection is evicted)",
            m.queue_drops.clone(),
        );
        r.register_with_unit(
            "relay_latency",
            "Time from handing a signal to another node until it confirmed delivery, by result",
            Unit::Seconds,
            m.relay_latency.clone(),
        );
        r.register("mesh_links", "Live libp2p links to other nodes of the mesh", m.mesh_links.clone());
        r.register("mesh_nodes", "Other nodes known (presence records held)", m.mesh_nodes.clone());
        r.register(
            "presence_records",
            "Peers recorded per origin node (this node included)",
            m.presence_records.clone(),
        );
        r.register_with_unit(
            "presence_last_heard",
            "Time since each other node was last heard from (presence sync lag)",
            Unit::Seconds,
            m.presence_last_heard.clone(),
        );
        r.register(
            "presence_synced",
            "1 once this node completed its first presence sync with the mesh (as /ready)",
            m.presence_synced.clone(),
        );
        r.register("snapshot_fetches", "Presence snapshot fetches, by result", m.snapshot_fetches.clone());
        r.register(
            "malformed_mesh_messages",
            "Mesh messages dropped as malformed (gossip, snapshots, signal streams)",
            m.malformed.clone(),
        );
        r.register(
            "presence_rejected",
            "Remote presence records dropped as invalid or over a limit",
            m.presence_rejected.clone(),
        );
        m
    }

    /// An edge connection was accepted; the guard counts it as open until dropped.
    pub(crate) fn edge_open(&self) -> EdgeGuard {
        self.edge_opened.inc();
        self.edge_connections.inc();
        EdgeGuard(self.edge_connections.clone())
    }

    /// An edge connection ended: `Some(code)` the node closed it with, `None` the client left.
    pub(crate) fn edge_closed(&self, code: Option<ErrorCode>) {
        let reason = code.map_or("client", ErrorCode::as_str);
        self.edge_closed.get_or_create(&[("reason", reason)]).inc();
    }

    /// A validated request reached the directory.
    pub(crate) fn request(&self, op: &Op) {
        match op {
            Op::Join { .. } => self.joins.inc(),
            Op::Leave { .. } => self.leaves.inc(),
            Op::Lookup { .. } => self.lookups.inc(),
            Op::Signal { .. } => self.signal_requests.inc(),
        };
    }

    /// An error response with `code`.
    pub(crate) fn error(&self, code: ErrorCode) {
        self.errors.get_or_create(&[("code", code.as_str())]).inc();
    }

    /// Counts `msg` if it is an error (the session's own answers: a failed request or an
    /// unsolicited error for a frame it could not parse).
    pub(crate) fn response(&self, msg: &ServerMessage) {
        match msg {
            ServerMessage::Response { body: ResponseBody::Error { code, .. }, .. }
            | ServerMessage::Error { code, .. } => self.error(*code),
            _ => {}
        }
    }

    /// A signal of `bytes` payload bytes relayed by `route`.
    pub(crate) fn signal(&self, route: Route, bytes: usize) {
        let i = match route {
            Route::Local => 0,
            Route::Forwarded => 1,
            Route::Received => 2,
        };
        self.hot.signals[i].inc();
        self.hot.bytes[i].inc_by(bytes as u64);
    }

    /// A frame was dropped because a queue was full.
    pub(crate) fn queue_drop(&self) {
        self.queue_drops.inc();
    }

    /// Another node answered a forwarded signal (`None`: delivered) after `took`.
    pub(crate) fn relayed(&self, took: Duration, error: Option<ErrorCode>) {
        match error {
            None => self.hot.delivered.observe(took.as_secs_f64()),
            Some(code) => {
                self.relay_latency.get_or_create(&[("result", code.as_str())]).observe(took.as_secs_f64())
            }
        }
        if let Some(code) = error {
            self.error(code);
        }
    }

    /// A snapshot fetch ended.
    pub(crate) fn snapshot_fetch(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.snapshot_fetches.get_or_create(&[("result", result)]).inc();
    }

    /// A malformed mesh message was dropped.
    pub(crate) fn malformed(&self) {
        self.malformed.inc();
    }

    /// Remote presence records were rejected.
    pub(crate) fn presence_rejected(&self, n: u64) {
        if n > 0 {
            self.presence_rejected.inc_by(n);
        }
    }
}

/// Counts one edge connection as open while it lives.
#[derive(Debug)]
pub(crate) struct EdgeGuard(Gauge);

impl Drop for EdgeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry).unwrap_or_default();
        out
    }

    #[test]
    fn given_events_then_the_families_show_them_with_labels() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        let guard = m.edge_open();
        m.signal(Route::Forwarded, 5);
        m.signal(Route::Forwarded, 7);
        m.error(ErrorCode::PeerNotFound);
        m.edge_closed(Some(ErrorCode::IdleTimeout));
        let t = text(&registry);
        assert!(t.contains("signal_mesh_edge_connections 1\n"), "{t}");
        assert!(t.contains("signal_mesh_signals_total{route=\"forwarded\"} 2\n"), "{t}");
        assert!(t.contains("signal_mesh_signal_payload_bytes_total{route=\"forwarded\"} 12\n"), "{t}");
        assert!(t.contains("signal_mesh_errors_total{code=\"PEER_NOT_FOUND\"} 1\n"), "{t}");
        assert!(t.contains("signal_mesh_edge_connections_closed_total{reason=\"IDLE_TIMEOUT\"} 1\n"), "{t}");
        drop(guard);
        assert!(text(&registry).contains("signal_mesh_edge_connections 0\n"));
    }
}
