//! The engine through its exported API, natively: a scripted node, the facade's side played by
//! the test, every output read back the way `readOutput` in `js/index.js` reads it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{string::String, vec, vec::Vec};

use bytes::Bytes;
use signal_mesh_proto::auth::{Identity, signed_message, verify};
use signal_mesh_proto::message::{Authenticate, Challenge, Welcome};
use signal_mesh_proto::{
    ClientMessage, Event as NodeEvent, Limits, NodeId, PeerId, RequestBody, RequestId, ResponseBody,
    ServerMessage, TopicId, decode_client, encode_server,
};

use super::WasmClient;
use super::out::read::{F, Reader, read};
use crate::core::signal::{Candidate, PeerMessage, PeerSignal};

struct T {
    e: WasmClient,
    id: Identity,
    now: f64,
    conn: u64,
    out: Vec<(u64, Vec<F>)>,
}

impl T {
    fn new(seed: u8) -> T {
        let id = Identity::from_seed([seed; 32]);
        let e = WasmClient::new(
            1000.0,
            b"ws://a/signal\nws://b/signal\n",
            id.peer_id().as_bytes(),
            &[seed; 8],
            0,
        );
        let mut t = T { e, id, now: 1000.0, conn: 0, out: vec![] };
        t.drain();
        t
    }

    fn drain(&mut self) {
        loop {
            let o = self.e.poll();
            if o.is_empty() {
                break;
            }
            let (kind, f) = read(&o);
            if kind == 0 {
                self.conn = f[0].n();
            }
            self.out.push((kind, f));
        }
    }

    /// The outputs of `kind` since the last call, removed.
    fn take(&mut self, kind: u64) -> Vec<Vec<F>> {
        self.drain();
        let (hit, rest) = core::mem::take(&mut self.out).into_iter().partition(|(k, _)| *k == kind);
        self.out = rest;
        hit.into_iter().map(|(_, f)| f).collect()
    }

    fn node_says(&mut self, msg: ServerMessage) {
        self.e.frame(self.now, self.conn as u32, &encode_server(msg));
        self.drain();
    }

    /// Client messages sent since the last call.
    fn sent(&mut self) -> Vec<ClientMessage> {
        self.take(2)
            .into_iter()
            .map(|f| {
                assert_eq!(f[0].n(), self.conn);
                decode_client(Bytes::from(f[1].b().to_vec()), 1 << 20).unwrap()
            })
            .collect()
    }

    fn requests(&mut self) -> Vec<(RequestId, RequestBody)> {
        self.sent()
            .into_iter()
            .filter_map(|m| match m {
                ClientMessage::Request { id, body } => Some((id, body)),
                _ => None,
            })
            .collect()
    }

    fn online(&mut self) {
        let challenge = Challenge {
            protocol_versions: vec![1],
            node_id: NodeId::new(vec![7; 32]).unwrap(),
            nonce: [3; 32],
        };
        self.node_says(ServerMessage::Challenge(challenge.clone()));
        let sign = self.take(3);
        assert_eq!(sign.len(), 1);
        assert_eq!(sign[0][0].n(), self.conn);
        assert_eq!(sign[0][1].b(), signed_message(&challenge.node_id, &challenge.nonce).as_slice());
        // Anything but 64 bytes is ignored.
        self.e.signed(self.now, self.conn as u32, &[1; 63]);
        assert!(self.sent().is_empty());
        self.e.signed(self.now, self.conn as u32, &self.id.sign(sign[0][1].b()));
        let [ClientMessage::Authenticate(Authenticate { peer_id, nonce, signature, .. })] = self.sent()[..]
        else {
            panic!("no Authenticate")
        };
        assert_eq!(verify(&peer_id, &challenge.node_id, &nonce, &signature), Ok(()));
        let welcome = Welcome { protocol_version: 1, peer_id, limits: Limits::default(), node_urls: vec![] };
        self.node_says(ServerMessage::Welcome(welcome));
    }

