//! The libp2p `Swarm` and the one task that owns it. It moves bytes between the network and the
//! directory: gossip and snapshots in (parsed, then [`Command::Presence`]), the directory's
//! [`Outbound`] messages out, heartbeats every interval. It never waits for the network on
//! the directory's behalf, and its own waits on the directory are short (the directory never
//! waits on anything).

use std::collections::{HashMap, HashSet};
use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::core::ConnectedPoint;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId as NodeKey, StreamProtocol, Swarm, allow_block_list, gossipsub, identify, identity,
    kad, mdns, noise, ping, request_response, tcp, yamux,
};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::links::{Links, serve_inbound};
use super::presence::OriginView;
use super::wire::{
    LinkStatus, MAX_PRESENCE_BYTES, MAX_SNAPSHOT_BYTES, NodeStatus, Presence, PresenceMessage, Snapshot,
};
use super::{MeshConfig, Names};
use crate::directory::{Command, DirectoryHandle, Outbound, PresenceInput, Report};
use crate::metrics::Metrics;
use libp2p::metrics::{Metrics as Libp2pMetrics, Recorder};

/// How often the directory is asked to expire silent nodes.
const TICK: Duration = Duration::from_millis(100);
/// Malformed messages from one node before it is disconnected.
const MAX_MALFORMED: u32 = 16;
/// Most nodes this node keeps connections to (beyond, discovery does not dial).
const MAX_LINKS: usize = 128;
/// How often unconnected known nodes and bootstrap addresses are dialed again.
const REDIAL: Duration = Duration::from_secs(5);
/// How often the Kademlia routing table is refreshed while this node has links. Kademlia's own
/// periodic bootstrap is off: on a lone node it warned "No known peers" every five minutes.
const KAD_REFRESH: Duration = Duration::from_secs(300);

/// Why the mesh could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MeshError {
    /// Building the transport failed.
    #[error("libp2p transport: {0}")]
    Transport(String),
    /// A listen address could not be used.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why.
        reason: String,
    },
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    allow: Toggle<allow_block_list::Behaviour<allow_block_list::AllowedPeers>>,
    block: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    kad: kad::Behaviour<kad::store::MemoryStore>,
    gossipsub: gossipsub::Behaviour,
    snapshot: request_response::Behaviour<SnapshotCodec>,
    stream: libp2p_stream::Behaviour,
    mdns: Toggle<mdns::tokio::Behaviour>,
}

/// Snapshot request-response: an empty request, a length-prefixed `Snapshot` response.
#[derive(Clone, Debug, Default)]
struct SnapshotCodec;

