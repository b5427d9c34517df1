//! The core under simulated time: a scripted node on one side, scripted WebRTC on the other.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use signal_mesh_proto::auth::{Identity, signed_message, verify};
use signal_mesh_proto::message::{Authenticate, Challenge, Welcome};
use signal_mesh_proto::{
    ClientMessage, ErrorCode, Event as NodeEvent, Limits, NodeId, PeerId, RequestBody, RequestId,
    ResponseBody, ServerMessage, TopicId, decode_client, encode_server,
};

use super::*;
use crate::core::signal::{PeerMessage, PeerSignal};

const SERVERS: [&str; 3] = ["ws://a/signal", "ws://b/signal", "ws://c/signal"];

/// One client, the node it talks to (scripted by the test) and everything it produced.
struct Sim {
    id: Identity,
    c: Client,
    now: Millis,
    conn: Option<ConnId>,
    opened: Vec<(Millis, String)>,
    closed: Vec<ConnId>,
    sent: Vec<ClientMessage>,
    events: Vec<Event>,
    rtc: Vec<RtcCommand>,
    to_sign: Option<(ConnId, Vec<u8>)>,
    /// WebRTC commands the fake stack only records.
    rtc_log: Vec<RtcCommand>,
    /// How the fake application answers incoming offers (`None`: it does not answer).
    policy: Option<bool>,
    decided: Vec<Handle>,
}

impl Sim {
    fn new(seed: u8, servers: &[&str]) -> Sim {
        Sim::with(seed, servers, |_| {})
    }

    fn with(seed: u8, servers: &[&str], f: impl FnOnce(&mut Config)) -> Sim {
        let id = Identity::from_seed([seed; 32]);
        let mut config =
            Config::new(servers.iter().map(|s| s.to_string()).collect(), id.peer_id(), u64::from(seed));
        f(&mut config);
        let c = Client::new(config, 1000);
        let mut s = Sim {
            id,
            c,
            now: 1000,
            conn: None,
            opened: vec![],
            closed: vec![],
            sent: vec![],
            events: vec![],
            rtc: vec![],
            to_sign: None,
            rtc_log: vec![],
            policy: Some(true),
            decided: vec![],
        };
        s.drain();
        s
    }

    fn peer(&self) -> PeerId {
        self.id.peer_id()
    }

    fn drain(&mut self) {
        while let Some(o) = self.c.poll_output() {
            match o {
                Output::OpenSocket { conn, url } => {
                    self.conn = Some(conn);
                    self.opened.push((self.now, url));
                }
                Output::CloseSocket { conn } => self.closed.push(conn),
                Output::Send { conn, frame } => {
                    assert_eq!(Some(conn), self.conn, "sent on a stale connection");
                    self.sent.push(decode_client(frame, 1 << 20).unwrap());
                }
                Output::Sign { conn, message } => self.to_sign = Some((conn, message)),
                Output::Rtc(r) => self.rtc.push(r),
                Output::Event(e) => self.events.push(e),
            }
        }
    }

    /// Runs every timer due up to `t`.
    fn advance_to(&mut self, t: Millis) {
        while let Some(at) = self.c.poll_timeout() {
            if at > t {
                break;
            }
            self.now = self.now.max(at);
            self.c.handle_timeout(self.now);
            self.drain();
        }
        self.now = t;
    }

    fn advance(&mut self, ms: Millis) {
        self.advance_to(self.now + ms);
    }

    fn node_says(&mut self, msg: ServerMessage) {
        let conn = self.conn.unwrap();
        self.c.handle_frame(conn, encode_server(msg), self.now);
        self.drain();
    }

    fn socket_closed(&mut self, code: Option<u16>) {
        let conn = self.conn.unwrap();
        self.c.handle_socket_closed(conn, code, self.now);
        self.drain();
    }

    /// Completes the handshake on the current socket, checking the signature like a node does.
    fn authenticate(&mut self, limits: Limits) {
        let conn = self.conn.unwrap();
        self.c.handle_socket_open(conn, self.now);
        let challenge = Challenge {
            protocol_versions: vec![1],
            node_id: NodeId::new(vec![7; 32]).unwrap(),
            nonce: [self.now as u8; 32],
        };
        self.node_says(ServerMessage::Challenge(challenge.clone()));
        let (sign_conn, message) = self.to_sign.take().expect("asked to sign");
        assert_eq!(sign_conn, conn);
        assert_eq!(message, signed_message(&challenge.node_id, &challenge.nonce));
        self.c.handle_signed(conn, self.id.sign(&message), self.now);
        self.drain();
        let Some(ClientMessage::Authenticate(Authenticate { protocol_version, peer_id, nonce, signature })) =
            self.sent.pop()
        else {
            panic!("no Authenticate sent")
        };
        assert_eq!(protocol_version, 1);
        assert_eq!(nonce, challenge.nonce);
        assert_eq!(verify(&peer_id, &challenge.node_id, &challenge.nonce, &signature), Ok(()));
        self.node_says(ServerMessage::Welcome(Welcome {
            protocol_version: 1,
            peer_id,
            limits,
            node_urls: Vec::new(),
        }));
    }