    fn error(&mut self) -> (String, String) {
        let e = self.e.error();
        let mut r = Reader(&e);
        let got = (r.text(), r.text());
        assert!(r.done());
        got
    }
}

fn topic(name: &str) -> TopicId {
    TopicId::from_name(name).unwrap()
}

#[test]
fn a_new_engine_opens_the_first_server_and_goes_online_through_the_handshake() {
    let mut t = T::new(1);
    assert_eq!(t.take(0), vec![vec![F::N(1), F::B(b"ws://a/signal".to_vec())]]);
    assert!(t.e.timeout() >= 1000.0, "a handshake deadline");
    t.online();
    assert_eq!(t.take(10), vec![vec![F::B(b"online".to_vec())]]);
    assert_eq!(t.take(11), vec![Vec::<F>::new()]);
    assert!(t.out.is_empty(), "{:?}", t.out);
}

#[test]
fn a_closed_socket_moves_on_to_the_next_server_when_the_timer_fires() {
    let mut t = T::new(2);
    t.take(0);
    // 0: the socket could not even be created.
    t.e.closed(t.now, 1, 0);
    t.drain();
    let at = t.e.timeout();
    assert!(at > t.now);
    t.e.tick(at);
    assert_eq!(t.take(0), vec![vec![F::N(2), F::B(b"ws://b/signal".to_vec())]]);
}

#[test]
fn operations_return_their_id_and_settle_through_outputs() {
    let mut t = T::new(3);
    t.online();
    t.drain();
    t.out.clear();
    let join = t.e.join(t.now, topic("x").as_bytes(), true);
    assert!(join >= 1.0);
    let [(id, RequestBody::Join { announce: true, .. })] = t.requests()[..] else { panic!("no join") };
    t.node_says(ServerMessage::Response { id, body: ResponseBody::Ok });
    assert_eq!(t.take(13), vec![vec![F::N(join as u64)]]);

    let a = PeerId::from_array([0xaa; 32]);
    let b = PeerId::from_array([0xbb; 32]);
    let lookup = t.e.lookup(t.now, topic("x").as_bytes(), -1.0);
    let [(id, RequestBody::Lookup { .. })] = t.requests()[..] else { panic!("no lookup") };
    t.node_says(ServerMessage::Response {
        id,
        body: ResponseBody::Lookup { peers: vec![a, b], next_cursor: None },
    });
    let done = t.take(14);
    assert_eq!(done[0][0].n(), lookup as u64);
    assert_eq!(done[0][1].b(), [[0xaa; 32], [0xbb; 32]].concat().as_slice());

    let leave = t.e.leave(t.now, topic("x").as_bytes());
    let [(id, RequestBody::Leave { .. })] = t.requests()[..] else { panic!("no leave") };
    t.node_says(ServerMessage::Response {
        id,
        body: ResponseBody::Error { code: signal_mesh_proto::ErrorCode::NotJoined, message: "no".into() },
    });
    let failed = t.take(16);
    assert_eq!(failed[0][0].n(), leave as u64);
    assert_eq!((failed[0][1].s(), failed[0][2].s()), ("NOT_JOINED", "no"));
}

#[test]
fn an_operation_that_fails_at_once_returns_0_and_its_error() {
    let mut t = T::new(4);
    assert_eq!(t.e.lookup(t.now, topic("x").as_bytes(), 0.0), 0.0);
    assert_eq!(t.error(), ("INVALID_ARGUMENT".into(), "lookup limit must be at least 1".into()));
    assert_eq!(t.e.join(t.now, &[1; 31], true), 0.0);
    assert_eq!(t.error().0, "INVALID_ARGUMENT");
    assert_eq!(t.e.connect(t.now, t.id.peer_id().as_bytes(), b"x"), 0.0);
    assert_eq!(t.error().0, "INVALID_ARGUMENT");
    // The error is handed out once.
    assert!(t.e.error().is_empty());
}

