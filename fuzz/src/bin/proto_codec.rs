//! Fuzz target: the edge protocol codec (`signal_mesh_proto::codec`) on arbitrary frames.
//!
//! Input: one byte choosing the direction (even: a client frame as the node decodes it; odd: a
//! server frame as the client decodes it), then the frame. Checks, for every frame that decodes:
//! - it encodes again and decodes to the same message (nothing lost or invented);
//! - for server frames, the node's hand-written encoder for the hot frames (`Signal` events and
//!   `Lookup` pages) writes exactly the bytes prost writes for the same message;
//! - decoding never panics and respects the frame size limit.

use bytes::Bytes;
use prost::Message as _;
use signal_mesh_proto::{decode_client, decode_server, encode_client, encode_server};

/// The node's default frame limit (64 KiB), so the size check is exercised too.
const MAX: usize = 65_536;

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let Some((&which, frame)) = data.split_first() else { return };
        let bytes = Bytes::copy_from_slice(frame);
        if which % 2 == 0 {
            let Ok(msg) = decode_client(bytes, MAX) else { return };
            match decode_client(encode_client(msg.clone()), usize::MAX) {
                Ok(back) => assert_eq!(back, msg, "a client frame changed in a round trip"),
                Err(e) => panic!("a decoded client frame re-encodes to an undecodable one: {e}"),
            }
        } else {
            let Ok(msg) = decode_server(bytes, MAX) else { return };
            let fast = encode_server(msg.clone());
            let reference = msg.clone().into_wire().encode_to_vec();
            assert_eq!(fast.as_ref(), reference.as_slice(), "encode_server differs from prost for {msg:?}");
            match decode_server(fast, usize::MAX) {
                Ok(back) => assert_eq!(back, msg, "a server frame changed in a round trip"),
                Err(e) => panic!("a decoded server frame re-encodes to an undecodable one: {e}"),
            }
        }
    });
}
