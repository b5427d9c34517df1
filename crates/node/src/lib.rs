//! `signal-mesh-node`: the Signal Mesh signal node. Edge clients connect over a WebSocket at
//! `/signal`, authenticate with their Ed25519 peer id, join topics, look up peers and relay
//! signals (SDP offers, answers, ICE candidates) to each other. See `docs/protocol.md`.
//!
//! # Layout
//! - [`config`]: [`Config`], every flag and its default (`--help`), also from `SIGNAL_MESH_*`.
//! - [`identity`]: the node's Ed25519 identity and its key file.
//! - [`session`]: the sans-IO per-connection protocol state machine ([`session::Session`]):
//!   challenge and authentication, version check, token bucket, request validation, timeouts,
//!   abuse detection. Input: frames and the current time. Output: an [`session::Action`].
//! - [`directory`]: peers and topics, owned by one task ([`directory::spawn`]) and reached
//!   through a cloneable [`directory::DirectoryHandle`]. It writes replies and events, encoded
//!   once, into each connection's bounded outbound queue.
//! - [`outbox`]: a connection's bounded outbound queue of encoded frames plus its close signal.
//! - `gateway`: the `/signal` WebSocket endpoint, one task per connection driving a session.
//! - `ws`: the upgrade request's checks; the sans-IO WebSocket framing (RFC 6455) the gateway runs
//!   over hyper's upgraded stream is the shared crate `signal-mesh-ws`.
//! - `listener`: the accept loop (pending-connection bound before `accept`, per-IP limit, header
//!   timeout, rate-limited accept errors, bounded shutdown); `tls`: built-in TLS, SIGHUP reload.
//! - [`mesh`]: the libp2p mesh of nodes: presence replication (sans-IO [`mesh::presence`]),
//!   signal forwarding between nodes ([`mesh::links`]), the swarm task, node status.
//! - [`metrics`]: the Prometheus families ([`metrics::Metrics`], a cloneable handle of
//!   atomics the gateway, directory and mesh count into) in one registry with libp2p-metrics.
//! - [`status`]: the management view of the whole mesh ([`status::StatusDoc`]), cached.
//! - `http`: `/health`, `/ready`, `/status`, `/metrics` and the dashboard (`dashboard/`,
//!   embedded with `include_str!`).
//! - `main.rs`: the binary: parse flags, set up logging, bind, print the listening line, run
//!   until SIGINT/SIGTERM.
//!
//! # Running a node
//! [`run`] serves on a bound listener until a shutdown future resolves (mini-redis style);
//! [`Node::start`] binds `config.listen` and runs in the background, for tests and benchmarks:
//!
//! ```no_run
//! # async fn demo() -> Result<(), signal_mesh_node::Error> {
//! let config = signal_mesh_node::Config::default().with_listen("127.0.0.1:0".parse().unwrap());
//! let node = signal_mesh_node::Node::start(config).await?;
//! println!("ws://{}/signal, node id {}", node.local_addr(), node.node_id());
//! node.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! # Driving the parts without sockets (benchmarks)
//! - [`session::Session::new`]`(config, node_id, nonce, now)`, then
//!   [`session::Session::handle_frame`]`(frame, now)` per encoded client frame; the returned
//!   [`session::Action`] says what a driver would do.
//! - [`directory::Directory::new`]`(max_topics)`, [`directory::Directory::register`] with an
//!   [`directory::Outlet`] (the sending end of an [`outbox::outbox`] queue), then [`directory::Directory::request`]`(peer, conn, id, op)` with an
//!   [`session::Op`] such as `Op::Signal`; the frames appear in the receivers. All synchronous:
//!   no runtime is needed. [`directory::spawn`] runs the same thing as a task.
#![forbid(unsafe_code)]

pub mod config;
pub mod directory;
mod gateway;
mod http;
pub mod identity;
mod joined;
mod listener;
pub mod mesh;
pub mod metrics;
pub mod outbox;
pub mod session;
pub mod status;
mod tls;
mod ws;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use signal_mesh_proto::NodeId;
use signal_mesh_proto::auth::Identity;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot, watch};
use tracing::info;

pub use crate::config::{Config, LogFormat};
pub use crate::identity::IdentityError;
pub use crate::tls::TlsError;

