//! Raw protobuf types generated from `proto/signal_mesh/peer/v1/peer.proto`: the peer-to-peer
//! payload that edge clients put in a signal (SDP offer/answer, ICE candidates, reject, bye).
//! Nodes never parse it; the edge client maps it to its own domain types.
#![allow(missing_docs, clippy::all, clippy::pedantic)]

include!("generated/signal_mesh.peer.v1.rs");
