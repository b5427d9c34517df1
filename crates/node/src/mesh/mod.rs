//! The mesh: signal nodes federated over rust-libp2p, with no node in charge.
//!
//! # Layout
//! - [`wire`]: the mesh protocol's validated types and encodings (`mesh/v1/mesh.proto`).
//! - [`presence`]: the sans-IO presence state machines ([`presence::LocalLog`],
//!   [`presence::Replica`]); the directory owns them.
//! - [`links`]: signal forwarding over one ordered libp2p stream per direction of a link.
//! - `swarm`: the libp2p `Swarm` (TCP+Noise+Yamux, QUIC, identify, ping, Kademlia, gossipsub,
//!   request-response snapshots, streams, optional mDNS and allow list) and the one task that
//!   owns it. It only moves bytes: it parses what arrives and hands it to the directory, and
//!   publishes what the directory hands out.
//!
//! # Data flow
//! ```text
//! directory --Outbound::Deltas/Fetch/Report--> swarm task --gossipsub/request-response--> other nodes
//! other nodes --gossip/snapshots--> swarm task --Command::Presence--> directory (Replica)
//! directory --Links::forward--> link task --stream /signal/1--> other node's serve_inbound
//!           <--------------------- result (Ack / error) to the sender's queue ----
//! ```

pub mod links;
pub mod presence;
mod swarm;
pub mod wire;

use std::time::Duration;

use libp2p::{Multiaddr, PeerId as NodeKey, StreamProtocol};

pub use swarm::{Mesh, MeshError, MeshHandle, MeshStatus};

/// The version of the mesh protocol; part of every protocol id, so incompatible versions never
/// mix.
pub const MESH_VERSION: u32 = 1;

/// Mesh settings (from [`crate::Config`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshConfig {
    /// The network name: the namespace of every protocol id and gossip topic.
    pub network: String,
    /// libp2p listen addresses.
    pub listen: Vec<Multiaddr>,
    /// Nodes to join at start (with or without `/p2p/<id>`).
    pub bootstrap: Vec<Multiaddr>,
    /// If not empty, the only nodes allowed to connect (a private mesh).
    pub allow_nodes: Vec<NodeKey>,
    /// Discover nodes on the LAN with mDNS.
    pub mdns: bool,
    /// A node not heard from for this long is dropped with its peers.
    pub presence_ttl: Duration,
    /// How often this node publishes its heartbeat.
    pub heartbeat: Duration,
    /// How long a forwarded signal may take to be confirmed before `PEER_UNREACHABLE`.
    pub forward_timeout: Duration,
    /// The edge URL clients should use for this node.
    pub public_url: Option<String>,
    /// Most peers accepted from one other node.
    pub max_peers_per_origin: usize,
}

impl MeshConfig {
    /// The protocol ids and topic names derived from the network and version.
    pub fn names(&self) -> Names {
        let n = &self.network;
        let v = MESH_VERSION;
        Names {
            identify: format!("/signal-mesh/{n}/{v}"),
            kad: protocol(format!("/signal-mesh/{n}/kad/{v}")),
            gossip_prefix: format!("/signal-mesh/{n}/meshsub/{v}"),
            presence_topic: format!("signal-mesh/{n}/presence/{v}"),
            snapshot: protocol(format!("/signal-mesh/{n}/snapshot/{v}")),
            signal: protocol(format!("/signal-mesh/{n}/signal/{v}")),
        }
    }
}

fn protocol(s: String) -> StreamProtocol {
    match StreamProtocol::try_from_owned(s) {
        Ok(p) => p,
        // Invariant: the network name is validated (config::parse_network), so the id starts with '/'.
        Err(_) => StreamProtocol::new("/signal-mesh/invalid"),
    }
}

/// Protocol ids and gossip topics of one network and mesh version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    /// identify's protocol version string; nodes with another are disconnected.
    pub identify: String,
    /// Kademlia.
    pub kad: StreamProtocol,
    /// gossipsub's protocol prefix.
    pub gossip_prefix: String,
    /// The presence gossip topic.
    pub presence_topic: String,
    /// Snapshot request-response.
    pub snapshot: StreamProtocol,
    /// Signal forwarding streams.
    pub signal: StreamProtocol,
}
