//! Signal Mesh edge client: the `SignalClient` compiled to WebAssembly.
//!
//! # Layout
//! - [`core`]: the sans-IO client (edge session and peer negotiation), tested natively.
//! - `shell` (wasm32 only): the browser driver — WebSocket, timers, WebCrypto, `RTCPeerConnection`.
//! - `bindings` (wasm32 only): the only `#[wasm_bindgen]` code, used by the JavaScript facade in `js/`.
#![forbid(unsafe_code)]

pub mod core;

#[cfg(target_arch = "wasm32")]
mod bindings;
#[cfg(target_arch = "wasm32")]
pub mod shell;

pub use signal_mesh_proto as proto;