/// Capacity of the directory's inbox.
const DIRECTORY_INBOX: usize = 8192;

/// Capacity of the directory's queue to the mesh task.
const MESH_OUTBOUND: usize = 4096;

/// Why the node could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The node identity could not be loaded.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// Binding or serving the socket failed.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    /// The TLS certificate or key could not be loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The node task panicked or was cancelled.
    #[error("node task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// The mesh could not start.
    #[error(transparent)]
    Mesh(#[from] mesh::MeshError),
}

/// A configured node with its identity, ready to serve.
#[derive(Debug)]
pub struct Node {
    config: Config,
    identity: Identity,
    /// Built-in TLS, loaded from `--tls-cert` / `--tls-key` up front so a bad pair stops the start.
    tls: Option<tls::TlsAcceptor>,
}

impl Node {
    /// Loads (or creates) the identity named by `config.key_file`, or generates an ephemeral one,
    /// and the TLS certificate and key if configured.
    pub fn new(config: Config) -> Result<Node, Error> {
        let identity = match &config.key_file {
            Some(path) => identity::load_or_create(path)?,
            None => identity::generate()?,
        };
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(tls::TlsAcceptor::load(cert, key)?),
            _ => None,
        };
        Ok(Node { config, identity, tls })
    }

    /// The node id announced in every challenge.
    pub fn node_id(&self) -> NodeId {
        identity::node_id(&self.identity)
    }

    /// The node's id in the mesh.
    pub fn node_key(&self) -> libp2p::PeerId {
        identity::node_key(&self.identity)
    }

    /// Binds `config.listen` and serves in a background task.
    pub async fn start(config: Config) -> Result<RunningNode, Error> {
        let listener = TcpListener::bind(config.listen).await?;
        let local_addr = listener.local_addr()?;
        let node = Node::new(config)?;
        let node_id = node.node_id();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = oneshot::channel();
        let task = tokio::spawn(node.serve_reporting(
            listener,
            async move {
                // A dropped RunningNode stops the node too.
                let _ = stop_rx.await;
            },
            Some(ready_tx),
        ));
        let (mesh, tasks) = match ready_rx.await {
            Ok(ready) => ready,
            // The task ended before the mesh was up: its error says why.
            Err(_) => {
                task.await??;
                return Err(Error::Io(std::io::Error::other("the node stopped while starting")));
            }
        };
        Ok(RunningNode { local_addr, node_id, mesh, tasks, stop: Some(stop_tx), task })
    }

    /// Serves on `listener` until `shutdown` resolves, then says goodbye to every client
    /// (`SHUTTING_DOWN`), says farewell to the mesh and returns once the clients are gone (or
    /// after a grace period).
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future + Send + 'static,
    ) -> Result<(), Error> {
        self.serve_reporting(listener, shutdown, None).await
    }

    async fn serve_reporting(
        self,
        listener: TcpListener,
        shutdown: impl Future + Send + 'static,
        ready: Option<oneshot::Sender<(mesh::MeshHandle, Vec<tokio::task::AbortHandle>)>>,
    ) -> Result<(), Error> {
        let config = self.config;
        let node_id = identity::node_id(&self.identity);
        let mesh_config = config.mesh();
        let replica = mesh::presence::ReplicaConfig {
            ttl: mesh_config.presence_ttl,
            suspect_grace: (mesh_config.heartbeat * 3).min(mesh_config.presence_ttl),
            max_peers_per_origin: mesh_config.max_peers_per_origin,
            ..mesh::presence::ReplicaConfig::default()
        };
        let heartbeat = mesh_config.heartbeat;
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = metrics::Metrics::register(&mut registry);
        let mesh =
            mesh::Mesh::new(identity::keypair(&self.identity), mesh_config, &mut registry, metrics.clone())
                .await?;
        let mut directory = directory::Directory::with_mesh(
            config.max_topics_per_peer,
            mesh.incarnation(),
            replica,
            Box::new(mesh.forwarder()),
        );
        directory.set_metrics(metrics.clone());
        let (mesh_tx, mesh_rx) = tokio::sync::mpsc::channel(MESH_OUTBOUND);
        let (directory, directory_task) =
            directory::spawn_with_mesh(directory, DIRECTORY_INBOX, Some(mesh_tx));
        let (mesh_stop_tx, mesh_stop_rx) = watch::channel(false);
        let (mesh_handle, mesh_task) = mesh.run(directory.clone(), mesh_rx, mesh_stop_rx);
        if let Some(ready) = ready {
            let _ = ready
                .send((mesh_handle.clone(), vec![mesh_task.abort_handle(), directory_task.abort_handle()]));
        }
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let max_connections = config.max_connections.max(1);
        let connections = Arc::new(Semaphore::new(max_connections as usize));
        let shared = Arc::new(gateway::Shared {
            directory,
            node_id: node_id.clone(),
            session: config.session(),
            queue: outbox::Bounds {
                frames: config.outbound_queue_frames.max(2) as usize,
                bytes: config.outbound_queue_bytes as usize,
            },
            connections: connections.clone(),
            shutdown: shutdown_rx,
            next_conn: AtomicU64::new(1),
            refused: AtomicU64::new(0),
            read_chunk: config.ws_read_buffer_bytes as usize,
            write_batch_bytes: config.ws_write_buffer_bytes as usize,
            metrics: metrics.clone(),
        });
        let management = Arc::new(status::Management::new(
            mesh_handle.clone(),
            shared.directory.clone(),
            metrics,
            registry,
            shared.shutdown.clone(),
            heartbeat,
        ));
        let mut app = Router::new()
            .route("/signal", get(gateway::upgrade))
            .merge(http::routes(management, config.static_dir.is_none()));
        if let Some(dir) = &config.static_dir {
            app = app.fallback_service(tower_http::services::ServeDir::new(dir));
        }
        let app = app.with_state(shared);
        info!(
            addr = %listener.local_addr()?,
            node = %mesh_handle.node(),
            "serving /signal, /health, /ready, /status, /metrics and the dashboard"
        );
        let limits = listener::Limits {
            header_timeout: Duration::from_millis(u64::from(config.header_timeout_ms)),
            max_pending: config.max_pending_connections as usize,
            max_per_ip: config.max_connections_per_ip,
            grace: Duration::from_millis(u64::from(config.shutdown_grace_ms)),
        };
        let on_shutdown = move || {
            let _ = shutdown_tx.send(true);
        };
        // Every WebSocket task holds a permit until it has said goodbye.
        let websockets_done = move || connections.available_permits() >= max_connections as usize;
        let tls = self.tls;
        let _reload = tls.as_ref().map(tls::reload_on_hangup);
        listener::serve(listener, app, limits, tls, shutdown, on_shutdown, websockets_done).await;
        // Withdraw this node's peers everywhere at once (bounded: the farewell waits 300 ms).
        let _ = mesh_stop_tx.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(2), mesh_task).await;
        drop(mesh_handle);
        Ok(())
    }
}

