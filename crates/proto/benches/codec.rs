//! Codec micro-benchmarks: the frames on the node's hot paths.
//!
//! `cargo bench -p signal-mesh-proto --bench codec`
//!
//! A relayed signal costs the node one `decode_client` of a `Signal` request and one
//! `encode_server` of the `Signal` event (plus one of the `Ok` response); presence costs
//! `decode_client` of `Join` and `encode_server` of events and lookup pages.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use signal_mesh_proto::{
    ClientMessage, Event, PeerId, RequestBody, ResponseBody, ServerMessage, TopicId, decode_client,
    decode_server, encode_client, encode_server,
};

const MAX: usize = 65_536;

fn peer(i: u32) -> PeerId {
    let mut b = [7u8; 32];
    b[..4].copy_from_slice(&i.to_be_bytes());
    PeerId::from_array(b)
}

fn signal_request(size: usize) -> ClientMessage {
    ClientMessage::Request {
        id: 123_456,
        body: RequestBody::Signal {
            to: peer(1),
            payload: Bytes::from(vec![0x5a; size]),
            ack: signal_mesh_proto::AckMode::Always,
        },
    }
}

fn signal_event(size: usize) -> ServerMessage {
    ServerMessage::Event(Event::Signal { from: peer(2), payload: Bytes::from(vec![0x5a; size]) })
}

fn lookup_page(n: u32) -> ServerMessage {
    ServerMessage::Response {
        id: 9,
        body: ResponseBody::Lookup { peers: (0..n).map(peer).collect(), next_cursor: Some(peer(n)) },
    }
}

fn codec(c: &mut Criterion) {
    let topic = TopicId::from_name("bench-room").unwrap_or_else(|_| TopicId::from_array([1; 32]));

    let mut g = c.benchmark_group("signal");
    for size in [64usize, 1024, 16 * 1024] {
        g.throughput(Throughput::Bytes(size as u64));
        let req = signal_request(size);
        let req_bytes = encode_client(req.clone());
        g.bench_function(format!("decode_client/{size}"), |b| {
            b.iter(|| decode_client(black_box(req_bytes.clone()), MAX))
        });
        g.bench_function(format!("encode_client/{size}"), |b| {
            b.iter(|| encode_client(black_box(req.clone())))
        });
        let ev = signal_event(size);
        let ev_bytes = encode_server(ev.clone());
        g.bench_function(format!("encode_server_event/{size}"), |b| {
            b.iter(|| encode_server(black_box(ev.clone())))
        });
        g.bench_function(format!("decode_server_event/{size}"), |b| {
            b.iter(|| decode_server(black_box(ev_bytes.clone()), MAX))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("control");
    let ok = ServerMessage::Response { id: 77, body: ResponseBody::Ok };
    g.bench_function("encode_server_ok", |b| b.iter(|| encode_server(black_box(ok.clone()))));
    let join =
        encode_client(ClientMessage::Request { id: 5, body: RequestBody::Join { topic, announce: true } });
    g.bench_function("decode_client_join", |b| b.iter(|| decode_client(black_box(join.clone()), MAX)));
    let joined = ServerMessage::Event(Event::PeerJoined { topic, peer: peer(3) });
    g.bench_function("encode_server_peer_joined", |b| b.iter(|| encode_server(black_box(joined.clone()))));
    let ping = encode_client(ClientMessage::Ping(42));
    g.bench_function("decode_client_ping", |b| b.iter(|| decode_client(black_box(ping.clone()), MAX)));
    g.finish();

    let mut g = c.benchmark_group("lookup");
    for n in [10u32, 256] {
        let page = lookup_page(n);
        let bytes = encode_server(page.clone());
        g.bench_function(format!("encode_server/{n}"), |b| b.iter(|| encode_server(black_box(page.clone()))));
        g.bench_function(format!("decode_server/{n}"), |b| {
            b.iter(|| decode_server(black_box(bytes.clone()), MAX))
        });
    }
    g.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
