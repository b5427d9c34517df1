//! Signal routing micro-benchmarks: what the node does per relayed signal, minus the sockets.
//!
//! `cargo bench -p signal-mesh-node --bench routing`
//!
//! - `session+directory`: the sender's session decodes and validates the frame, the directory
//!   encodes the event into the target's queue and the response into the sender's queue.
//! - `via_directory_task`: the same through the directory task (bounded channel, task wake-up),
//!   on a current-thread runtime: the message-passing hop every request takes in the node.

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use signal_mesh_node::directory::{self, Command, Directory, Outlet};
use signal_mesh_node::outbox::outbox;
use signal_mesh_node::session::{Action, Session, SessionConfig};
use signal_mesh_proto::auth::Identity;
use signal_mesh_proto::{
    ClientMessage, NodeId, PeerId, RequestBody, ServerMessage, encode_client, encode_server,
};

const PAYLOAD: usize = 1024;

fn authenticated_session(id: &Identity, now: Instant) -> Session {
    let mut config = SessionConfig::default();
    config.limits.requests_per_second = u32::MAX;
    config.limits.request_burst = u32::MAX;
    let node = NodeId::new(vec![1u8; 32]).unwrap_or_else(|_| unreachable!("32 bytes is a valid node id"));
    let mut s = Session::new(config, node, [7u8; 32], now);
    let ServerMessage::Challenge(ch) = s.challenge() else { unreachable!("challenge() returns a Challenge") };
    let auth = encode_client(ClientMessage::Authenticate(id.authenticate(&ch)));
    match s.handle_frame(auth, now) {
        Action::Authenticated(_) => s,
        other => unreachable!("authentication failed: {other:?}"),
    }
}

fn signal_frame(to: PeerId, id: u64) -> Bytes {
    encode_client(ClientMessage::Request {
        id,
        body: RequestBody::Signal {
            to,
            payload: Bytes::from(vec![0x5a; PAYLOAD]),
            ack: signal_mesh_proto::AckMode::Always,
        },
    })
}

fn routing(c: &mut Criterion) {
    let a = Identity::from_seed([1; 32]);
    let b = Identity::from_seed([2; 32]);
    let (pa, pb) = (a.peer_id(), b.peer_id());
    let now = Instant::now();
    let mut session = authenticated_session(&a, now);

    let mut d = Directory::new(64);
    let (txa, rxa) = outbox(1024);
    let (txb, rxb) = outbox(1024);
    d.register(pa, Outlet { conn: 1, queue: txa }, Bytes::from_static(b"w"));
    d.register(pb, Outlet { conn: 2, queue: txb }, Bytes::from_static(b"w"));
    while rxa.try_recv().is_some() {}
    while rxb.try_recv().is_some() {}

    let mut g = c.benchmark_group("signal_1k");
    g.throughput(Throughput::Elements(1));
    let frame = signal_frame(pb, 42);
    g.bench_function("session_decode_validate", |bch| bch.iter(|| session.handle_frame(frame.clone(), now)));
    g.bench_function("session+directory", |bch| {
        bch.iter(|| {
            if let Action::Request { id, op } = session.handle_frame(frame.clone(), now) {
                d.request(pa, 1, id, op);
            }
            let _ = rxb.try_recv();
            let _ = rxa.try_recv();
        })
    });
    let ok = ServerMessage::Response { id: 42, body: signal_mesh_proto::ResponseBody::Ok };
    g.bench_function("encode_response_ok", |bch| bch.iter(|| encode_server(ok.clone())));

    // Through the directory task: send the command, wait for the event in B's queue.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| unreachable!("a runtime builds: {e}"));
    let (handle, rxa2, rxb2) = rt.block_on(async {
        let mut d = Directory::new(64);
        let (txa, rxa) = outbox(1024);
        let (txb, rxb) = outbox(1024);
        d.register(pa, Outlet { conn: 1, queue: txa }, Bytes::from_static(b"w"));
        d.register(pb, Outlet { conn: 2, queue: txb }, Bytes::from_static(b"w"));
        let (handle, _task) = directory::spawn(d, 1024);
        (handle, rxa, rxb)
    });
    rt.block_on(async {
        let _ = rxa2.recv().await;
        let _ = rxb2.recv().await;
    });
    g.bench_function("via_directory_task", |bch| {
        bch.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for i in 0..iters {
                    let Action::Request { id, op } = session.handle_frame(frame.clone(), now) else {
                        return Duration::ZERO;
                    };
                    if handle.send(Command::Request { peer: pa, conn: 1, id: id + i, op }).await.is_err() {
                        return Duration::ZERO;
                    }
                    let _ = rxb2.recv().await;
                    let _ = rxa2.recv().await;
                }
                start.elapsed()
            })
        })
    });
    g.finish();
}

criterion_group!(benches, routing);
criterion_main!(benches);
