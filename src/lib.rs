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

/// The wasm allocator: `lol_alloc`'s first-fit, coalescing free list instead of std's dlmalloc,
/// which saves about 7 KB of wasm (3.4 KB gzipped) at the cost of O(free blocks) allocation; the
/// client's heap is small (frames, SDP strings, a few hundred sessions at most). `LockedAllocator`
/// is the safe wrapper (no `unsafe` here, unlike `AssumeSingleThreaded`).
#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: lol_alloc::LockedAllocator<lol_alloc::FreeListAllocator> =
    lol_alloc::LockedAllocator::new(lol_alloc::FreeListAllocator::new());
