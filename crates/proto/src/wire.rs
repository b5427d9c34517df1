//! Raw protobuf types generated from `proto/signal_mesh/edge/v1/edge.proto`.
//!
//! The generated file is checked in so that building needs neither `protoc` nor a build script;
//! `tests/generated.rs` regenerates it with `protox` + `prost-build` and fails when it is stale
//! (`SIGNAL_MESH_REGENERATE=1 cargo test -p signal-mesh-proto --test generated` rewrites it).
//! Prefer the domain types in [`crate::message`]; these exist for the codec and for tests that
//! must craft malformed frames.
#![allow(missing_docs, clippy::all, clippy::pedantic)]

include!("generated/signal_mesh.edge.v1.rs");
