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

use super::Engine;
use super::out::IDLE;
use super::out::read::{Out, read};
use crate::core::signal::{Candidate, PeerMessage, PeerSignal};

struct T {
    e: Engine,
    id: Identity,
    now: f64,
    conn: u64,
    out: Vec<Out>,
    /// The timer the last drain asked for (`Date.now()` time), if any.
    timer: Option<f64>,
}

impl T {
    fn new(seed: u8) -> T {
        let id = Identity::from_seed([seed; 32]);
        let e = Engine::new(1000.0, &config(&id, seed, "ws://a/signal\nws://b/signal\n"), 0);
        let mut t = T { e, id, now: 1000.0, conn: 0, out: vec![], timer: None };
        t.drain();
        t
    }

    fn drain(&mut self) {
        loop {
            let o = read(&self.e.poll());
            match o.kind {
                IDLE => {
                    self.timer = o.n[0].checked_sub(1).map(|t| t as f64);
                    break;
                }
                0 => self.conn = o.n[0],
                _ => {}
            }
            self.out.push(o);
        }
    }

    /// The outputs of `kind` since the last call, removed.
    fn take(&mut self, kind: u64) -> Vec<Out> {
        self.drain();
        let (hit, rest) = core::mem::take(&mut self.out).into_iter().partition(|o| o.kind == kind);
        self.out = rest;
        hit
    }

    fn node_says(&mut self, msg: ServerMessage) {
        self.e.frame(self.now, self.conn as u32, &encode_server(msg));
        self.drain();
    }

