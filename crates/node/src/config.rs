//! The node's configuration: one struct, filled from command-line flags and `SIGNAL_MESH_*`
//! environment variables, with documented defaults (see `signal-mesh-node --help`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use libp2p::{Multiaddr, PeerId as NodeKey};
use signal_mesh_proto::Limits;

use crate::mesh::MeshConfig;
use crate::session::SessionConfig;

/// Default `--listen` address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:4000";

/// How logs are written to stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Plain,
    /// One JSON object per line.
    Json,
}

/// Configuration of a signal node. [`Config::default`] equals the defaults of the flags.
#[derive(Clone, Debug, PartialEq, Eq, Parser)]
#[command(
    name = "signal-mesh-node",
    version,
    about = "Signal Mesh signal node: WebRTC discovery and signaling relay"
)]
pub struct Config {
    /// Address to serve the edge WebSocket (/signal) and HTTP (/health) on. Port 0 picks a free port.
    #[arg(long, env = "SIGNAL_MESH_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// File holding the node's Ed25519 identity seed (64 hex characters); created if missing.
    /// Without it the node has a new identity on every start.
    #[arg(long, env = "SIGNAL_MESH_KEY_FILE")]
    pub key_file: Option<PathBuf>,

    /// Directory of static files served at / (index.html for directories), e.g. the demo page.
    #[arg(long, env = "SIGNAL_MESH_STATIC_DIR")]
    pub static_dir: Option<PathBuf>,

    /// Log format on stderr. The level is read from SIGNAL_MESH_LOG (e.g. "info", "debug",
    /// "info,signal_mesh_node=debug"; default "info").
    #[arg(long, env = "SIGNAL_MESH_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,

    /// Largest WebSocket frame accepted from a client, in bytes (larger: TOO_LARGE).
    #[arg(long, env = "SIGNAL_MESH_MAX_FRAME_BYTES", default_value_t = Limits::DEFAULT_MAX_FRAME_BYTES)]
    pub max_frame_bytes: u32,

    /// Largest signal payload, in bytes (larger: TOO_LARGE).
    #[arg(long, env = "SIGNAL_MESH_MAX_PAYLOAD_BYTES", default_value_t = Limits::DEFAULT_MAX_PAYLOAD_BYTES)]
    pub max_payload_bytes: u32,

    /// Most topics one peer may have joined at once (more: LIMIT_EXCEEDED).
    #[arg(long, env = "SIGNAL_MESH_MAX_TOPICS_PER_PEER", default_value_t = Limits::DEFAULT_MAX_TOPICS_PER_PEER)]
    pub max_topics_per_peer: u32,

    /// Largest lookup page (asking for more: LIMIT_EXCEEDED).
    #[arg(long, env = "SIGNAL_MESH_MAX_LOOKUP_PAGE", default_value_t = Limits::DEFAULT_MAX_LOOKUP_PAGE)]
    pub max_lookup_page: u32,

    /// Sustained requests per second per connection (token bucket refill; over: RATE_LIMITED).
    #[arg(long, env = "SIGNAL_MESH_REQUESTS_PER_SECOND", default_value_t = Limits::DEFAULT_REQUESTS_PER_SECOND)]
    pub requests_per_second: u32,

    /// Token bucket size: requests a connection may send back to back.
    #[arg(long, env = "SIGNAL_MESH_REQUEST_BURST", default_value_t = Limits::DEFAULT_REQUEST_BURST)]
    pub request_burst: u32,

    /// Close a connection that sent nothing for this many milliseconds (IDLE_TIMEOUT).
    #[arg(long, env = "SIGNAL_MESH_IDLE_TIMEOUT_MS", default_value_t = Limits::DEFAULT_IDLE_TIMEOUT_MS)]
    pub idle_timeout_ms: u32,

    /// Most client connections at once; more are refused with OVERLOADED.
    #[arg(long, env = "SIGNAL_MESH_MAX_CONNECTIONS", default_value_t = Limits::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: u32,

    /// Frames queued for one client before it counts as a slow consumer and is disconnected
    /// (SLOW_CONSUMER).
    #[arg(long, env = "SIGNAL_MESH_OUTBOUND_QUEUE_FRAMES", default_value_t = Config::DEFAULT_OUTBOUND_QUEUE_FRAMES)]
    pub outbound_queue_frames: u32,

