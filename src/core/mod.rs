//! The sans-IO client core: everything the client decides, nothing it does.
//!
//! Like `str0m` and `quinn-proto`: inputs come in with the current time (`handle_*`, `rtc_*`,
//! application calls), outputs come out of [`Client::poll_output`] (socket actions, signing,
//! WebRTC commands, events), and [`Client::poll_timeout`] says when to call
//! [`Client::handle_timeout`]. The core never reads a clock, never does IO and never blocks, so
//! all of it is tested natively with simulated time (`tests.rs`).
//!
//! # Layout
//! - [`client`]: the edge session (handshake, requests, keepalive, reconnect and failover, re-join).
//! - [`peers`]: [`peers::Peers`], which owns every peer session and its negotiation (glare, perfect
//!   negotiation for renegotiation, reject, ICE restart, bye); the client routes its outputs.
//! - [`pacer`]: requests paced by the node's announced token bucket.
//! - [`servers`]: the failover list (configured node URLs, then those nodes announce).
//! - [`signal`]: the peer-to-peer payload (`peer/v1/peer.proto`) as domain types.
//! - [`backoff`]: reconnect delays and the seeded random source.
//! - [`error`]: [`ClientError`] and its stable [`Code`]s.

pub mod backoff;
pub mod client;
pub mod error;
pub mod pacer;
pub mod peers;
pub mod servers;
pub mod signal;
pub mod vecmap;

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests;

pub use client::{Client, ClientState, Config, ConnId, Event, OpResult, Output, RtcCommand};
pub use error::{ClientError, Code};
pub use peers::{Handle, SdpKind};
pub use signal::Candidate;

/// Time in milliseconds since an arbitrary origin chosen by the shell.
pub type Millis = u64;

/// Identifies one application operation (join, leave, lookup, connect).
pub type OpId = u64;
