//! Signal Mesh edge client (the `SignalClient` compiled to WebAssembly).
//!
//! The real client arrives with the SignalClient issue; for now the crate re-exports the protocol
//! types the node's tests share with it.
#![forbid(unsafe_code)]

pub use signal_mesh_proto as proto;
