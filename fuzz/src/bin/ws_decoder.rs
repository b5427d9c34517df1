//! Fuzz target: the node's WebSocket frame decoder (`signal-mesh-ws`) against tungstenite, an
//! independent RFC 6455 implementation, on arbitrary client byte streams.
//!
//! Input: one byte that seeds how the stream is cut into reads, then the stream. Any
//! disagreement (different messages, or refusing at a different frame) and any panic in either
//! decoder is a finding. Seeds come from the random stream generator the differential property
//! test uses (`cargo run --bin seeds`).

use signal_mesh_ws::differential::{Rng, compare};

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let Some((&seed, stream)) = data.split_first() else { return };
        let mut rng = Rng::new(u64::from(seed));
        if let Err((ours, theirs)) = compare(stream, || rng.next_u64()) {
            panic!("the decoder disagrees with tungstenite\n ours:   {ours:?}\n theirs: {theirs:?}");
        }
    });
}