#[test]
fn node_events_become_peer_joined_and_peer_left() {
    let mut t = T::new(5);
    t.online();
    let p = PeerId::from_array([9; 32]);
    t.node_says(ServerMessage::Event(NodeEvent::PeerJoined { topic: topic("x"), peer: p }));
    t.node_says(ServerMessage::Event(NodeEvent::PeerLeft { topic: topic("x"), peer: p }));
    let want = vec![F::B(topic("x").as_bytes().to_vec()), F::B(vec![9; 32])];
    assert_eq!(t.take(17), vec![want.clone()]);
    assert_eq!(t.take(18), vec![want]);
}

/// The peer signals sent since the last call, parsed.
fn signals(t: &mut T) -> Vec<PeerMessage> {
    t.requests()
        .into_iter()
        .filter_map(|(_, b)| match b {
            RequestBody::Signal { payload, .. } => Some(PeerSignal::decode(payload).unwrap().message),
            _ => None,
        })
        .collect()
}

#[test]
fn a_connect_drives_the_facades_peer_connection_and_resolves_with_the_peer() {
    let mut t = T::new(6);
    t.online();
    t.drain();
    t.out.clear();
    let peer = PeerId::from_array([0xcc; 32]);
    let op = t.e.connect(t.now, peer.as_bytes(), b"chat");
    assert!(op >= 1.0);
    let create = t.take(4);
    let h = create[0][0].n();
    assert_eq!(&create[0][1..], &[F::N(1), F::B(b"chat".to_vec())]);
    assert_eq!(t.take(5), vec![vec![F::N(h), F::N(0)]]);
    t.e.report(t.now, h as u32, 0, 1.0, b"v=0 offer", b"", b"");
    let [PeerMessage::Offer { ref sdp, .. }] = signals(&mut t)[..] else { panic!("no offer") };
    assert_eq!(sdp, "v=0 offer");
    // A candidate without an m-line index (-1), then one with.
    t.e.report(t.now, h as u32, 1, -1.0, b"candidate:1", b"0", b"uf");
    t.e.report(t.now, h as u32, 1, 2.0, b"candidate:2", b"", b"");
    let sent = signals(&mut t);
    let want = |c: &str, mid: &str, i, u: &str| {
        PeerMessage::Candidate(Candidate {
            candidate: c.into(),
            sdp_mid: mid.into(),
            sdp_m_line_index: i,
            username_fragment: u.into(),
        })
    };
    assert_eq!(sent, vec![want("candidate:1", "0", None, "uf"), want("candidate:2", "", Some(2), "")]);
    assert_eq!(t.e.core().session_peer(crate::core::Handle::from_raw(h as u32)), Some(peer));
    // The peer answers (a signal relayed by the node) and trickles a candidate, in the session
    // our signals name.
    t.e.report(t.now, h as u32, 1, 0.0, b"candidate:3", b"", b"");
    let (_, body) = t.requests().pop().unwrap();
    let RequestBody::Signal { payload, .. } = body else { panic!("not a signal") };
    let session = PeerSignal::decode(payload).unwrap().session;
    let answer = PeerSignal { session, message: PeerMessage::Answer { sdp: "v=0 answer".into() } };
    t.node_says(ServerMessage::Event(NodeEvent::Signal { from: peer, payload: answer.encode() }));
    let remote = PeerSignal {
        session,
        message: PeerMessage::Candidate(Candidate {
            candidate: "candidate:9".into(),
            sdp_mid: "1".into(),
            sdp_m_line_index: Some(1),
            username_fragment: "r".into(),
        }),
    };
    t.node_says(ServerMessage::Event(NodeEvent::Signal { from: peer, payload: remote.encode() }));
    assert_eq!(t.take(7), vec![vec![F::N(h), F::B(b"v=0 answer".to_vec())]]);
    let cand =
        vec![F::N(h), F::B(b"candidate:9".to_vec()), F::B(b"1".to_vec()), F::N(2), F::B(b"r".to_vec())];
    assert_eq!(t.take(8), vec![cand]);
    t.e.report(t.now, h as u32, 2, 0.0, b"", b"", b"");
    assert_eq!(t.take(15), vec![vec![F::N(op as u64), F::N(h), F::B(vec![0xcc; 32])]]);
    // The application closes it: bye to the peer, the facade closes its RTCPeerConnection.
    t.e.close_connection(t.now, h as u32);
    assert!(matches!(signals(&mut t)[..], [PeerMessage::Bye { .. }]));
    assert_eq!(t.take(9), vec![vec![F::N(h)]]);
}