    fn online(&mut self) {
        self.authenticate(Limits::default());
    }

    fn requests(&mut self) -> Vec<(RequestId, RequestBody)> {
        self.drain();
        let sent = std::mem::take(&mut self.sent);
        sent.into_iter()
            .filter_map(|m| match m {
                ClientMessage::Request { id, body } => Some((id, body)),
                _ => None,
            })
            .collect()
    }

    fn respond(&mut self, id: RequestId, body: ResponseBody) {
        self.node_says(ServerMessage::Response { id, body });
    }

    fn take_events(&mut self) -> Vec<Event> {
        self.drain();
        std::mem::take(&mut self.events)
    }

    fn op_result(&mut self, op: OpId) -> Option<Result<OpResult, ClientError>> {
        self.drain();
        let pos = self.events.iter().position(|e| matches!(e, Event::OpDone { op: o, .. } if *o == op))?;
        match self.events.remove(pos) {
            Event::OpDone { result, .. } => Some(result),
            _ => unreachable!(),
        }
    }
}

fn topic(name: &str) -> TopicId {
    TopicId::from_name(name).unwrap()
}

#[test]
fn given_a_node_then_the_client_authenticates_and_goes_online() {
    let mut s = Sim::new(1, &SERVERS[..1]);
    assert_eq!(s.opened, vec![(1000, SERVERS[0].to_string())]);
    assert_eq!(s.c.state(), ClientState::Connecting);
    s.online();
    assert_eq!(s.c.state(), ClientState::Online);
    let ev = s.take_events();
    assert!(ev.contains(&Event::StateChanged(ClientState::Online)));
    assert!(ev.contains(&Event::Started));
}

#[test]
fn given_requests_before_authentication_then_they_wait_for_the_welcome() {
    let mut s = Sim::new(1, &SERVERS[..1]);
    let op = s.c.join(topic("room"), true, s.now).unwrap();
    assert!(s.requests().is_empty(), "nothing may be sent before Welcome");
    s.online();
    let reqs = s.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].1, RequestBody::Join { topic: topic("room"), announce: true });
    s.respond(reqs[0].0, ResponseBody::Ok);
    assert_eq!(s.op_result(op), Some(Ok(OpResult::Done)));
}

#[test]
fn given_unreachable_servers_then_they_are_tried_in_order_with_growing_jittered_backoff() {
    let mut s = Sim::with(3, &SERVERS, |c| c.connect_timeout_ms = 600_000);
    for _ in 0..7 {
        s.socket_closed(Some(1006));
        let at = s.c.poll_timeout().unwrap();
        s.advance_to(at);
    }
    let urls: Vec<&str> = s.opened.iter().map(|(_, u)| u.as_str()).collect();
    assert_eq!(
        urls,
        [SERVERS[0], SERVERS[1], SERVERS[2], SERVERS[0], SERVERS[1], SERVERS[2], SERVERS[0], SERVERS[1]]
    );
    // Each delay is within [base/2, base] of 250 ms doubling, capped at 10 s.
    let delays: Vec<u64> = s.opened.windows(2).map(|w| w[1].0 - w[0].0).collect();
    for (i, d) in delays.iter().enumerate() {
        let base = (250u64 << i).min(10_000);
        assert!(*d >= base / 2 && *d <= base, "attempt {i}: delay {d} outside [{}, {base}]", base / 2);
    }
    assert_eq!(s.c.state(), ClientState::Connecting);
}

#[test]
fn given_the_first_server_down_then_the_client_lands_on_the_second() {
    let mut s = Sim::new(4, &SERVERS[..2]);
    s.socket_closed(None);
    s.advance(1000);
    assert_eq!(s.opened.last().unwrap().1, SERVERS[1]);
    s.online();
    assert_eq!(s.c.state(), ClientState::Online);
    assert_eq!(s.c.server_index(), 1);
}

#[test]
fn given_no_node_before_the_deadline_then_start_fails_with_timeout() {
    let mut s = Sim::with(5, &SERVERS[..1], |c| c.connect_timeout_ms = 3000);
    for _ in 0..20 {
        s.socket_closed(Some(1006));
        s.advance(500);
        if s.c.state() == ClientState::Closed {
            break;
        }
    }
    let ev = s.take_events();
    let failed = ev.iter().find_map(|e| if let Event::StartFailed(e) = e { Some(e.clone()) } else { None });
    assert_eq!(failed.map(|e| e.code), Some(Code::Timeout));
    assert_eq!(s.c.state(), ClientState::Closed);
    assert!(s.now <= 1000 + 3000 + 500);
}