/// Serves a node configured by `config` on `listener` until `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future + Send + 'static,
) -> Result<(), Error> {
    Node::new(config)?.serve(listener, shutdown).await
}

/// A node serving in the background ([`Node::start`]). Dropping it stops the node too.
#[derive(Debug)]
pub struct RunningNode {
    local_addr: SocketAddr,
    node_id: NodeId,
    mesh: mesh::MeshHandle,
    /// The mesh and directory tasks, aborted by [`RunningNode::kill`].
    tasks: Vec<tokio::task::AbortHandle>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), Error>>,
}

impl RunningNode {
    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The node id in its challenges.
    pub fn node_id(&self) -> NodeId {
        self.node_id.clone()
    }

    /// The mesh: node key, listen multiaddrs, status of the whole mesh.
    pub fn mesh(&self) -> &mesh::MeshHandle {
        &self.mesh
    }

    /// Stops the node abruptly, as a crash would: no goodbye to clients, no farewell to the
    /// mesh (for tests of failure handling).
    pub fn kill(mut self) {
        self.stop.take();
        self.task.abort();
        for task in &self.tasks {
            task.abort();
        }
    }

    /// Stops the node gracefully and waits until it has stopped.
    pub async fn shutdown(mut self) -> Result<(), Error> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await?
    }
}
