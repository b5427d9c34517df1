//! Fuzz target: the node-to-node wire formats (`signal_mesh_node::mesh::wire`) on arbitrary
//! bytes from another node: presence gossip messages, snapshots, and the link stream's frames.
//!
//! Input: one byte choosing the format, then the bytes. Whatever decodes must encode again and
//! decode to the same value; decoding must never panic.

use bytes::BytesMut;
use signal_mesh_node::mesh::wire::{LinkFrame, PresenceMessage, Snapshot};

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let Some((&which, bytes)) = data.split_first() else { return };
        match which % 3 {
            0 => {
                if let Ok(m) = PresenceMessage::decode(bytes) {
                    assert_eq!(PresenceMessage::decode(&m.encode()).ok(), Some(m), "presence round trip");
                }
            }
            1 => {
                if let Ok(s) = Snapshot::decode(bytes) {
                    assert_eq!(Snapshot::decode(&s.encode()).ok(), Some(s), "snapshot round trip");
                }
            }
            _ => {
                // A stream: frames one after another until one is incomplete or refused.
                let mut buf = BytesMut::from(bytes);
                for _ in 0..1024 {
                    match LinkFrame::decode_from(&mut buf) {
                        Ok(Some(frame)) => {
                            let mut again = BytesMut::new();
                            frame.encode_into(&mut again);
                            let back = LinkFrame::decode_from(&mut again);
                            assert_eq!(back.ok().flatten(), Some(frame), "link frame round trip");
                            assert!(again.is_empty(), "a re-encoded link frame left bytes over");
                        }
                        Ok(None) | Err(_) => break,
                    }
                }
            }
        }
    });
}