#[test]
fn given_a_dropped_connection_then_the_client_reconnects_and_rejoins_every_topic() {
    let mut s = Sim::new(6, &SERVERS[..2]);
    s.online();
    let a = s.c.join(topic("a"), true, s.now).unwrap();
    let b = s.c.join(topic("b"), false, s.now).unwrap();
    for (id, _) in s.requests() {
        s.respond(id, ResponseBody::Ok);
    }
    assert!(s.op_result(a).unwrap().is_ok() && s.op_result(b).unwrap().is_ok());
    let left = s.c.leave(topic("b"), s.now).unwrap();
    let (leave_id, _) = s.requests()[0].clone();
    s.respond(leave_id, ResponseBody::Ok);
    assert!(s.op_result(left).unwrap().is_ok());
    let c = s.c.join(topic("c"), true, s.now).unwrap();
    let (cid, _) = s.requests()[0].clone();
    s.respond(cid, ResponseBody::Ok);
    assert!(s.op_result(c).unwrap().is_ok());
    s.take_events();

    s.socket_closed(Some(1001));
    assert_eq!(s.c.state(), ClientState::Offline);
    assert!(s.take_events().contains(&Event::StateChanged(ClientState::Offline)));
    s.advance(300);
    // After a drop the same node is tried first.
    assert_eq!(s.opened.last().unwrap().1, SERVERS[0]);
    s.online();
    let mut joins: Vec<RequestBody> = s.requests().into_iter().map(|(_, b)| b).collect();
    joins.sort_by_key(|b| format!("{b:?}"));
    let mut want = vec![
        RequestBody::Join { topic: topic("a"), announce: true },
        RequestBody::Join { topic: topic("c"), announce: true },
    ];
    want.sort_by_key(|b| format!("{b:?}"));
    assert_eq!(joins, want, "every joined topic, and only those, is re-joined");
    assert_eq!(s.c.state(), ClientState::Online);
}

#[test]
fn given_a_request_in_flight_when_the_link_drops_then_it_is_sent_again_after_reconnect() {
    let mut s = Sim::new(7, &SERVERS[..1]);
    s.online();
    let op = s.c.lookup(topic("x"), None, s.now).unwrap();
    assert_eq!(s.requests().len(), 1);
    s.socket_closed(None);
    s.advance(300);
    s.online();
    let reqs = s.requests();
    assert_eq!(reqs.len(), 1);
    let peer = PeerId::from_array([9; 32]);
    s.respond(reqs[0].0, ResponseBody::Lookup { peers: vec![peer], next_cursor: None });
    assert_eq!(s.op_result(op), Some(Ok(OpResult::Peers(vec![peer]))));
}

#[test]
fn given_no_response_then_the_request_times_out_and_a_late_reply_is_ignored() {
    let mut s = Sim::new(8, &SERVERS[..1]);
    s.online();
    let op = s.c.join(topic("slow"), true, s.now).unwrap();
    let (id, _) = s.requests()[0].clone();
    s.advance(Config::DEFAULT_REQUEST_TIMEOUT_MS - 1);
    assert_eq!(s.op_result(op), None);
    s.advance(1);
    let r = s.op_result(op).unwrap().unwrap_err();
    assert_eq!(r.code, Code::Timeout);
    s.take_events();
    s.respond(id, ResponseBody::Ok);
    assert!(s.take_events().is_empty(), "a late reply must not complete anything");
    assert!(s.c.topics().is_empty(), "a timed-out join is not recorded");
}

#[test]
fn given_a_duplicate_reply_then_the_operation_completes_once() {
    let mut s = Sim::new(9, &SERVERS[..1]);
    s.online();
    let op = s.c.join(topic("d"), true, s.now).unwrap();
    let (id, _) = s.requests()[0].clone();
    s.respond(id, ResponseBody::Ok);
    s.respond(id, ResponseBody::Error { code: ErrorCode::Internal, message: "dup".into() });
    s.respond(id + 100, ResponseBody::Ok);
    let done: Vec<_> = s.take_events().into_iter().filter(|e| matches!(e, Event::OpDone { .. })).collect();
    assert_eq!(done, vec![Event::OpDone { op, result: Ok(OpResult::Done) }]);
}

#[test]
fn given_a_node_error_then_the_operation_fails_with_its_code() {
    let mut s = Sim::new(10, &SERVERS[..1]);
    s.online();
    let op = s.c.leave(topic("never"), s.now).unwrap();
    let (id, _) = s.requests()[0].clone();
    s.respond(id, ResponseBody::Error { code: ErrorCode::NotJoined, message: "not joined".into() });
    assert_eq!(s.op_result(op).unwrap().unwrap_err().code, Code::Node(ErrorCode::NotJoined));
}