    /// Milliseconds a client has to authenticate after the challenge (then AUTH_FAILED).
    #[arg(long, env = "SIGNAL_MESH_AUTH_TIMEOUT_MS", default_value_t = Config::DEFAULT_AUTH_TIMEOUT_MS)]
    pub auth_timeout_ms: u32,

    /// Protocol errors in a row (bad frames, rate-limited requests, ...) before a connection is
    /// closed with POLICY_VIOLATION.
    #[arg(long, env = "SIGNAL_MESH_MAX_CONSECUTIVE_ERRORS", default_value_t = SessionConfig::DEFAULT_MAX_CONSECUTIVE_ERRORS)]
    pub max_consecutive_errors: u32,

    /// Most bytes read from a WebSocket in one call (256 to 16,384). Idle connections hold no
    /// read buffer; one is allocated only while bytes of an unfinished frame are pending.
    #[arg(long, env = "SIGNAL_MESH_WS_READ_BUFFER_BYTES", default_value_t = Config::DEFAULT_WS_READ_BUFFER_BYTES)]
    pub ws_read_buffer_bytes: u32,

    /// Outgoing frames queued for a connection are written in one call, up to this many bytes
    /// (the buffer is released once written).
    #[arg(long, env = "SIGNAL_MESH_WS_WRITE_BUFFER_BYTES", default_value_t = Config::DEFAULT_WS_WRITE_BUFFER_BYTES)]
    pub ws_write_buffer_bytes: u32,

    // --- mesh -----------------------------------------------------------------------------------
    /// Mesh network name: nodes of different networks (or incompatible mesh versions) never mix.
    /// Letters, digits, '.', '_' and '-', at most 64.
    #[arg(long, env = "SIGNAL_MESH_NETWORK", default_value = Config::DEFAULT_NETWORK, value_parser = parse_network)]
    pub network: String,

    /// libp2p listen multiaddr for the mesh (repeatable). Default: TCP and QUIC on an
    /// OS-chosen port on --listen's host.
    #[arg(long = "p2p-listen", env = "SIGNAL_MESH_P2P_LISTEN", value_delimiter = ',')]
    pub p2p_listen: Vec<Multiaddr>,

    /// Multiaddr of a node to join the mesh through (repeatable), e.g.
    /// /ip4/10.0.0.1/tcp/4100/p2p/12D3KooW..., /dns4/n1.example.org/tcp/4100 or
    /// /dnsaddr/mesh.example.org. Without any, this node is the first of a mesh.
    #[arg(long, env = "SIGNAL_MESH_BOOTSTRAP", value_delimiter = ',')]
    pub bootstrap: Vec<Multiaddr>,

    /// Node id allowed in the mesh (repeatable): with any, the mesh is private and every other
    /// node is refused at the connection level.
    #[arg(long = "allow-node", env = "SIGNAL_MESH_ALLOW_NODES", value_delimiter = ',')]
    pub allow_nodes: Vec<NodeKey>,

    /// Discover other nodes on the local network with mDNS.
    #[arg(long, env = "SIGNAL_MESH_MDNS")]
    pub mdns: bool,

    /// A node not heard from for this many milliseconds is dropped with its peers (members of
    /// their topics get PeerLeft). Sooner when its connection closed (3 heartbeats).
    #[arg(long, env = "SIGNAL_MESH_PRESENCE_TTL_MS", default_value_t = Config::DEFAULT_PRESENCE_TTL_MS)]
    pub presence_ttl_ms: u32,

    /// How often this node tells the mesh it is alive (and its status), in milliseconds.
    #[arg(long, env = "SIGNAL_MESH_HEARTBEAT_MS", default_value_t = Config::DEFAULT_HEARTBEAT_MS)]
    pub heartbeat_ms: u32,

    /// Milliseconds a signal for a peer on another node may take to be confirmed by that node
    /// before the sender gets PEER_UNREACHABLE.
    #[arg(long, env = "SIGNAL_MESH_FORWARD_TIMEOUT_MS", default_value_t = Config::DEFAULT_FORWARD_TIMEOUT_MS)]
    pub forward_timeout_ms: u32,

