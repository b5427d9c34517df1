//! Signal Mesh wire protocol, shared by the edge client (native and wasm), the node and the tests.
//!
//! # Layout
//! - [`wire`]: the prost types generated from `proto/signal_mesh/edge/v1/edge.proto` (the source of
//!   truth for the wire format). Kept apart from the domain types so that prost never leaks into an
//!   API: code outside this crate speaks [`ClientMessage`] and [`ServerMessage`].
//! - [`ids`]: validated identifiers ([`PeerId`], [`TopicId`], [`NodeId`]).
//! - [`error`]: [`ErrorCode`], the stable codes that go on the wire.
//! - [`limits`]: [`Limits`] a node enforces and announces in its `Welcome`.
//! - [`message`]: the domain messages, parsed from the wire ("parse, don't validate").
//! - [`codec`]: one frame <-> one message, with size limits and typed decode errors.
//! - [`auth`]: the challenge a client signs to prove it owns its peer id.
//! - [`peer_wire`]: the prost types of the peer-to-peer signal payload (`peer/v1/peer.proto`),
//!   read only by edge clients.
//! - `mesh_wire` (feature `mesh`): the prost types of the node-to-node protocol
//!   (`mesh/v1/mesh.proto`), read only by signal nodes.
//!
//! No tokio and no web-sys here: this crate builds for `wasm32-unknown-unknown` as well, and
//! without its default `std` feature it is `no_std` + `alloc` (the browser client builds it so).
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod auth;
pub mod codec;
pub mod error;
pub mod ids;
pub mod limits;
#[cfg(feature = "mesh")]
pub mod mesh_wire;
pub mod message;
pub mod peer_wire;
pub mod wire;

pub use codec::{DecodeError, decode_client, decode_server, encode_client, encode_server};
pub use error::ErrorCode;
pub use ids::{InvalidId, NodeId, PeerId, TopicId, TopicNameTooLong};
pub use limits::Limits;
pub use message::{
    AckMode, Challenge, ClientMessage, Event, RequestBody, RequestId, ResponseBody, ServerMessage, Welcome,
};

/// The edge protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;