#[test]
fn given_an_online_client_then_it_pings_every_third_of_the_idle_timeout_and_drops_a_silent_node() {
    let mut s = Sim::new(11, &SERVERS[..1]);
    s.authenticate(Limits { idle_timeout_ms: 3000, ..Limits::default() });
    s.sent.clear();
    s.advance(999);
    assert!(s.sent.is_empty());
    s.advance(1);
    assert!(matches!(s.sent.as_slice(), [ClientMessage::Ping(_)]));
    // Pongs keep it alive.
    s.node_says(ServerMessage::Pong(1));
    s.advance(2500);
    assert_eq!(s.c.state(), ClientState::Online);
    // Then silence for the whole idle timeout: the link is given up and a new one opened.
    s.advance(3000);
    assert_eq!(s.c.state(), ClientState::Offline);
    assert!(!s.closed.is_empty());
}

#[test]
fn given_a_node_ping_then_the_client_pongs() {
    let mut s = Sim::new(12, &SERVERS[..1]);
    s.online();
    s.sent.clear();
    s.node_says(ServerMessage::Ping(77));
    assert_eq!(s.sent, vec![ClientMessage::Pong(77)]);
}

#[test]
fn given_session_replaced_then_the_client_closes_and_never_reconnects() {
    for by_goodbye in [true, false] {
        let mut s = Sim::new(13, &SERVERS[..2]);
        s.online();
        let op = s.c.join(topic("t"), true, s.now).unwrap();
        if by_goodbye {
            s.node_says(ServerMessage::Goodbye {
                code: ErrorCode::SessionReplaced,
                reason: "new tab".into(),
            });
        } else {
            s.socket_closed(Some(ErrorCode::SessionReplaced.close_code()));
        }
        assert_eq!(s.c.state(), ClientState::Closed);
        assert_eq!(s.op_result(op).unwrap().unwrap_err().code, Code::Node(ErrorCode::SessionReplaced));
        let opened = s.opened.len();
        s.advance(60_000);
        assert_eq!(s.opened.len(), opened, "no reconnect after SESSION_REPLACED");
        assert_eq!(s.c.poll_timeout(), None);
    }
}

#[test]
fn given_a_goodbye_for_shutdown_then_the_client_reconnects() {
    let mut s = Sim::new(14, &SERVERS[..1]);
    s.online();
    s.node_says(ServerMessage::Goodbye { code: ErrorCode::ShuttingDown, reason: "bye".into() });
    assert_eq!(s.c.state(), ClientState::Offline);
    s.advance(300);
    assert_eq!(s.opened.len(), 2);
}

#[test]
fn given_an_unsupported_version_then_the_next_server_is_tried() {
    let mut s = Sim::new(15, &SERVERS[..2]);
    let conn = s.conn.unwrap();
    s.c.handle_socket_open(conn, s.now);
    s.node_says(ServerMessage::Challenge(Challenge {
        protocol_versions: vec![2],
        node_id: NodeId::new(vec![1; 32]).unwrap(),
        nonce: [0; 32],
    }));
    assert!(s.to_sign.is_none());
    assert_eq!(s.closed, vec![conn]);
    s.advance(300);
    assert_eq!(s.opened.last().unwrap().1, SERVERS[1]);
}

#[test]
fn given_frames_from_an_old_connection_then_they_are_ignored() {
    let mut s = Sim::new(16, &SERVERS[..1]);
    s.online();
    let old = s.conn.unwrap();
    s.socket_closed(None);
    s.advance(300);
    s.online();
    s.take_events();
    s.c.handle_frame(
        old,
        encode_server(ServerMessage::Goodbye { code: ErrorCode::SessionReplaced, reason: String::new() }),
        s.now,
    );
    s.c.handle_socket_closed(old, Some(1000), s.now);
    s.drain();
    assert_eq!(s.c.state(), ClientState::Online);
    assert!(s.take_events().is_empty());
}

#[test]
fn given_bad_app_input_then_typed_errors() {
    let mut s = Sim::new(17, &SERVERS[..1]);
    s.online();
    let me = s.peer();
    assert_eq!(s.c.connect(me, "x", s.now).unwrap_err().code, Code::InvalidArgument);
    assert_eq!(s.c.lookup(topic("x"), Some(0), s.now).unwrap_err().code, Code::InvalidArgument);
    assert_eq!(
        s.c.connect(PeerId::from_array([1; 32]), &"l".repeat(300), s.now).unwrap_err().code,
        Code::InvalidArgument
    );
    s.c.close(s.now);
    s.drain();
    assert_eq!(s.c.join(topic("x"), true, s.now).unwrap_err().code, Code::Closed);
}