#[test]
fn an_incoming_offer_is_asked_about_then_opens_as_a_connection_event() {
    let mut t = T::new(7);
    t.online();
    let peer = PeerId::from_array([0x11; 32]);
    let offer = PeerSignal {
        session: 77,
        message: PeerMessage::Offer { sdp: "v=0 o".into(), label: "l".into(), ice_restart: false },
    };
    t.node_says(ServerMessage::Event(NodeEvent::Signal { from: peer, payload: offer.encode() }));
    let ask = t.take(19);
    let h = ask[0][0].n();
    assert_eq!(ask[0][1].b(), &[0x11; 32]);
    t.e.decide(t.now, h as u32, true);
    assert_eq!(t.take(4)[0][1..], [F::N(0), F::B(b"l".to_vec())]);
    assert_eq!(t.take(6), vec![vec![F::N(h), F::B(b"v=0 o".to_vec())]]);
    t.e.report(t.now, h as u32, 0, 0.0, b"v=0 a", b"", b"");
    assert!(matches!(&signals(&mut t)[..], [PeerMessage::Answer { sdp }] if sdp == "v=0 a"));
    t.e.report(t.now, h as u32, 2, 0.0, b"", b"", b"");
    assert_eq!(t.take(20), vec![vec![F::N(h), F::B(vec![0x11; 32])]]);
    // The data channel closes under it: the facade is told the connection closed.
    t.e.report(t.now, h as u32, 6, 0.0, b"gone", b"", b"");
    assert_eq!(t.take(21), vec![vec![F::N(h), F::B(vec![0x11; 32])]]);
}

#[test]
fn close_fails_what_is_pending_and_closes_the_socket() {
    let mut t = T::new(8);
    t.online();
    let op = t.e.join(t.now, topic("y").as_bytes(), false);
    t.drain();
    t.out.clear();
    t.e.close(t.now);
    assert_eq!(t.take(1), vec![vec![F::N(t.conn)]]);
    let failed = t.take(16);
    assert_eq!((failed[0][0].n(), failed[0][1].s()), (op as u64, "CLOSED"));
    assert_eq!(t.take(10), vec![vec![F::B(b"closed".to_vec())]]);
    assert_eq!(t.e.timeout(), -1.0);
}

#[test]
fn a_start_that_reaches_no_node_fails_with_timeout() {
    let id = Identity::from_seed([9; 32]);
    let mut t = T {
        e: WasmClient::new(0.0, b"ws://a/s", id.peer_id().as_bytes(), &[], 1500),
        id,
        now: 0.0,
        conn: 0,
        out: vec![],
    };
    t.drain();
    while t.take(12).is_empty() {
        let at = t.e.timeout();
        assert!((0.0..=1500.0).contains(&at), "a deadline within the connect timeout: {at}");
        t.e.closed(at, t.conn as u32, 1006);
        t.e.tick(at);
        t.drain();
    }
}

#[test]
fn every_error_code_string_reaches_the_facade() {
    // The node's ERROR frame, outside any request, is an `error` output with its code.
    let mut t = T::new(10);
    t.online();
    t.node_says(ServerMessage::Error {
        code: signal_mesh_proto::ErrorCode::RateLimited,
        message: "slow".into(),
    });
    let e = t.take(22);
    assert_eq!((e[0][0].s(), e[0][1].s()), ("RATE_LIMITED", "slow"));
    // A frame that is not protobuf is reported too.
    t.e.frame(t.now, t.conn as u32, &[0xff, 0xff]);
    assert_eq!(t.take(22)[0][0].s(), "BAD_REQUEST");
}