    /// Client messages sent since the last call.
    fn sent(&mut self) -> Vec<ClientMessage> {
        self.take(2)
            .into_iter()
            .map(|o| {
                assert_eq!(o.n[0], self.conn);
                decode_client(Bytes::from(o.b[0].clone()), 1 << 20).unwrap()
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
        assert_eq!(sign[0].n[0], self.conn);
        assert_eq!(sign[0].b[0], signed_message(&challenge.node_id, &challenge.nonce));
        // Anything but 64 bytes is ignored.
        self.e.signed(self.now, self.conn as u32, &[1; 63]);
        assert!(self.sent().is_empty());
        self.e.signed(self.now, self.conn as u32, &self.id.sign(&sign[0].b[0]));
        let [ClientMessage::Authenticate(Authenticate { peer_id, nonce, signature, .. })] = self.sent()[..]
        else {
            panic!("no Authenticate")
        };
        assert_eq!(verify(&peer_id, &challenge.node_id, &nonce, &signature), Ok(()));
        let welcome = Welcome { protocol_version: 1, peer_id, limits: Limits::default(), node_urls: vec![] };
        self.node_says(ServerMessage::Welcome(welcome));
    }

    /// The failure of the operation call that just returned 0.
    fn failure(&mut self) -> (String, String) {
        let f = self.take(16);
        assert_eq!((f.len(), f[0].n[0]), (1, 0));
        (f[0].s(0).into(), f[0].s(1).into())
    }
}

/// An output with numbers `n` and byte strings `b` (the rest 0 / empty).
fn out(kind: u64, n: &[u64], b: &[&[u8]]) -> Out {
    Out {
        kind,
        n: core::array::from_fn(|i| n.get(i).copied().unwrap_or(0)),
        b: core::array::from_fn(|i| b.get(i).map(|b| b.to_vec()).unwrap_or_default()),
    }
}

/// `report`'s texts: UTF-8, separated by 0 bytes.
fn texts(a: &str, b: &str, c: &str) -> Vec<u8> {
    [a, b, c].join("\0").into_bytes()
}

/// The constructor's `config`: key, 8 bytes of seed, the server list.
fn config(id: &Identity, seed: u8, servers: &str) -> Vec<u8> {
    [id.peer_id().as_bytes().as_slice(), &[seed; 8], servers.as_bytes()].concat()
}

fn topic(name: &str) -> TopicId {
    TopicId::from_name(name).unwrap()
}

#[test]
fn a_new_engine_opens_the_first_server_and_goes_online_through_the_handshake() {
    let mut t = T::new(1);
    assert_eq!(t.take(0), vec![out(0, &[1], &[b"ws://a/signal"])]);
    assert!(t.timer.is_some_and(|at| at >= 1000.0), "a handshake deadline");
    t.online();
    assert_eq!(t.take(10), vec![out(10, &[], &[b"online"])]);
    assert_eq!(t.take(11), vec![out(11, &[], &[])]);
    assert!(t.out.is_empty(), "{:?}", t.out);
}

#[test]
fn a_closed_socket_moves_on_to_the_next_server_when_the_timer_fires() {
    let mut t = T::new(2);
    t.take(0);
    // 0: the socket could not even be created.
    t.e.closed(t.now, 1, 0);
    t.drain();
    let at = t.timer.unwrap();
    assert!(at > t.now);
    t.e.tick(at);
    assert_eq!(t.take(0), vec![out(0, &[2], &[b"ws://b/signal"])]);
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
    assert_eq!(t.take(13), vec![out(13, &[join as u64], &[])]);

    let a = PeerId::from_array([0xaa; 32]);
    let b = PeerId::from_array([0xbb; 32]);
    let lookup = t.e.lookup(t.now, topic("x").as_bytes(), -1.0);
    let [(id, RequestBody::Lookup { .. })] = t.requests()[..] else { panic!("no lookup") };
    t.node_says(ServerMessage::Response {
        id,
        body: ResponseBody::Lookup { peers: vec![a, b], next_cursor: None },
    });
    assert_eq!(t.take(14), vec![out(14, &[lookup as u64], &[&[[0xaa; 32], [0xbb; 32]].concat()])]);

    let leave = t.e.leave(t.now, topic("x").as_bytes());
    let [(id, RequestBody::Leave { .. })] = t.requests()[..] else { panic!("no leave") };
    t.node_says(ServerMessage::Response {
        id,
        body: ResponseBody::Error { code: signal_mesh_proto::ErrorCode::NotJoined, message: "no".into() },
    });
    assert_eq!(t.take(16), vec![out(16, &[leave as u64], &[b"NOT_JOINED", b"no"])]);
}

#[test]
fn an_operation_that_fails_at_once_returns_0_and_its_failure_is_the_next_output() {
    let mut t = T::new(4);
    t.drain();
    assert_eq!(t.e.lookup(t.now, topic("x").as_bytes(), 0.0), 0.0);
    assert_eq!(t.failure(), ("INVALID_ARGUMENT".into(), "lookup limit must be at least 1".into()));
    assert_eq!(t.e.join(t.now, &[1; 31], true), 0.0);
    assert_eq!(t.failure().0, "INVALID_ARGUMENT");
    assert_eq!(t.e.connect(t.now, &[t.id.peer_id().as_bytes().as_slice(), b"x"].concat()), 0.0);
    // Before any other output.
    assert_eq!(read(&t.e.poll()).kind, 16);
    // Reported once.
    assert!(t.take(16).is_empty());
}

#[test]
fn node_events_become_peer_joined_and_peer_left() {
    let mut t = T::new(5);
    t.online();
    let p = PeerId::from_array([9; 32]);
    t.node_says(ServerMessage::Event(NodeEvent::PeerJoined { topic: topic("x"), peer: p }));
    t.node_says(ServerMessage::Event(NodeEvent::PeerLeft { topic: topic("x"), peer: p }));
    let x = topic("x");
    let ids: [&[u8]; 2] = [x.as_bytes(), &[9; 32]];
    assert_eq!(t.take(17), vec![out(17, &[], &ids)]);
    assert_eq!(t.take(18), vec![out(18, &[], &ids)]);
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
    let op = t.e.connect(t.now, &[peer.as_bytes().as_slice(), b"chat"].concat());
    assert!(op >= 1.0);
    let create = t.take(4);
    let h = create[0].n[0];
    assert_eq!(create, vec![out(4, &[h, 1], &[b"chat"])]);
    assert_eq!(t.take(5), vec![out(5, &[h, 0], &[])]);
    t.e.report(t.now, h as u32, 0, 1.0, &texts("v=0 offer", "", ""));
    let [PeerMessage::Offer { ref sdp, .. }] = signals(&mut t)[..] else { panic!("no offer") };
    assert_eq!(sdp, "v=0 offer");
    // A candidate without an m-line index (-1), then one with.
    t.e.report(t.now, h as u32, 1, -1.0, &texts("candidate:1", "0", "uf"));
    t.e.report(t.now, h as u32, 1, 2.0, &texts("candidate:2", "", ""));
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
    t.e.report(t.now, h as u32, 1, 0.0, &texts("candidate:3", "", ""));
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
    assert_eq!(t.take(7), vec![out(7, &[h], &[b"v=0 answer"])]);
    assert_eq!(t.take(8), vec![out(8, &[h, 2], &[b"candidate:9", b"1", b"r"])]);
    t.e.report(t.now, h as u32, 2, 0.0, &texts("", "", ""));
    assert_eq!(t.take(15), vec![out(15, &[op as u64, h], &[&[0xcc; 32]])]);
    // The application closes it: bye to the peer, the facade closes its RTCPeerConnection.
    t.e.close_connection(t.now, h as u32);
    assert!(matches!(signals(&mut t)[..], [PeerMessage::Bye { .. }]));
    assert_eq!(t.take(9), vec![out(9, &[h], &[])]);
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
    let h = ask[0].n[0];
    assert_eq!(ask, vec![out(19, &[h], &[&[0x11; 32]])]);
    t.e.decide(t.now, h as u32, true);
    assert_eq!(t.take(4), vec![out(4, &[h, 0], &[b"l"])]);
    assert_eq!(t.take(6), vec![out(6, &[h], &[b"v=0 o"])]);
    t.e.report(t.now, h as u32, 0, 0.0, &texts("v=0 a", "", ""));
    assert!(matches!(&signals(&mut t)[..], [PeerMessage::Answer { sdp }] if sdp == "v=0 a"));
    t.e.report(t.now, h as u32, 2, 0.0, &texts("", "", ""));
    assert_eq!(t.take(20), vec![out(20, &[h], &[&[0x11; 32]])]);
    // The data channel closes under it: the facade is told the connection closed.
    t.e.report(t.now, h as u32, 6, 0.0, &texts("gone", "", ""));
    assert_eq!(t.take(21), vec![out(21, &[h], &[&[0x11; 32]])]);
}

#[test]
fn close_fails_what_is_pending_and_closes_the_socket() {
    let mut t = T::new(8);
    t.online();
    let op = t.e.join(t.now, topic("y").as_bytes(), false);
    t.drain();
    t.out.clear();
    t.e.close(t.now);
    assert_eq!(t.take(1), vec![out(1, &[t.conn], &[])]);
    assert_eq!(t.take(16), vec![out(16, &[op as u64], &[b"CLOSED", b"the client was closed"])]);
    assert_eq!(t.take(10), vec![out(10, &[], &[b"closed"])]);
    assert_eq!(t.timer, None);
}

#[test]
fn a_start_that_reaches_no_node_fails_with_timeout() {
    let id = Identity::from_seed([9; 32]);
    let e = Engine::new(0.0, &config(&id, 0, "ws://a/s"), 1500);
    let mut t = T { e, id, now: 0.0, conn: 0, out: vec![], timer: None };
    t.drain();
    while t.take(12).is_empty() {
        let at = t.timer.unwrap();
        assert!((0.0..=1500.0).contains(&at), "a deadline within the connect timeout: {at}");
        t.e.closed(at, t.conn as u32, 1006);
        t.e.tick(at);
        t.drain();
    }
}

#[test]
fn node_errors_and_malformed_frames_are_error_outputs() {
    // The node's ERROR frame, outside any request, is an `error` output with its code.
    let mut t = T::new(10);
    t.online();
    t.node_says(ServerMessage::Error {
        code: signal_mesh_proto::ErrorCode::RateLimited,
        message: "slow".into(),
    });
    assert_eq!(t.take(22), vec![out(22, &[], &[b"RATE_LIMITED", b"slow"])]);
    // A frame that is not protobuf is reported too.
    t.e.frame(t.now, t.conn as u32, &[0xff, 0xff]);
    assert_eq!(t.take(22)[0].s(0), "BAD_REQUEST");
}

/// The facade's numbering of [`Engine::input`], driven the way `js/index.js` drives it.
#[test]
fn input_numbers_reach_their_inputs() {
    let mut t = T::new(11);
    let (now, conn) = (t.now, t.conn as f64);
    let challenge =
        Challenge { protocol_versions: vec![1], node_id: NodeId::new(vec![7; 32]).unwrap(), nonce: [5; 32] };
    // 9: a frame.
    t.e.input(now, 9, conn, 0.0, &encode_server(ServerMessage::Challenge(challenge)));
    let message = t.take(3)[0].b[0].clone();
    // 11: the signature.
    t.e.input(now, 11, conn, 0.0, &t.id.sign(&message));
    let [ClientMessage::Authenticate(Authenticate { peer_id, .. })] = t.sent()[..] else {
        panic!("no Authenticate")
    };
    let welcome = Welcome { protocol_version: 1, peer_id, limits: Limits::default(), node_urls: vec![] };
    t.e.input(now, 9, conn, 0.0, &encode_server(ServerMessage::Welcome(welcome)));
    assert_eq!(t.take(11).len(), 1);
    assert_eq!(t.take(10), vec![out(10, &[], &[b"online"])]);
    // 16-18: join (announce), leave, lookup (limit); an id each.
    let x = topic("x");
    assert!(t.e.input(now, 16, 1.0, 0.0, x.as_bytes()) >= 1.0);
    assert!(t.e.input(now, 17, 0.0, 0.0, x.as_bytes()) >= 1.0);
    let lookup = t.e.input(now, 18, 0.0, 7.0, x.as_bytes());
    let bodies: Vec<RequestBody> = t.requests().into_iter().map(|(_, b)| b).collect();
    assert!(matches!(bodies[0], RequestBody::Join { announce: true, .. }));
    assert!(matches!(bodies[1], RequestBody::Leave { .. }));
    assert!(matches!(bodies[2], RequestBody::Lookup { limit: 7, .. }));
    // 13: abort the lookup.
    t.e.input(now, 13, lookup, 0.0, &[]);
    assert_eq!(t.take(16), vec![out(16, &[lookup as u64], &[b"ABORTED", b"the operation was aborted"])]);
    // 19: connect (peer id, then label); 0-7: what its RTCPeerConnection reports.
    let peer = PeerId::from_array([0xee; 32]);
    let op = t.e.input(now, 19, 0.0, 0.0, &[peer.as_bytes().as_slice(), b"lbl"].concat());
    assert!(op >= 1.0);
    let h = t.take(4)[0].n[0];
    t.e.input(now, 0, h as f64, 1.0, &texts("v=0 o", "", ""));
    assert!(
        matches!(&signals(&mut t)[..], [PeerMessage::Offer { sdp, label, .. }] if sdp == "v=0 o" && label == "lbl")
    );
    // 14: the application closes it.
    t.e.input(now, 14, h as f64, 0.0, &[]);
    assert!(matches!(signals(&mut t)[..], [PeerMessage::Bye { .. }]));
    // 12: a decision on an incoming offer.
    let offer = PeerSignal {
        session: 9,
        message: PeerMessage::Offer { sdp: "v=0".into(), label: "l".into(), ice_restart: false },
    };
    t.node_says(ServerMessage::Event(NodeEvent::Signal {
        from: PeerId::from_array([0x22; 32]),
        payload: offer.encode(),
    }));
    let asked = t.take(19)[0].n[0];
    t.e.input(now, 12, asked as f64, 0.0, &[]);
    assert!(matches!(&signals(&mut t)[..], [PeerMessage::Reject { .. }]));
    // 8: the timer; 10: the socket closed (reconnect later); 15: close.
    t.e.input(now + 1.0, 8, 0.0, 0.0, &[]);
    t.e.input(now, 10, conn, 1006.0, &[]);
    assert_eq!(t.take(10), vec![out(10, &[], &[b"offline"])]);
    t.e.input(now, 15, 0.0, 0.0, &[]);
    assert_eq!(t.take(10), vec![out(10, &[], &[b"closed"])]);
}