#[test]
fn given_a_long_lookup_then_it_pages_with_the_cursor() {
    let mut s = Sim::new(18, &SERVERS[..1]);
    s.authenticate(Limits { max_lookup_page: 2, ..Limits::default() });
    let op = s.c.lookup(topic("big"), Some(5), s.now).unwrap();
    let p = |b: u8| PeerId::from_array([b; 32]);
    let (id, body) = s.requests()[0].clone();
    assert_eq!(body, RequestBody::Lookup { topic: topic("big"), limit: 2, cursor: None });
    s.respond(id, ResponseBody::Lookup { peers: vec![p(1), p(2)], next_cursor: Some(p(2)) });
    let (id, body) = s.requests()[0].clone();
    assert_eq!(body, RequestBody::Lookup { topic: topic("big"), limit: 2, cursor: Some(p(2)) });
    s.respond(id, ResponseBody::Lookup { peers: vec![p(3), p(4)], next_cursor: Some(p(4)) });
    let (id, body) = s.requests()[0].clone();
    assert_eq!(body, RequestBody::Lookup { topic: topic("big"), limit: 1, cursor: Some(p(4)) });
    s.respond(id, ResponseBody::Lookup { peers: vec![p(5)], next_cursor: Some(p(5)) });
    assert_eq!(s.op_result(op), Some(Ok(OpResult::Peers((1..=5).map(p).collect()))));
}

#[test]
fn given_presence_events_then_they_are_reported() {
    let mut s = Sim::new(19, &SERVERS[..1]);
    s.online();
    s.take_events();
    let peer = PeerId::from_array([3; 32]);
    s.node_says(ServerMessage::Event(NodeEvent::PeerJoined { topic: topic("r"), peer }));
    s.node_says(ServerMessage::Event(NodeEvent::PeerLeft { topic: topic("r"), peer }));
    assert_eq!(
        s.take_events(),
        vec![Event::PeerJoined { topic: topic("r"), peer }, Event::PeerLeft { topic: topic("r"), peer }]
    );
}

// ---- peers -------------------------------------------------------------------------------------

/// Two online clients whose node relays signals between them, and a fake WebRTC stack.
struct Pair {
    a: Sim,
    b: Sim,
}

impl Pair {
    fn new(seed_a: u8, seed_b: u8) -> Pair {
        Pair::with_timeout(seed_a, seed_b, Config::DEFAULT_CONNECT_TIMEOUT_MS)
    }

    fn with_timeout(seed_a: u8, seed_b: u8, connect_timeout_ms: u64) -> Pair {
        let mut a = Sim::with(seed_a, &SERVERS[..1], |c| c.connect_timeout_ms = connect_timeout_ms);
        let mut b = Sim::with(seed_b, &SERVERS[..1], |c| c.connect_timeout_ms = connect_timeout_ms);
        a.online();
        b.online();
        a.take_events();
        b.take_events();
        Pair { a, b }
    }

    /// Relays signals both ways and plays WebRTC until nothing moves.
    fn run(&mut self) {
        for _ in 0..50 {
            let moved = Self::step(&mut self.a, &mut self.b) | Self::step(&mut self.b, &mut self.a);
            if !moved {
                return;
            }
        }
        panic!("no quiescence");
    }

    fn step(x: &mut Sim, y: &mut Sim) -> bool {
        let mut moved = false;
        let offers: Vec<Handle> = x
            .events
            .iter()
            .filter_map(|e| if let Event::IncomingOffer { handle, .. } = e { Some(*handle) } else { None })
            .filter(|h| !x.decided.contains(h))
            .collect();
        if let Some(accept) = x.policy {
            for h in offers {
                moved = true;
                x.decided.push(h);
                x.c.decide_incoming(h, accept, x.now);
                x.drain();
            }
        }
        for (id, body) in x.requests() {
            moved = true;
            if let RequestBody::Signal { to, payload } = body {
                x.respond(id, ResponseBody::Ok);
                if to == y.peer() {
                    y.node_says(ServerMessage::Event(NodeEvent::Signal { from: x.peer(), payload }));
                }
            }
        }
        for cmd in std::mem::take(&mut x.rtc) {
            moved = true;
            let now = x.now;
            x.rtc_log.push(cmd.clone());
            match cmd {
                RtcCommand::CreateOffer { handle, ice_restart } => {
                    x.c.rtc_local_description(handle, format!("offer restart={ice_restart}"), now);
                    x.c.rtc_local_candidate(
                        handle,
                        Candidate { candidate: "c-offer".into(), ..Default::default() },
                        now,
                    );
                }
                RtcCommand::ApplyOffer { handle, .. } => {
                    x.c.rtc_local_description(handle, "answer".into(), now);
                    x.c.rtc_local_candidate(
                        handle,
                        Candidate { candidate: "c-answer".into(), ..Default::default() },
                        now,
                    );
                    x.c.rtc_channel_open(handle, now);
                }
                RtcCommand::ApplyAnswer { handle, .. } => x.c.rtc_channel_open(handle, now),
                RtcCommand::Create { .. } | RtcCommand::AddCandidate { .. } | RtcCommand::Close { .. } => {}
            }
            x.drain();
        }
        moved
    }
}

