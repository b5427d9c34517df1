//! Writes the starting corpus of every fuzz target into `DIR/<target>/` (run by
//! `scripts/fuzz.sh`): well-formed inputs the fuzzer mutates from, so it starts past the
//! framing and the protobuf envelope instead of discovering them from zero bytes.
//!
//! `cargo run --release --bin seeds -- DIR`

use std::fs;
use std::path::Path;

use bytes::{Bytes, BytesMut};
use signal_mesh_node::mesh::wire::{
    Delta, DeltaBatch, ForwardFrame, LinkFrame, NodeStatus, PeerRecord, Presence, PresenceMessage,
    ResultFrame, Snapshot,
};
use signal_mesh_proto::{
    AckMode, ClientMessage, ErrorCode, Event, PeerId, RequestBody, ResponseBody, ServerMessage, TopicId,
    encode_client, encode_server,
};
use signal_mesh_ws::differential::{Rng, stream};

fn write(dir: &Path, target: &str, name: String, data: &[u8]) -> std::io::Result<()> {
    let dir = dir.join(target);
    fs::create_dir_all(&dir)?;
    fs::write(dir.join(name), data)
}

fn with_prefix(prefix: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![prefix];
    v.extend_from_slice(body);
    v
}

fn main() -> std::io::Result<()> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "fuzz/seeds".into());
    let dir = Path::new(&dir);
    let peer = PeerId::from_array([3; 32]);
    let topic = TopicId::from_array([4; 32]);

    // ws_decoder: streams from the differential test's generator (kept small: AFL prefers it).
    let mut rng = Rng::new(0x5eed);
    let mut written = 0;
    while written < 32 {
        let s = stream(&mut rng);
        if s.len() <= 4096 {
            write(dir, "ws_decoder", format!("stream-{written}"), &with_prefix(written as u8, &s))?;
            written += 1;
        }
    }

    // proto_codec: every client and server message kind.
    let client = [
        ClientMessage::Request { id: 1, body: RequestBody::Join { topic, announce: true } },
        ClientMessage::Request { id: 2, body: RequestBody::Leave { topic } },
        ClientMessage::Request { id: 3, body: RequestBody::Lookup { topic, limit: 10, cursor: Some(peer) } },
        ClientMessage::Request {
            id: 4,
            body: RequestBody::Signal { to: peer, payload: Bytes::from_static(b"sdp"), ack: AckMode::Always },
        },
        ClientMessage::Request {
            id: 5,
            body: RequestBody::Signal {
                to: peer,
                payload: Bytes::from_static(b"ice"),
                ack: AckMode::FailuresOnly,
            },
        },
        ClientMessage::Ping(9),
        ClientMessage::Pong(9),
    ];
    for (i, m) in client.into_iter().enumerate() {
        write(dir, "proto_codec", format!("client-{i}"), &with_prefix(0, &encode_client(m)))?;
    }
    let server = [
        ServerMessage::Event(Event::Signal { from: peer, payload: Bytes::from_static(b"answer") }),
        ServerMessage::Event(Event::PeerJoined { topic, peer }),
        ServerMessage::Event(Event::PeerLeft { topic, peer }),
        ServerMessage::Response {
            id: 5,
            body: ResponseBody::Lookup { peers: vec![peer], next_cursor: Some(peer) },
        },
        ServerMessage::Response { id: 6, body: ResponseBody::Ok },
        ServerMessage::Response {
            id: 7,
            body: ResponseBody::Error { code: ErrorCode::PeerNotFound, message: "gone".into() },
        },
        ServerMessage::Error { code: ErrorCode::RateLimited, message: "slow down".into() },
        ServerMessage::Pong(3),
    ];
    for (i, m) in server.into_iter().enumerate() {
        write(dir, "proto_codec", format!("server-{i}"), &with_prefix(1, &encode_server(m)))?;
    }

    // mesh_wire: a presence message of each kind, a snapshot, a link stream.
    let deltas = DeltaBatch {
        first_seq: 1,
        deltas: vec![
            Delta::Up { peer, since_ms: 5 },
            Delta::Announce { peer, topic },
            Delta::Withdraw { peer, topic },
            Delta::Down { peer },
        ],
    };
    let presence = [
        Presence::Deltas(deltas),
        Presence::Heartbeat {
            seq: 4,
            status: NodeStatus { version: "0.1.0".into(), ..NodeStatus::default() },
        },
        Presence::Farewell { seq: 4 },
    ];
    for (i, body) in presence.into_iter().enumerate() {
        let m = PresenceMessage { incarnation: 1, body };
        write(dir, "mesh_wire", format!("presence-{i}"), &with_prefix(0, &m.encode()))?;
        write(
            dir,
            "node_core",
            format!("gossip-{i}"),
            &[&[8, 0, 0][..], &with_prefix(0, &m.encode())[1..]].concat(),
        )?;
    }
    let snapshot = Snapshot {
        incarnation: 1,
        seq: 4,
        peers: vec![PeerRecord { peer, since_ms: 5, topics: vec![topic] }],
    };
    write(dir, "mesh_wire", "snapshot".into(), &with_prefix(1, &snapshot.encode()))?;
    let mut link = BytesMut::new();
    LinkFrame::Forward(ForwardFrame { seq: 1, from: peer, to: peer, payload: Bytes::from_static(b"offer") })
        .encode_into(&mut link);
    LinkFrame::Result(ResultFrame { seq: 1, error: None }).encode_into(&mut link);
    LinkFrame::Result(ResultFrame { seq: 2, error: Some(ErrorCode::PeerBusy) }).encode_into(&mut link);
    write(dir, "mesh_wire", "link".into(), &with_prefix(2, &link))?;

    // node_core: scripts (op, client, args...; see node_core.rs `step`).
    let scripts: [&[u8]; 4] = [
        // join (announce) by 0 and 1, lookup by 2, signal 0 -> 1, leave, time passes
        &[1, 0, 0, 0, 1, 1, 0, 0, 3, 2, 0, 0, 0, 4, 0, 1, 8, 2, 0, 0, 5, 0, 50],
        // a remote origin's deltas and snapshot, then lookups and a signal to a remote peer
        &[7, 0, 0, 1, 0, 0, 3, 3, 0, 5, 2, 3, 0, 7, 0, 1, 0, 3, 2, 2, 3, 10, 1, 0, 3, 1, 0, 5, 0, 4, 0, 3, 4],
        // client 1 pauses, client 0 floods it with signals
        &[
            10, 1, 3, 4, 0, 1, 255, 4, 0, 1, 255, 4, 0, 1, 255, 4, 0, 1, 255, 4, 0, 1, 255, 4, 0, 1, 255, 5,
            0, 255,
        ],
        // reconnects, a raw frame, a ping, a text frame, an idle timeout
        &[6, 1, 0, 2, 4, 8, 1, 16, 1, 9, 0, 7, 10, 0, 0, 5, 0, 255, 5, 0, 255, 5, 0, 255],
    ];
    for (i, s) in scripts.iter().enumerate() {
        write(dir, "node_core", format!("script-{i}"), s)?;
    }
    println!("seeds written to {}", dir.display());
    Ok(())
}
