//! Signal Mesh edge client: the `SignalClient` compiled to WebAssembly.
//!
//! # Layout
//! - [`core`]: the sans-IO client (edge session and peer negotiation), tested natively.
//! - [`engine`]: the core behind a flat API of numbers, strings and bytes (`#[wasm_bindgen]` on
//!   wasm32), driven by the JavaScript facade in `js/`, which does all IO (WebSocket, timer,
//!   WebCrypto, `RTCPeerConnection`).
#![no_std]
#![forbid(unsafe_code)]

// `no_std` + `alloc`: on wasm32 std's panic machinery (which formats every panic message, with
// `core::fmt`) is replaced by the handler below, a trap. Natively, in tests and with the `std`
// feature, std is linked as usual (its panic handler; tests import its prelude).
extern crate alloc;
#[cfg(any(test, feature = "std", not(target_arch = "wasm32")))]
extern crate std;

pub mod core;

pub mod engine;

pub use signal_mesh_proto as proto;

/// The wasm allocator: `lol_alloc`'s first-fit, coalescing free list instead of std's dlmalloc,
/// which saves about 7 KB of wasm (3.4 KB gzipped) at the cost of O(free blocks) allocation; the
/// client's heap is small (frames, SDP strings, a few hundred sessions at most). `LockedAllocator`
/// is the safe wrapper (no `unsafe` here, unlike `AssumeSingleThreaded`).
#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: lol_alloc::LockedAllocator<lol_alloc::FreeListAllocator> =
    lol_alloc::LockedAllocator::new(lol_alloc::FreeListAllocator::new());

/// A panic in the wasm engine traps (a `RuntimeError: unreachable` in JavaScript): the message
/// and location are never formatted, which keeps `core::fmt` and every panic location string out
/// of the module. The engine has no panic it recovers from; the trap is what wasm-bindgen's std
/// build did too, after formatting.
#[cfg(all(target_arch = "wasm32", not(test), not(feature = "std")))]
#[panic_handler]
fn panic(_: &::core::panic::PanicInfo<'_>) -> ! {
    ::core::arch::wasm32::unreachable()
}