#[test]
fn given_two_peers_then_connect_negotiates_an_open_channel_with_trickled_candidates() {
    let mut p = Pair::new(20, 21);
    let op = p.a.c.connect(p.b.peer(), "chat", p.a.now).unwrap();
    p.a.drain();
    p.run();
    let Some(Ok(OpResult::Connection(h))) = p.a.op_result(op) else {
        panic!("not connected: {:?}", p.a.events)
    };
    assert_eq!(p.a.c.session_peer(h), Some(p.b.peer()));
    let b_events = p.b.take_events();
    assert!(b_events.iter().any(|e| matches!(e, Event::IncomingOffer { peer, .. } if *peer == p.a.peer())));
}

fn connections(s: &Sim) -> Vec<Handle> {
    let all: Vec<&RtcCommand> = s.rtc_log.iter().chain(s.rtc.iter()).collect();
    all.iter()
        .filter_map(|c| if let RtcCommand::Create { handle, .. } = c { Some(*handle) } else { None })
        .filter(|h| !all.contains(&&RtcCommand::Close { handle: *h }))
        .collect()
}

#[test]
fn given_both_peers_connect_at_once_then_exactly_one_connection_each_side() {
    for (sa, sb) in [(22, 23), (23, 22), (30, 31), (31, 30)] {
        let mut p = Pair::new(sa, sb);
        let oa = p.a.c.connect(p.b.peer(), "x", p.a.now).unwrap();
        let ob = p.b.c.connect(p.a.peer(), "x", p.b.now).unwrap();
        p.a.drain();
        p.b.drain();
        // Both offers are made before either arrives.
        Pair::step(&mut p.a, &mut p.b);
        Pair::step(&mut p.b, &mut p.a);
        p.run();
        let Some(Ok(OpResult::Connection(ha))) = p.a.op_result(oa) else { panic!("a: {:?}", p.a.events) };
        let Some(Ok(OpResult::Connection(hb))) = p.b.op_result(ob) else { panic!("b: {:?}", p.b.events) };
        assert_eq!(connections(&p.a), vec![ha], "a keeps exactly one connection");
        assert_eq!(connections(&p.b), vec![hb], "b keeps exactly one connection");
        for s in [&p.a, &p.b] {
            assert!(
                !s.events.iter().any(|e| matches!(e, Event::Incoming { .. } | Event::IncomingOffer { .. }))
            );
        }
    }
}

#[test]
fn given_the_responder_rejects_then_the_initiator_fails_with_rejected_at_once() {
    let mut p = Pair::new(24, 25);
    p.b.policy = Some(false);
    let op = p.a.c.connect(p.b.peer(), "x", p.a.now).unwrap();
    p.a.drain();
    p.run();
    assert_eq!(p.a.op_result(op).unwrap().unwrap_err().code, Code::Rejected);
    assert!(connections(&p.a).is_empty());
    assert!(connections(&p.b).is_empty());
}

#[test]
fn given_an_undecided_offer_then_connect_times_out() {
    let mut p = Pair::with_timeout(26, 27, 5000);
    p.b.policy = None;
    let op = p.a.c.connect(p.b.peer(), "x", p.a.now).unwrap();
    p.a.drain();
    p.run();
    p.a.advance(4999);
    assert_eq!(p.a.op_result(op), None);
    p.a.advance(1);
    assert_eq!(p.a.op_result(op).unwrap().unwrap_err().code, Code::Timeout);
    assert!(connections(&p.a).is_empty());
}

#[test]
fn given_an_unknown_peer_then_connect_fails_with_peer_not_found() {
    let mut s = Sim::new(28, &SERVERS[..1]);
    s.online();
    let op = s.c.connect(PeerId::from_array([5; 32]), "x", s.now).unwrap();
    s.drain();
    let h = match s.rtc.as_slice() {
        [RtcCommand::Create { handle, .. }, RtcCommand::CreateOffer { .. }] => *handle,
        other => panic!("{other:?}"),
    };
    s.c.rtc_local_description(h, "offer".into(), s.now);
    s.drain();
    let (id, _) = s.requests()[0].clone();
    s.respond(id, ResponseBody::Error { code: ErrorCode::PeerNotFound, message: "no such peer".into() });
    assert_eq!(s.op_result(op).unwrap().unwrap_err().code, Code::Node(ErrorCode::PeerNotFound));
    assert!(s.rtc.contains(&RtcCommand::Close { handle: h }));
}