    /// The edge URL clients should use for this node (e.g. wss://n1.example.org/signal); other
    /// nodes hand it to their clients for failover.
    #[arg(long, env = "SIGNAL_MESH_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Most peers accepted from one other node's presence.
    #[arg(long, env = "SIGNAL_MESH_MAX_PEERS_PER_NODE", default_value_t = Config::DEFAULT_MAX_PEERS_PER_NODE)]
    pub max_peers_per_node: u32,

    // Connection-level limits, shutdown and TLS (issue 9). Kept together at the end.
    /// Bytes queued for one client before it counts as a slow consumer (SLOW_CONSUMER). Signals
    /// from other peers may fill half of it, each sender an eighth (more: PEER_BUSY to the sender).
    #[arg(long, env = "SIGNAL_MESH_OUTBOUND_QUEUE_BYTES", default_value_t = Config::DEFAULT_OUTBOUND_QUEUE_BYTES)]
    pub outbound_queue_bytes: u32,

    /// Milliseconds a new connection has to finish its TLS handshake and send a complete HTTP
    /// request header (also between requests on a kept-alive connection); then it is closed.
    #[arg(long, env = "SIGNAL_MESH_HEADER_TIMEOUT_MS", default_value_t = Config::DEFAULT_HEADER_TIMEOUT_MS)]
    pub header_timeout_ms: u32,

    /// Most connections that have not finished their request or WebSocket upgrade. At the limit
    /// the node accepts no more until one finishes or times out (they wait in the kernel's backlog).
    #[arg(long, env = "SIGNAL_MESH_MAX_PENDING_CONNECTIONS", default_value_t = Config::DEFAULT_MAX_PENDING_CONNECTIONS)]
    pub max_pending_connections: u32,

    /// Most TCP connections from one IP address at once (0: no limit); more are closed at once.
    #[arg(long, env = "SIGNAL_MESH_MAX_CONNECTIONS_PER_IP", default_value_t = Config::DEFAULT_MAX_CONNECTIONS_PER_IP)]
    pub max_connections_per_ip: u32,

    /// Milliseconds a shutdown (SIGTERM) may take: clients get SHUTTING_DOWN, /health answers 503,
    /// and whatever is still open at the end is closed.
    #[arg(long, env = "SIGNAL_MESH_SHUTDOWN_GRACE_MS", default_value_t = Config::DEFAULT_SHUTDOWN_GRACE_MS)]
    pub shutdown_grace_ms: u32,

    /// PEM certificate chain for built-in TLS (wss:// and https://); needs --tls-key. Reloaded
    /// on SIGHUP. Without it the node speaks plain ws:// (put a TLS proxy in front).
    #[arg(long, env = "SIGNAL_MESH_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert (PKCS#8, PKCS#1 or SEC1). Reloaded on SIGHUP.
    #[arg(long, env = "SIGNAL_MESH_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// Checks a `--network` name.
fn parse_network(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok { Ok(s.to_owned()) } else { Err("letters, digits, '.', '_' and '-', 1 to 64 of them".into()) }
}

impl Config {
    /// Default [`Config::outbound_queue_frames`]: room for the responses to a full request burst
    /// plus events. Queue memory is allocated as frames arrive, not up front.
    pub const DEFAULT_OUTBOUND_QUEUE_FRAMES: u32 = 1024;
    /// Default [`Config::auth_timeout_ms`].
    pub const DEFAULT_AUTH_TIMEOUT_MS: u32 = 10_000;
    /// Default [`Config::ws_read_buffer_bytes`]: several signals per read under load.
    pub const DEFAULT_WS_READ_BUFFER_BYTES: u32 = 16_384;
    /// Default [`Config::ws_write_buffer_bytes`].
    pub const DEFAULT_WS_WRITE_BUFFER_BYTES: u32 = 8192;
    /// Default [`Config::outbound_queue_bytes`]: 32 signals of the largest payload.
    pub const DEFAULT_OUTBOUND_QUEUE_BYTES: u32 = 1 << 20;
    /// Default [`Config::header_timeout_ms`].
    pub const DEFAULT_HEADER_TIMEOUT_MS: u32 = 10_000;
    /// Default [`Config::max_pending_connections`].
    pub const DEFAULT_MAX_PENDING_CONNECTIONS: u32 = 1024;
    /// Default [`Config::max_connections_per_ip`]: room for a large NAT, not for one abuser.
    pub const DEFAULT_MAX_CONNECTIONS_PER_IP: u32 = 256;
    /// Default [`Config::shutdown_grace_ms`].
    pub const DEFAULT_SHUTDOWN_GRACE_MS: u32 = 5000;
    /// Default [`Config::network`].
    pub const DEFAULT_NETWORK: &'static str = "default";
    /// Default [`Config::presence_ttl_ms`].
    pub const DEFAULT_PRESENCE_TTL_MS: u32 = 10_000;
    /// Default [`Config::heartbeat_ms`].
    pub const DEFAULT_HEARTBEAT_MS: u32 = 1_000;
    /// Default [`Config::forward_timeout_ms`].
    pub const DEFAULT_FORWARD_TIMEOUT_MS: u32 = 2_000;
    /// Default [`Config::max_peers_per_node`].
    pub const DEFAULT_MAX_PEERS_PER_NODE: u32 = 250_000;

