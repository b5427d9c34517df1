//! Raw protobuf types of the mesh protocol, generated from
//! `proto/signal_mesh/mesh/v1/mesh.proto` (checked in, like [`crate::wire`]). Only signal nodes
//! speak it, so it sits behind the `mesh` feature and stays out of the browser client. The node
//! parses these into its own validated types before anything else sees them.
#![allow(missing_docs, clippy::all, clippy::pedantic)]

include!("generated/signal_mesh.mesh.v1.rs");