#[test]
fn given_an_open_connection_when_one_side_closes_then_the_other_is_told() {
    let mut p = Pair::new(29, 32);
    let op = p.a.c.connect(p.b.peer(), "x", p.a.now).unwrap();
    p.a.drain();
    p.run();
    let Some(Ok(OpResult::Connection(ha))) = p.a.op_result(op) else { panic!() };
    let hb = match p.b.take_events().iter().find(|e| matches!(e, Event::Incoming { .. })) {
        Some(Event::Incoming { handle, .. }) => *handle,
        _ => panic!("no incoming connection event"),
    };
    // Connecting again to an open peer hands out the same connection.
    let again = p.a.c.connect(p.b.peer(), "x", p.a.now).unwrap();
    p.a.drain();
    assert_eq!(p.a.op_result(again), Some(Ok(OpResult::Connection(ha))));

    p.a.c.close_connection(ha, p.a.now);
    p.a.drain();
    p.run();
    assert!(p.b.take_events().contains(&Event::PeerClosed { handle: hb, peer: p.a.peer() }));
    assert!(p.b.rtc_log.contains(&RtcCommand::Close { handle: hb }));
    assert!(!p.a.events.iter().any(|e| matches!(e, Event::PeerClosed { .. })), "the closing side knows");
}

#[test]
fn given_ice_failure_then_one_restart_through_signaling_then_closed() {
    let mut p = Pair::new(33, 34);
    let op = p.a.c.connect(p.b.peer(), "x", p.a.now).unwrap();
    p.a.drain();
    p.run();
    let Some(Ok(OpResult::Connection(ha))) = p.a.op_result(op) else { panic!() };
    // The responder sees ICE fail: it asks the initiator, which re-offers with an ICE restart.
    let hb = p.b.c.sessions.keys().copied().next().unwrap();
    p.b.c.rtc_ice_failed(hb, p.b.now);
    p.b.drain();
    p.run();
    assert!(p.a.rtc_log.contains(&RtcCommand::CreateOffer { handle: ha, ice_restart: true }));
    let applied = p.b.rtc_log.iter().filter(|c| matches!(c, RtcCommand::ApplyOffer { .. })).count();
    assert_eq!(applied, 2, "the responder applied the first offer and the restart offer");
    assert_eq!(p.a.rtc_log.iter().filter(|c| matches!(c, RtcCommand::ApplyAnswer { .. })).count(), 2);
    assert!(p.a.c.sessions.get(&ha).is_some(), "still connected after the restart");
    assert!(!p.b.events.iter().any(|e| matches!(e, Event::PeerClosed { .. })));
    // ICE is back on both sides: no deadline is left to close the connection.
    p.a.c.rtc_ice_connected(ha, p.a.now);
    p.b.c.rtc_ice_connected(hb, p.b.now);
    // (Past the connect timeout, within the node's idle timeout: this scripted node never pongs.)
    p.a.advance(20_000);
    p.b.advance(20_000);
    assert!(p.a.c.sessions.get(&ha).is_some() && p.b.c.sessions.get(&hb).is_some());
    // A second failure is final: both sides learn it is closed.
    p.a.c.rtc_ice_failed(ha, p.a.now);
    p.a.drain();
    assert!(p.a.events.contains(&Event::PeerClosed { handle: ha, peer: p.b.peer() }));
    p.run();
    assert!(p.b.events.iter().any(|e| matches!(e, Event::PeerClosed { .. })));
}

#[test]
fn given_a_message_for_another_session_then_it_is_dropped() {
    let mut p = Pair::new(35, 36);
    let op = p.a.c.connect(p.b.peer(), "x", p.a.now).unwrap();
    p.a.drain();
    p.run();
    assert!(p.a.op_result(op).unwrap().is_ok());
    p.b.take_events();
    let stale = PeerSignal { session: 12345, message: PeerMessage::Bye { reason: "old".into() } };
    p.b.node_says(ServerMessage::Event(NodeEvent::Signal { from: p.a.peer(), payload: stale.encode() }));
    let garbage = Bytes::from_static(b"\x01\x02\x03");
    p.b.node_says(ServerMessage::Event(NodeEvent::Signal { from: p.a.peer(), payload: garbage }));
    assert!(p.b.take_events().is_empty());
    assert_eq!(connections(&p.b).len(), 1);
}