    /// The mesh settings. Without `--p2p-listen`, TCP and QUIC on port 0 of `--listen`'s host.
    pub fn mesh(&self) -> MeshConfig {
        let listen = if self.p2p_listen.is_empty() {
            let ip = match self.listen.ip() {
                std::net::IpAddr::V4(ip) => format!("/ip4/{ip}"),
                std::net::IpAddr::V6(ip) => format!("/ip6/{ip}"),
            };
            [format!("{ip}/tcp/0"), format!("{ip}/udp/0/quic-v1")]
                .iter()
                .filter_map(|a| a.parse().ok())
                .collect()
        } else {
            self.p2p_listen.clone()
        };
        let heartbeat = Duration::from_millis(u64::from(self.heartbeat_ms.max(50)));
        MeshConfig {
            network: self.network.clone(),
            listen,
            bootstrap: self.bootstrap.clone(),
            allow_nodes: self.allow_nodes.clone(),
            mdns: self.mdns,
            presence_ttl: Duration::from_millis(u64::from(self.presence_ttl_ms)).max(heartbeat * 2),
            heartbeat,
            forward_timeout: Duration::from_millis(u64::from(self.forward_timeout_ms.max(1))),
            public_url: self.public_url.clone(),
            max_peers_per_origin: self.max_peers_per_node as usize,
        }
    }

    /// Joins the mesh through `addr` (builder style).
    pub fn with_bootstrap(mut self, addr: Multiaddr) -> Config {
        self.bootstrap.push(addr);
        self
    }

    /// Sets the network name (builder style).
    pub fn with_network(mut self, network: &str) -> Config {
        self.network = network.to_owned();
        self
    }

    /// The limits announced to clients.
    pub fn limits(&self) -> Limits {
        Limits {
            max_frame_bytes: self.max_frame_bytes,
            max_payload_bytes: self.max_payload_bytes,
            max_topics_per_peer: self.max_topics_per_peer,
            max_lookup_page: self.max_lookup_page,
            requests_per_second: self.requests_per_second,
            request_burst: self.request_burst,
            idle_timeout_ms: self.idle_timeout_ms,
            max_connections: self.max_connections,
        }
    }

    /// Sets every limit from `limits`.
    pub fn with_limits(mut self, limits: Limits) -> Config {
        self.max_frame_bytes = limits.max_frame_bytes;
        self.max_payload_bytes = limits.max_payload_bytes;
        self.max_topics_per_peer = limits.max_topics_per_peer;
        self.max_lookup_page = limits.max_lookup_page;
        self.requests_per_second = limits.requests_per_second;
        self.request_burst = limits.request_burst;
        self.idle_timeout_ms = limits.idle_timeout_ms;
        self.max_connections = limits.max_connections;
        self
    }

    /// Sets the listen address.
    pub fn with_listen(mut self, listen: SocketAddr) -> Config {
        self.listen = listen;
        self
    }