async fn read_prefixed<T: futures::AsyncRead + Unpin + Send>(io: &mut T, max: usize) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("{len} bytes is over the limit")));
    }
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_prefixed<T: futures::AsyncWrite + Unpin + Send>(io: &mut T, bytes: &[u8]) -> io::Result<()> {
    let len =
        u32::try_from(bytes.len()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too large"))?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(bytes).await?;
    io.close().await
}

#[async_trait]
impl request_response::Codec for SnapshotCodec {
    type Protocol = StreamProtocol;
    type Request = ();
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<()>
    where
        T: futures::AsyncRead + Unpin + Send,
    {
        read_prefixed(io, 64).await.map(|_| ())
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: futures::AsyncRead + Unpin + Send,
    {
        read_prefixed(io, MAX_SNAPSHOT_BYTES).await
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, _: ()) -> io::Result<()>
    where
        T: futures::AsyncWrite + Unpin + Send,
    {
        write_prefixed(io, &[]).await
    }

    async fn write_response<T>(&mut self, _: &StreamProtocol, io: &mut T, res: Vec<u8>) -> io::Result<()>
    where
        T: futures::AsyncWrite + Unpin + Send,
    {
        write_prefixed(io, &res).await
    }
}

/// The whole mesh as one node sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshStatus {
    /// This node.
    pub node: NodeKey,
    /// This node's own status (as in its last heartbeat).
    pub local: NodeStatus,
    /// Every other node known, with its last status.
    pub nodes: Vec<OriginView>,
    /// Whether this node has completed a presence sync with the mesh.
    pub synced: bool,
}

/// An operator's command to the swarm task.
#[derive(Debug)]
enum Control {
    /// Refuse (and drop) every connection to the node, or stop doing so.
    Block(NodeKey, bool),
}

/// A cloneable handle to a running mesh.
#[derive(Clone, Debug)]
pub struct MeshHandle {
    node: NodeKey,
    control: mpsc::Sender<Control>,
    directory: DirectoryHandle,
    local: watch::Receiver<NodeStatus>,
    synced: watch::Receiver<bool>,
    listen: Vec<Multiaddr>,
}

impl MeshHandle {
    /// This node's id.
    pub fn node(&self) -> NodeKey {
        self.node
    }

    /// The libp2p listen addresses, each ending in `/p2p/<node id>`.
    pub fn listen_addrs(&self) -> &[Multiaddr] {
        &self.listen
    }

    /// The whole mesh as this node sees it.
    pub async fn status(&self) -> Option<MeshStatus> {
        let nodes = self.directory.origins().await.ok()?;
        Some(MeshStatus {
            node: self.node,
            local: self.local.borrow().clone(),
            nodes,
            synced: *self.synced.borrow(),
        })
    }

    /// Cuts this node off from `node` (its connections are closed and refused) until called
    /// again with `blocked: false`: a way to isolate a misbehaving node without a restart, and
    /// how tests partition a mesh. False if the mesh has stopped.
    pub async fn block(&self, node: NodeKey, blocked: bool) -> bool {
        self.control.send(Control::Block(node, blocked)).await.is_ok()
    }

    /// Whether this node has completed its first presence sync with the mesh (true from the
    /// start for a node without bootstrap addresses).
    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Resolves once this node has completed its first presence sync with the mesh (at once
    /// for a node without bootstrap addresses).
    pub async fn synced(&self) {
        let mut rx = self.synced.clone();
        let _ = rx.wait_for(|s| *s).await;
    }
}

/// A mesh that is listening but not yet running: [`Mesh::forwarder`] first (for the directory),
/// then [`Mesh::run`].
pub struct Mesh {
    swarm: Swarm<Behaviour>,
    config: MeshConfig,
    names: Names,
    listen: Vec<Multiaddr>,
    incarnation: u64,
    started: Instant,
    metrics: Metrics,
    p2p_metrics: Libp2pMetrics,
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh").field("node", self.swarm.local_peer_id()).finish()
    }
}

/// Dial options for `node` from a new local port. With libp2p's default (reuse the listen port),
/// two dials to one node, e.g. from both the bootstrap list and Kademlia, collide on the same
/// address pair and fail with "address in use" on loopback.
fn fresh_port(node: NodeKey) -> DialOpts {
    DialOpts::peer_id(node).allocate_new_port().build()
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Mesh {
    /// Builds the swarm for `keypair` and starts listening; returns once every listen address
    /// is bound. libp2p's own metrics (`libp2p_*`, bandwidth included) go into `registry`, the
    /// mesh's counters into `metrics`.
    pub async fn new(
        keypair: identity::Keypair,
        config: MeshConfig,
        registry: &mut prometheus_client::registry::Registry,
        metrics: Metrics,
    ) -> Result<Mesh, MeshError> {
        let names = config.names();
        let local = keypair.public().to_peer_id();
        let transport = |e: &dyn std::fmt::Display| MeshError::Transport(e.to_string());
        let behaviour =
            |key: &identity::Keypair| -> Result<Behaviour, Box<dyn std::error::Error + Send + Sync>> {
                let allow = if config.allow_nodes.is_empty() {
                    None
                } else {
                    let mut allow = allow_block_list::Behaviour::<allow_block_list::AllowedPeers>::default();
                    for node in &config.allow_nodes {
                        allow.allow_peer(*node);
                    }
                    Some(allow)
                };
                let identify = identify::Behaviour::new(
                    identify::Config::new(names.identify.clone(), key.public())
                        .with_agent_version(format!("signal-mesh-node/{}", env!("CARGO_PKG_VERSION"))),
                );
                let mut kad_config = kad::Config::new(names.kad.clone());
                kad_config.set_query_timeout(Duration::from_secs(10));
                kad_config.set_periodic_bootstrap_interval(None);
                let mut kad =
                    kad::Behaviour::with_config(local, kad::store::MemoryStore::new(local), kad_config);
                kad.set_mode(Some(kad::Mode::Server));
                let gossip_config = gossipsub::ConfigBuilder::default()
                    .protocol_id_prefix(names.gossip_prefix.clone())
                    .max_transmit_size(MAX_PRESENCE_BYTES + 4096)
                    .validation_mode(gossipsub::ValidationMode::Strict)
                    .heartbeat_interval(Duration::from_millis(700))
                    .flood_publish(true)
                    .build()?;
                let gossipsub = gossipsub::Behaviour::new(
                    gossipsub::MessageAuthenticity::Signed(key.clone()),
                    gossip_config,
                )?;
                let snapshot = request_response::Behaviour::new(
                    [(names.snapshot.clone(), request_response::ProtocolSupport::Full)],
                    request_response::Config::default().with_request_timeout(Duration::from_secs(10)),
                );
                let mdns = if config.mdns {
                    Some(mdns::tokio::Behaviour::new(mdns::Config::default(), local)?)
                } else {
                    None
                };
                Ok(Behaviour {
                    allow: allow.into(),
                    block: allow_block_list::Behaviour::default(),
                    identify,
                    ping: ping::Behaviour::new(ping::Config::new().with_interval(Duration::from_secs(5))),
                    kad,
                    gossipsub,
                    snapshot,
                    stream: libp2p_stream::Behaviour::new(),
                    mdns: mdns.into(),
                })
            };
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_tcp(tcp::Config::default().nodelay(true), noise::Config::new, yamux::Config::default)
            .map_err(|e| transport(&e))?
            .with_quic_config(|mut c| {
                // A crashed node's QUIC links carry no FIN: they end on the idle timeout
                // (10 s by default, as long as the presence TTL), so its peers stayed listed
                // for the TTL on every node linked to it over QUIC. With keep-alives every
                // heartbeat and 3 heartbeats of silence, the link goes down when a TCP link
                // would have had its suspect grace end.
                c.keep_alive_interval = config.heartbeat;
                c.max_idle_timeout = u32::try_from((config.heartbeat * 3).as_millis()).unwrap_or(u32::MAX);
                c
            })
            .with_dns()
            .map_err(|e| transport(&e))?
            .with_bandwidth_metrics(registry)
            .with_behaviour(behaviour)
            .map_err(|e| transport(&e))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
            .build();
        let topic = gossipsub::IdentTopic::new(names.presence_topic.clone());
        swarm.behaviour_mut().gossipsub.subscribe(&topic).map_err(|e| transport(&e))?;
        let mut pending = HashSet::new();
        for addr in &config.listen {
            let id = swarm
                .listen_on(addr.clone())
                .map_err(|e| MeshError::Listen { addr: addr.clone(), reason: e.to_string() })?;
            pending.insert(id);
        }
        // Wait until every listener has its address (port 0 resolved).
        let mut listen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !pending.is_empty() {
            let event = tokio::time::timeout_at(deadline, swarm.select_next_some()).await.map_err(|_| {
                MeshError::Listen {
                    addr: config.listen.first().cloned().unwrap_or_else(Multiaddr::empty),
                    reason: "timed out".into(),
                }
            })?;
            match event {
                SwarmEvent::NewListenAddr { listener_id, address } => {
                    pending.remove(&listener_id);
                    listen.push(address.with_p2p(local).unwrap_or_else(|a| a));
                }
                SwarmEvent::ListenerClosed { listener_id, reason, addresses } => {
                    pending.remove(&listener_id);
                    let reason = reason.err().map_or_else(|| "closed".to_owned(), |e| e.to_string());
                    return Err(MeshError::Listen {
                        addr: addresses.first().cloned().unwrap_or_else(Multiaddr::empty),
                        reason,
                    });
                }
                SwarmEvent::ListenerError { error, .. } => {
                    return Err(MeshError::Listen {
                        addr: config.listen.first().cloned().unwrap_or_else(Multiaddr::empty),
                        reason: error.to_string(),
                    });
                }
                _ => {}
            }
        }
        let p2p_metrics = Libp2pMetrics::new(registry);
        Ok(Mesh {
            swarm,
            config,
            names,
            listen,
            incarnation: unix_ms(),
            started: Instant::now(),
            metrics,
            p2p_metrics,
        })
    }

    /// This node's id.
    pub fn node(&self) -> NodeKey {
        *self.swarm.local_peer_id()
    }

    /// This node's presence incarnation (its start time, Unix ms).
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The listen addresses, each ending in `/p2p/<node id>`.
    pub fn listen_addrs(&self) -> &[Multiaddr] {
        &self.listen
    }

    /// The forwarder the directory uses to reach other nodes.
    pub fn forwarder(&self) -> Links {
        Links::new(
            self.swarm.behaviour().stream.new_control(),
            self.names.signal.clone(),
            self.config.forward_timeout,
        )
        .with_metrics(self.metrics.clone())
    }

    /// Runs the mesh in a task until `shutdown` resolves (then says farewell).
    pub fn run(
        self,
        directory: DirectoryHandle,
        outbound: mpsc::Receiver<Outbound>,
        shutdown: watch::Receiver<bool>,
    ) -> (MeshHandle, tokio::task::JoinHandle<()>) {
        let node = self.node();
        let (local_tx, local_rx) = watch::channel(NodeStatus::default());
        let no_bootstrap = self.config.bootstrap.is_empty() && !self.config.mdns;
        let (synced_tx, synced_rx) = watch::channel(no_bootstrap);
        if let Ok(incoming) = self.swarm.behaviour().stream.new_control().accept(self.names.signal.clone()) {
            tokio::spawn(serve_inbound(incoming, directory.clone()));
        }
        let (control_tx, control_rx) = mpsc::channel(16);
        let handle = MeshHandle {
            node,
            control: control_tx,
            directory: directory.clone(),
            local: local_rx,
            synced: synced_rx,
            listen: self.listen.clone(),
        };
        let topic = gossipsub::IdentTopic::new(self.names.presence_topic.clone());
        let (responses_tx, responses_rx) = mpsc::channel(64);
        let task = EventLoop {
            swarm: self.swarm,
            directory,
            outbound,
            shutdown,
            topic,
            config: self.config,
            names: self.names,
            listen: self.listen,
            incarnation: self.incarnation,
            started: self.started,
            report: Report::default(),
            last_counters: None,
            malformed: HashMap::new(),
            malformed_total: 0,
            rtt: HashMap::new(),
            fetching: HashMap::new(),
            local_tx,
            synced_tx,
            sync_logged: false,
            responses_tx,
            responses_rx,
            control: control_rx,
            connected: HashSet::new(),
            gossip_dials: HashMap::new(),
            kad_refreshed: None,
            metrics: self.metrics,
            p2p_metrics: self.p2p_metrics,
        };
        (handle, tokio::spawn(task.run()))
    }
}

struct EventLoop {
    swarm: Swarm<Behaviour>,
    directory: DirectoryHandle,
    outbound: mpsc::Receiver<Outbound>,
    shutdown: watch::Receiver<bool>,
    topic: gossipsub::IdentTopic,
    config: MeshConfig,
    names: Names,
    listen: Vec<Multiaddr>,
    incarnation: u64,
    started: Instant,
    /// The directory's last report.
    report: Report,
    last_counters: Option<(Instant, crate::directory::Counters)>,
    malformed: HashMap<NodeKey, u32>,
    malformed_total: u64,
    rtt: HashMap<NodeKey, Duration>,
    /// Snapshot requests in flight, by origin.
    fetching: HashMap<NodeKey, request_response::OutboundRequestId>,
    local_tx: watch::Sender<NodeStatus>,
    synced_tx: watch::Sender<bool>,
    sync_logged: bool,
    responses_tx: mpsc::Sender<(request_response::ResponseChannel<Vec<u8>>, Vec<u8>)>,
    responses_rx: mpsc::Receiver<(request_response::ResponseChannel<Vec<u8>>, Vec<u8>)>,
    control: mpsc::Receiver<Control>,
    /// Nodes of this network with a live connection (identify confirmed).
    connected: HashSet<NodeKey>,
    /// Nodes dialed because gossip told of them, and when (see `link_to`).
    gossip_dials: HashMap<NodeKey, Instant>,
    /// When Kademlia was last bootstrapped (`None`: not yet, no link so far).
    kad_refreshed: Option<Instant>,
    metrics: Metrics,
    p2p_metrics: Libp2pMetrics,
}

impl EventLoop {
    async fn run(mut self) {
        let node = *self.swarm.local_peer_id();
        for addr in &self.listen {
            info!(%addr, "mesh listening");
        }
        info!(%node, network = %self.config.network, bootstrap = self.config.bootstrap.len(), "mesh started");
        self.dial_bootstrap();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut heartbeat = tokio::time::interval(self.config.heartbeat);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut redial = tokio::time::interval(REDIAL);
        redial.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.shutdown.changed() => break,
                event = self.swarm.select_next_some() => self.on_swarm(event).await,
                Some(message) = self.outbound.recv() => self.on_outbound(message),
                Some(Control::Block(node, blocked)) = self.control.recv() => {
                    if blocked {
                        warn!(%node, "node blocked by the operator");
                        self.swarm.behaviour_mut().block.block_peer(node);
                    } else {
                        info!(%node, "node unblocked");
                        self.swarm.behaviour_mut().block.unblock_peer(node);
                        let _ = self.swarm.dial(fresh_port(node));
                    }
                }
                Some((channel, bytes)) = self.responses_rx.recv() => {
                    let _ = self.swarm.behaviour_mut().snapshot.send_response(channel, bytes);
                }
                _ = tick.tick() => {
                    let _ = self.directory.try_send(Command::Tick(Instant::now().into_std()));
                }
                _ = heartbeat.tick() => self.heartbeat(),
                _ = redial.tick() => self.redial(),
            }
        }
        self.farewell().await;
    }

    fn publish(&mut self, body: Presence) {
        let message = PresenceMessage { incarnation: self.incarnation, body };
        match self.swarm.behaviour_mut().gossipsub.publish(self.topic.clone(), message.encode()) {
            Ok(_) => {}
            // Alone, or no node subscribed yet: nothing to tell anyone.
            Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {}
            Err(e) => debug!(error = %e, "presence publish failed"),
        }
    }

    /// Graceful shutdown: withdraw this node's records everywhere at once.
    async fn farewell(&mut self) {
        self.publish(Presence::Farewell { seq: self.report.seq });
        // Let the message go out.
        let _ = tokio::time::timeout(Duration::from_millis(300), async {
            loop {
                self.swarm.select_next_some().await;
            }
        })
        .await;
        info!("mesh stopped (farewell sent)");
    }

    fn dial_bootstrap(&mut self) {
        let local = *self.swarm.local_peer_id();
        for addr in self.config.bootstrap.clone() {
            if let Some(Protocol::P2p(peer)) = addr.iter().last() {
                if peer == local {
                    continue;
                }
                self.swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
            }
            if let Err(e) =
                self.swarm.dial(DialOpts::unknown_peer_id().address(addr.clone()).allocate_new_port().build())
            {
                warn!(%addr, error = %e, "cannot dial bootstrap node");
            }
        }
    }

    /// Dials a node heard of through gossip but not linked to, at the addresses its signed
    /// heartbeat lists. Kademlia alone left a late node linked to its bootstrap node only (its
    /// routing table learns the others' addresses but never connects), so a crash of a node
    /// reached it after the TTL instead of 3 heartbeats after the link closed, and its gossip
    /// took an extra hop.
    fn link_to(&mut self, origin: NodeKey, addresses: &[String]) {
        if self.connected.contains(&origin)
            || self.connected.len() >= MAX_LINKS
            || self.swarm.is_connected(&origin)
        {
            return;
        }
        let mut any = false;
        for addr in addresses.iter().take(8).filter_map(|a| a.parse::<Multiaddr>().ok()) {
            if !addr.iter().any(|p| matches!(p, Protocol::Ip4(ip) if ip.is_unspecified())) {
                self.swarm.behaviour_mut().kad.add_address(&origin, addr);
                any = true;
            }
        }
        let now = Instant::now();
        // At most one such dial per node per REDIAL, whatever its heartbeat rate.
        self.gossip_dials.retain(|_, at| now.saturating_duration_since(*at) < REDIAL);
        if any && !self.gossip_dials.contains_key(&origin) {
            self.gossip_dials.insert(origin, now);
            debug!(node = %origin, "dialing a node heard of through gossip");
            let _ = self.swarm.dial(fresh_port(origin));
        }
    }

    /// Bootstraps Kademlia (a lookup of this node's own key), which refreshes its routing table.
    fn refresh_kad(&mut self) {
        self.kad_refreshed = Some(Instant::now());
        if let Err(e) = self.swarm.behaviour_mut().kad.bootstrap() {
            debug!(error = %e, "kademlia bootstrap not started");
        }
    }

    /// Dials known nodes that are not connected (after a partition or a restart).
    fn redial(&mut self) {
        if self.connected.is_empty() {
            self.dial_bootstrap();
        } else if self.kad_refreshed.is_some_and(|at| at.elapsed() >= KAD_REFRESH) {
            self.refresh_kad();
        }
        let known: Vec<NodeKey> = self
            .swarm
            .behaviour_mut()
            .kad
            .kbuckets()
            .flat_map(|b| b.iter().map(|e| *e.node.key.preimage()).collect::<Vec<_>>())
            .collect();
        for node in known {
            if self.connected.len() >= MAX_LINKS {
                break;
            }
            if !self.swarm.is_connected(&node) {
                let _ = self.swarm.dial(fresh_port(node));
            }
        }
    }

    fn heartbeat(&mut self) {
        let now = Instant::now();
        let counters = self.report.counters;
        let (sps, rps) = match self.last_counters {
            Some((at, last)) => {
                let secs = now.saturating_duration_since(at).as_secs_f64().max(0.001);
                let signals = (counters.signals_local + counters.signals_forwarded)
                    .saturating_sub(last.signals_local + last.signals_forwarded);
                let requests = counters.requests.saturating_sub(last.requests);
                ((signals as f64 / secs) as u32, (requests as f64 / secs) as u32)
            }
            None => (0, 0),
        };
        self.last_counters = Some((now, counters));
        let mut links: Vec<LinkStatus> = self
            .connected
            .iter()
            .map(|n| LinkStatus { node: *n, rtt_us: self.rtt.get(n).map_or(0, |d| d.as_micros() as u32) })
            .collect();
        links.sort_by_key(|l| l.node);
        let mut addresses: Vec<String> = self.listen.iter().map(ToString::to_string).collect();
        addresses.extend(self.swarm.external_addresses().map(ToString::to_string));
        addresses.dedup();
        let status = NodeStatus {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            now_ms: unix_ms(),
            uptime_ms: now.saturating_duration_since(self.started).as_millis() as u64,
            public_url: self.config.public_url.clone().unwrap_or_default(),
            addresses,
            edge_peers: self.report.stats.peers as u32,
            topics: self.report.stats.topics as u32,
            signals_local: counters.signals_local,
            signals_forwarded: counters.signals_forwarded,
            signals_received: counters.signals_received,
            requests: counters.requests,
            errors: counters.errors,
            signals_per_second: sps,
            requests_per_second: rps,
            links,
            malformed_mesh_messages: self.malformed_total + counters.presence_rejected,
        };
        self.local_tx.send_replace(status.clone());
        self.publish(Presence::Heartbeat { seq: self.report.seq, status });
    }

    fn on_outbound(&mut self, message: Outbound) {
        match message {
            Outbound::Deltas(batch) => self.publish(Presence::Deltas(batch)),
            Outbound::Fetch(origin) => self.fetch(origin),
            Outbound::Report(report) => {
                self.report = report;
                self.update_synced();
            }
        }
    }

    fn fetch(&mut self, origin: NodeKey) {
        if self.fetching.contains_key(&origin) {
            return;
        }
        let id = self.swarm.behaviour_mut().snapshot.send_request(&origin, ());
        debug!(node = %origin, "fetching snapshot");
        self.fetching.insert(origin, id);
    }

    /// The first complete sync: connected to a node of the mesh and every known node synced.
    fn update_synced(&mut self) {
        if *self.synced_tx.borrow() {
            return;
        }
        if self.report.synced
            && self.report.origins > 0
            && !self.connected.is_empty()
            && self.fetching.is_empty()
        {
            self.synced_tx.send_replace(true);
            if !self.sync_logged {
                self.sync_logged = true;
                info!(
                    nodes = self.report.origins,
                    after_ms = self.started.elapsed().as_millis() as u64,
                    "presence synced with the mesh"
                );
            }
        }
    }

    /// Feeds libp2p-metrics.
    fn record(&self, event: &SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(e)) => self.p2p_metrics.record(e),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(e)) => self.p2p_metrics.record(e),
            SwarmEvent::Behaviour(BehaviourEvent::Kad(e)) => self.p2p_metrics.record(e),
            SwarmEvent::Behaviour(BehaviourEvent::Ping(e)) => self.p2p_metrics.record(e),
            _ => {}
        }
        self.p2p_metrics.record(event);
    }

    async fn send_presence(&mut self, input: PresenceInput) {
        let _ = self.directory.send(Command::Presence(Box::new(input), Instant::now().into_std())).await;
    }

    fn malformed(&mut self, from: NodeKey, what: &str, error: &dyn std::fmt::Display) {
        self.malformed_total += 1;
        self.metrics.malformed();
        let count = self.malformed.entry(from).or_default();
        *count += 1;
        debug!(node = %from, %error, "malformed {what} dropped");
        if *count == MAX_MALFORMED {
            warn!(node = %from, count = *count, "node keeps sending malformed mesh messages: disconnected");
            let _ = self.swarm.disconnect_peer_id(from);
        } else if *count > MAX_MALFORMED {
            let _ = self.swarm.disconnect_peer_id(from);
        }
    }

    async fn on_swarm(&mut self, event: SwarmEvent<BehaviourEvent>) {
        self.record(&event);
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message,
                ..
            })) => {
                // Strict validation: the source is the signer, i.e. the origin.
                let Some(origin) = message.source else {
                    self.malformed(propagation_source, "unsigned presence", &"no source");
                    return;
                };
                if origin == *self.swarm.local_peer_id() {
                    return;
                }
                match PresenceMessage::decode(&message.data) {
                    Ok(m) => {
                        let input = match m.body {
                            Presence::Deltas(batch) => {
                                PresenceInput::Deltas { origin, incarnation: m.incarnation, batch }
                            }
                            Presence::Heartbeat { seq, status } => {
                                self.link_to(origin, &status.addresses);
                                PresenceInput::Heartbeat { origin, incarnation: m.incarnation, seq, status }
                            }
                            Presence::Farewell { .. } => {
                                info!(node = %origin, "node left the mesh (farewell)");
                                PresenceInput::Farewell { origin, incarnation: m.incarnation }
                            }
                        };
                        self.send_presence(input).await;
                    }
                    Err(e) => self.malformed(propagation_source, "presence message", &e),
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Snapshot(request_response::Event::Message {
                peer,
                message,
                ..
            })) => match message {
                request_response::Message::Request { channel, .. } => {
                    let directory = self.directory.clone();
                    let responses = self.responses_tx.clone();
                    tokio::spawn(async move {
                        if let Ok(snapshot) = directory.snapshot().await {
                            let _ = responses.send((channel, snapshot.encode())).await;
                        }
                    });
                }
                request_response::Message::Response { response, .. } => {
                    self.fetching.remove(&peer);
                    let decoded = Snapshot::decode(&response);
                    self.metrics.snapshot_fetch(decoded.is_ok());
                    match decoded {
                        Ok(snapshot) => {
                            debug!(node = %peer, peers = snapshot.peers.len(), seq = snapshot.seq, "snapshot received");
                            self.send_presence(PresenceInput::Snapshot { origin: peer, snapshot }).await;
                        }
                        Err(e) => {
                            self.malformed(peer, "snapshot", &e);
                            self.send_presence(PresenceInput::SnapshotFailed { origin: peer }).await;
                        }
                    }
                }
            },
            SwarmEvent::Behaviour(BehaviourEvent::Snapshot(request_response::Event::OutboundFailure {
                peer,
                error,
                ..
            })) => {
                debug!(node = %peer, %error, "snapshot request failed");
                self.metrics.snapshot_fetch(false);
                self.fetching.remove(&peer);
                self.send_presence(PresenceInput::SnapshotFailed { origin: peer }).await;
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                if info.protocol_version != self.names.identify {
                    warn!(
                        node = %peer_id,
                        theirs = %info.protocol_version,
                        ours = %self.names.identify,
                        "node of another network or mesh version: disconnected"
                    );
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                    return;
                }
                for addr in info.listen_addrs {
                    if !addr.iter().any(|p| matches!(p, Protocol::Ip4(ip) if ip.is_unspecified())) {
                        self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                    }
                }
                if self.connected.insert(peer_id) {
                    info!(node = %peer_id, links = self.connected.len(), "mesh link up");
                    // Learn its presence now instead of waiting for its heartbeat.
                    self.fetch(peer_id);
                }
                if self.kad_refreshed.is_none() {
                    self.refresh_kad();
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::RoutingUpdated { peer, .. }))
                if !self.swarm.is_connected(&peer) && self.connected.len() < MAX_LINKS =>
            {
                let _ = self.swarm.dial(fresh_port(peer));
            }
            SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event { peer, result: Ok(rtt), .. })) => {
                self.rtt.insert(peer, rtt);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(list))) => {
                for (peer, addr) in list {
                    self.swarm.behaviour_mut().kad.add_address(&peer, addr);
                    if !self.swarm.is_connected(&peer) {
                        let _ = self.swarm.dial(fresh_port(peer));
                    }
                }
            }
            SwarmEvent::ConnectionEstablished { peer_id, endpoint, num_established, .. }
                if num_established.get() == 1 =>
            {
                let addr = match &endpoint {
                    ConnectedPoint::Dialer { address, .. } => address.clone(),
                    ConnectedPoint::Listener { send_back_addr, .. } => send_back_addr.clone(),
                };
                debug!(node = %peer_id, %addr, "connection established");
            }
            SwarmEvent::ConnectionClosed { peer_id, num_established: 0, cause, .. } => {
                self.rtt.remove(&peer_id);
                if self.connected.remove(&peer_id) {
                    info!(node = %peer_id, links = self.connected.len(), cause = ?cause.map(|c| c.to_string()), "mesh link down");
                    self.send_presence(PresenceInput::LinkDown { node: peer_id }).await;
                }
            }
            SwarmEvent::IncomingConnectionError { send_back_addr, error, .. } => {
                debug!(addr = %send_back_addr, %error, "incoming mesh connection refused");
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                debug!(node = ?peer_id, %error, "mesh dial failed");
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                let address = address.with_p2p(*self.swarm.local_peer_id()).unwrap_or_else(|a| a);
                if !self.listen.contains(&address) {
                    info!(addr = %address, "mesh listening");
                    self.listen.push(address);
                }
            }
            _ => {}
        }
    }
}