#[test]
fn given_the_peer_starts_over_then_the_new_offer_replaces_the_old_connection() {
    let mut p = Pair::new(37, 38);
    let op = p.a.c.connect(p.b.peer(), "x", p.a.now).unwrap();
    p.a.drain();
    p.run();
    assert!(p.a.op_result(op).unwrap().is_ok());
    p.b.take_events();
    // A reloaded tab with the same identity offers a fresh session.
    let fresh = PeerSignal {
        session: 999,
        message: PeerMessage::Offer { sdp: "o".into(), label: "x".into(), ice_restart: false },
    };
    p.b.node_says(ServerMessage::Event(NodeEvent::Signal { from: p.a.peer(), payload: fresh.encode() }));
    let ev = p.b.take_events();
    assert!(ev.iter().any(|e| matches!(e, Event::PeerClosed { .. })));
    assert!(ev.iter().any(|e| matches!(e, Event::IncomingOffer { .. })));
}

#[test]
fn given_close_then_peers_get_bye_and_everything_pending_fails_closed() {
    let mut p = Pair::new(39, 40);
    let op = p.a.c.connect(p.b.peer(), "x", p.a.now).unwrap();
    p.a.drain();
    p.run();
    assert!(p.a.op_result(op).unwrap().is_ok());
    let pending = p.a.c.join(topic("z"), true, p.a.now).unwrap();
    p.a.c.close(p.a.now);
    p.a.drain();
    assert_eq!(p.a.op_result(pending).unwrap().unwrap_err().code, Code::Closed);
    assert_eq!(p.a.c.state(), ClientState::Closed);
    let byes =
        p.a.sent
            .iter()
            .filter(|m| matches!(m, ClientMessage::Request { body: RequestBody::Signal { .. }, .. }))
            .count();
    assert_eq!(byes, 1);
}

#[test]
fn given_an_ice_restart_that_never_reconnects_then_the_connection_is_closed_after_the_timeout() {
    let mut p = Pair::new(41, 42);
    let op = p.a.c.connect(p.b.peer(), "x", p.a.now).unwrap();
    p.a.drain();
    p.run();
    let Some(Ok(OpResult::Connection(ha))) = p.a.op_result(op) else { panic!() };
    p.a.c.rtc_ice_failed(ha, p.a.now);
    p.a.drain();
    p.run();
    assert!(p.a.c.sessions.get(&ha).is_some());
    p.a.advance(Config::DEFAULT_CONNECT_TIMEOUT_MS);
    assert!(p.a.events.contains(&Event::PeerClosed { handle: ha, peer: p.b.peer() }));
    p.run();
    assert!(
        p.b.events.iter().any(|e| matches!(e, Event::PeerClosed { .. })),
        "the bye reached the other side"
    );
}

#[test]
fn given_connect_while_offline_then_the_offer_goes_out_after_reconnect() {
    let mut p = Pair::new(43, 44);
    p.a.socket_closed(None);
    assert_eq!(p.a.c.state(), ClientState::Offline);
    let op = p.a.c.connect(p.b.peer(), "x", p.a.now).unwrap();
    p.a.drain();
    Pair::step(&mut p.a, &mut p.b);
    assert!(p.b.events.is_empty(), "nothing reaches the peer while offline");
    p.a.advance(300);
    p.a.online();
    p.run();
    assert!(matches!(p.a.op_result(op), Some(Ok(OpResult::Connection(_)))));
}

#[test]
fn given_too_many_sessions_then_further_offers_are_rejected() {
    let mut s = Sim::new(45, &SERVERS[..1]);
    s.online();
    for i in 0..peers::MAX_SESSIONS {
        let from = PeerId::from_array([
            (i % 251) as u8,
            (i / 251) as u8,
            1,
            2,
            3,
            4,
            5,
            6,
            7,
            8,
            9,
            10,
            11,
            12,
            13,
            14,
            15,
            16,
            17,
            18,
            19,
            20,
            21,
            22,
            23,
            24,
            25,
            26,
            27,
            28,
            29,
            30,
        ]);
        let offer = PeerSignal {
            session: 1,
            message: PeerMessage::Offer { sdp: "o".into(), label: "x".into(), ice_restart: false },
        };
        s.node_says(ServerMessage::Event(NodeEvent::Signal { from, payload: offer.encode() }));
    }
    assert_eq!(s.c.sessions.len(), peers::MAX_SESSIONS);
    s.requests();
    let late = PeerId::from_array([0xee; 32]);
    let offer = PeerSignal {
        session: 9,
        message: PeerMessage::Offer { sdp: "o".into(), label: "x".into(), ice_restart: false },
    };
    s.node_says(ServerMessage::Event(NodeEvent::Signal { from: late, payload: offer.encode() }));
    let reqs = s.requests();
    let RequestBody::Signal { to, payload } = &reqs[0].1 else { panic!("{reqs:?}") };
    assert_eq!(*to, late);
    assert!(matches!(PeerSignal::decode(payload.clone()).unwrap().message, PeerMessage::Reject { .. }));
    assert_eq!(s.c.connect(late, "x", s.now).unwrap_err().code, Code::Node(ErrorCode::LimitExceeded));
}