    /// The per-session settings.
    pub fn session(&self) -> SessionConfig {
        SessionConfig {
            limits: self.limits(),
            auth_timeout: Duration::from_millis(u64::from(self.auth_timeout_ms)),
            max_consecutive_errors: self.max_consecutive_errors,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 4000)),
            key_file: None,
            static_dir: None,
            log_format: LogFormat::Plain,
            max_frame_bytes: Limits::DEFAULT_MAX_FRAME_BYTES,
            max_payload_bytes: Limits::DEFAULT_MAX_PAYLOAD_BYTES,
            max_topics_per_peer: Limits::DEFAULT_MAX_TOPICS_PER_PEER,
            max_lookup_page: Limits::DEFAULT_MAX_LOOKUP_PAGE,
            requests_per_second: Limits::DEFAULT_REQUESTS_PER_SECOND,
            request_burst: Limits::DEFAULT_REQUEST_BURST,
            idle_timeout_ms: Limits::DEFAULT_IDLE_TIMEOUT_MS,
            max_connections: Limits::DEFAULT_MAX_CONNECTIONS,
            outbound_queue_frames: Config::DEFAULT_OUTBOUND_QUEUE_FRAMES,
            auth_timeout_ms: Config::DEFAULT_AUTH_TIMEOUT_MS,
            max_consecutive_errors: SessionConfig::DEFAULT_MAX_CONSECUTIVE_ERRORS,
            ws_read_buffer_bytes: Config::DEFAULT_WS_READ_BUFFER_BYTES,
            ws_write_buffer_bytes: Config::DEFAULT_WS_WRITE_BUFFER_BYTES,
            network: Config::DEFAULT_NETWORK.to_owned(),
            p2p_listen: Vec::new(),
            bootstrap: Vec::new(),
            allow_nodes: Vec::new(),
            mdns: false,
            presence_ttl_ms: Config::DEFAULT_PRESENCE_TTL_MS,
            heartbeat_ms: Config::DEFAULT_HEARTBEAT_MS,
            forward_timeout_ms: Config::DEFAULT_FORWARD_TIMEOUT_MS,
            public_url: None,
            max_peers_per_node: Config::DEFAULT_MAX_PEERS_PER_NODE,
            outbound_queue_bytes: Config::DEFAULT_OUTBOUND_QUEUE_BYTES,
            header_timeout_ms: Config::DEFAULT_HEADER_TIMEOUT_MS,
            max_pending_connections: Config::DEFAULT_MAX_PENDING_CONNECTIONS,
            max_connections_per_ip: Config::DEFAULT_MAX_CONNECTIONS_PER_IP,
            shutdown_grace_ms: Config::DEFAULT_SHUTDOWN_GRACE_MS,
            tls_cert: None,
            tls_key: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_matches_the_flag_defaults() {
        let parsed = Config::try_parse_from(["signal-mesh-node"]).unwrap();
        assert_eq!(parsed, Config::default());
        assert_eq!(parsed.limits(), Limits::default());
    }

    #[test]
    fn flags_override_defaults() {
        let c = Config::try_parse_from([
            "x",
            "--listen",
            "127.0.0.1:0",
            "--max-lookup-page",
            "5",
            "--log-format",
            "json",
        ])
        .unwrap();
        assert_eq!(c.listen.port(), 0);
        assert_eq!(c.max_lookup_page, 5);
        assert_eq!(c.log_format, LogFormat::Json);
    }

    #[test]
    fn mesh_flags_parse_and_bad_networks_are_refused() {
        let node = NodeKey::random();
        let boot = format!("/ip4/127.0.0.1/tcp/4100/p2p/{node}");
        let c = Config::try_parse_from([
            "x",
            "--network",
            "devnet-3",
            "--bootstrap",
            &boot,
            "--bootstrap",
            "/dnsaddr/mesh.example.org",
            "--allow-node",
            &node.to_string(),
            "--p2p-listen",
            "/ip4/0.0.0.0/tcp/4100",
        ])
        .unwrap();
        assert_eq!(c.network, "devnet-3");
        assert_eq!(c.bootstrap.len(), 2);
        assert_eq!(c.allow_nodes, vec![node]);
        assert_eq!(c.mesh().listen.len(), 1);
        assert_eq!(Config::default().mesh().listen.len(), 2, "TCP and QUIC by default");
        for bad in ["", "a/b", "x y", &"n".repeat(65)] {
            assert!(Config::try_parse_from(["x", "--network", bad]).is_err(), "{bad:?} accepted");
        }
        assert!(Config::try_parse_from(["x", "--bootstrap", "not-a-multiaddr"]).is_err());
    }
}
