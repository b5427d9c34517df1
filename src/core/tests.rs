//! The core under simulated time: a scripted node on one side, scripted WebRTC on the other.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    format,
    string::{String, ToString},
    vec,
    vec::Vec,
};

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
        self.authenticate_with(limits, Vec::new());
    }

    /// Like [`Sim::authenticate`], with the `node_urls` the node announces in its `Welcome`.
    fn authenticate_with(&mut self, limits: Limits, node_urls: Vec<String>) {
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
        self.node_says(ServerMessage::Welcome(Welcome { protocol_version: 1, peer_id, limits, node_urls }));
    }

    fn online(&mut self) {
        self.authenticate(Limits::default());
    }

    fn requests(&mut self) -> Vec<(RequestId, RequestBody)> {
        self.drain();
        let sent = core::mem::take(&mut self.sent);
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
        core::mem::take(&mut self.events)
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
fn given_one_configured_node_that_dies_then_the_client_fails_over_to_the_nodes_it_announced() {
    let mut s = Sim::new(4, &SERVERS[..1]);
    let announced = vec!["ws://b/signal".to_string(), SERVERS[0].to_string(), "ws://c/signal".to_string()];
    s.authenticate_with(Limits::default(), announced);
    let op = s.c.join(topic("room"), true, s.now).unwrap();
    let (id, _) = s.requests()[0].clone();
    s.respond(id, ResponseBody::Ok);
    assert_eq!(s.op_result(op), Some(Ok(OpResult::Done)));
    // Configured first, then the announced ones, without the duplicate of the configured one.
    assert_eq!(s.c.servers(), [SERVERS[0], "ws://b/signal", "ws://c/signal"]);

    // Node a dies: the client retries it once, then moves on to b, where it re-joins its topic.
    s.socket_closed(Some(1006));
    assert_eq!(s.c.state(), ClientState::Offline);
    s.advance_to(s.c.poll_timeout().unwrap());
    assert_eq!(s.opened.last().unwrap().1, SERVERS[0]);
    s.socket_closed(None);
    s.advance_to(s.c.poll_timeout().unwrap());
    assert_eq!(s.opened.last().unwrap().1, "ws://b/signal");
    // b's Welcome no longer lists the dead node a (it is configured, so it stays) but a new node d.
    s.authenticate_with(Limits::default(), vec!["ws://c/signal".into(), "ws://d/signal".into()]);
    assert_eq!(s.c.state(), ClientState::Online);
    assert_eq!(s.c.server_index(), 1);
    assert_eq!(s.c.servers(), [SERVERS[0], "ws://b/signal", "ws://c/signal", "ws://d/signal"]);
    let rejoin = s.requests();
    assert_eq!(rejoin.len(), 1);
    assert_eq!(rejoin[0].1, RequestBody::Join { topic: topic("room"), announce: true });

    // b dies too: after one retry of b, the client goes on to c, then d.
    s.socket_closed(Some(1006));
    for _ in 0..3 {
        s.advance_to(s.c.poll_timeout().unwrap());
        s.socket_closed(None);
    }
    let tail: Vec<&str> = s.opened.iter().rev().take(3).rev().map(|(_, u)| u.as_str()).collect();
    assert_eq!(tail, ["ws://b/signal", "ws://c/signal", "ws://d/signal"]);
}

#[test]
fn given_a_node_announcing_garbage_urls_then_only_websocket_urls_are_tried() {
    let mut s = Sim::new(4, &SERVERS[..1]);
    let junk = vec!["http://x/".to_string(), "javascript:1".into(), String::new(), "wss://ok/signal".into()];
    s.authenticate_with(Limits::default(), junk);
    assert_eq!(s.c.servers(), [SERVERS[0], "wss://ok/signal"]);
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
            if let RequestBody::Signal { to, payload, .. } = body {
                x.respond(id, ResponseBody::Ok);
                if to == y.peer() {
                    y.node_says(ServerMessage::Event(NodeEvent::Signal { from: x.peer(), payload }));
                }
            }
        }
        for cmd in core::mem::take(&mut x.rtc) {
            moved = true;
            let now = x.now;
            x.rtc_log.push(cmd.clone());
            match cmd {
                RtcCommand::CreateOffer { handle, ice_restart } => {
                    x.c.rtc_local_description(
                        handle,
                        SdpKind::Offer,
                        format!("offer restart={ice_restart}"),
                        now,
                    );
                    x.c.rtc_local_candidate(
                        handle,
                        Candidate { candidate: "c-offer".into(), ..Default::default() },
                        now,
                    );
                }
                RtcCommand::ApplyOffer { handle, .. } => {
                    x.c.rtc_local_description(handle, SdpKind::Answer, "answer".into(), now);
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
    s.c.rtc_local_description(h, SdpKind::Offer, "offer".into(), s.now);
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
    let hb = p.b.c.peer_handles()[0];
    p.b.c.rtc_ice_failed(hb, p.b.now);
    p.b.drain();
    p.run();
    assert!(p.a.rtc_log.contains(&RtcCommand::CreateOffer { handle: ha, ice_restart: true }));
    let applied = p.b.rtc_log.iter().filter(|c| matches!(c, RtcCommand::ApplyOffer { .. })).count();
    assert_eq!(applied, 2, "the responder applied the first offer and the restart offer");
    assert_eq!(p.a.rtc_log.iter().filter(|c| matches!(c, RtcCommand::ApplyAnswer { .. })).count(), 2);
    assert!(p.a.c.session_peer(ha).is_some(), "still connected after the restart");
    assert!(!p.b.events.iter().any(|e| matches!(e, Event::PeerClosed { .. })));
    // ICE is back on both sides: no deadline is left to close the connection.
    p.a.c.rtc_ice_connected(ha, p.a.now);
    p.b.c.rtc_ice_connected(hb, p.b.now);
    // (Past the connect timeout, within the node's idle timeout: this scripted node never pongs.)
    p.a.advance(20_000);
    p.b.advance(20_000);
    assert!(p.a.c.session_peer(ha).is_some() && p.b.c.session_peer(hb).is_some());
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
    assert!(p.a.c.session_peer(ha).is_some());
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
    assert_eq!(s.c.peer_handles().len(), peers::MAX_SESSIONS);
    s.requests();
    let late = PeerId::from_array([0xee; 32]);
    let offer = PeerSignal {
        session: 9,
        message: PeerMessage::Offer { sdp: "o".into(), label: "x".into(), ice_restart: false },
    };
    s.node_says(ServerMessage::Event(NodeEvent::Signal { from: late, payload: offer.encode() }));
    let reqs = s.requests();
    let RequestBody::Signal { to, payload, .. } = &reqs[0].1 else { panic!("{reqs:?}") };
    assert_eq!(*to, late);
    assert!(matches!(PeerSignal::decode(payload.clone()).unwrap().message, PeerMessage::Reject { .. }));
    assert_eq!(s.c.connect(late, "x", s.now).unwrap_err().code, Code::Node(ErrorCode::LimitExceeded));
}

// ---- pacing ------------------------------------------------------------------------------------

/// The node's token bucket, as the node keeps it (`session.rs`): refilled at `rps`, at most `burst`.
struct NodeBucket {
    rps: f64,
    burst: f64,
    tokens: f64,
    last: Millis,
}

impl NodeBucket {
    fn take(&mut self, now: Millis) -> bool {
        self.tokens = (self.tokens + (now - self.last) as f64 * self.rps / 1000.0).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[test]
fn given_16_simultaneous_connects_then_requests_are_paced_within_the_announced_bucket() {
    let mut s = Sim::new(40, &SERVERS[..1]);
    let limits = Limits { requests_per_second: 40, request_burst: 20, ..Limits::default() };
    s.authenticate_with(limits, Vec::new());
    let mut node = NodeBucket { rps: 40.0, burst: 20.0, tokens: 20.0, last: s.now };
    let peers: Vec<PeerId> = (0..16u8).map(|i| Identity::from_seed([100 + i; 32]).peer_id()).collect();
    let ops: Vec<OpId> = peers.iter().map(|p| s.c.connect(*p, "x", s.now).unwrap()).collect();
    s.drain();
    // The fake WebRTC stack makes each offer and 8 candidates at once.
    for cmd in core::mem::take(&mut s.rtc) {
        if let RtcCommand::CreateOffer { handle, .. } = cmd {
            s.c.rtc_local_description(handle, SdpKind::Offer, "offer".into(), s.now);
            for i in 0..8 {
                let c = Candidate { candidate: format!("c{i}"), ..Default::default() };
                s.c.rtc_local_candidate(handle, c, s.now);
            }
        }
    }
    s.drain();
    // The node answers each request 1 ms later and checks its bucket; nothing is ever rate limited.
    let mut per_peer: Vec<Vec<PeerMessage>> = vec![Vec::new(); peers.len()];
    let mut total = 0;
    let mut most_in_flight = 0;
    while total < 16 * 9 {
        let reqs = s.requests();
        most_in_flight = most_in_flight.max(reqs.len());
        for (_, body) in &reqs {
            assert!(node.take(s.now), "the node's bucket ran dry at {} after {total} requests", s.now);
            let RequestBody::Signal { to, payload, .. } = body else { panic!("{body:?}") };
            let i = peers.iter().position(|p| p == to).unwrap();
            per_peer[i].push(PeerSignal::decode(payload.clone()).unwrap().message);
            total += 1;
        }
        let start = s.now;
        s.advance(1);
        for (id, _) in reqs {
            s.respond(id, ResponseBody::Ok);
        }
        if total == 16 * 9 {
            break;
        }
        s.advance_to(s.c.poll_timeout().unwrap().max(start + 1));
        assert!(s.now < 1000 + 10_000, "pacing stalled after {total} requests");
    }
    // 144 requests, 18 at once then 36 per second: about 3.5 s, not more.
    assert!(s.now - 1000 <= 4_500, "took {} ms", s.now - 1000);
    assert!(most_in_flight <= crate::core::client::MAX_IN_FLIGHT);
    for msgs in &per_peer {
        assert!(matches!(msgs[0], PeerMessage::Offer { .. }), "the offer goes before its candidates");
        assert_eq!(msgs.len(), 9);
    }
    for op in ops {
        assert_eq!(s.op_result(op), None, "no connect failed");
    }
}

#[test]
fn given_unanswered_requests_then_at_most_max_in_flight_are_outstanding() {
    let mut s = Sim::new(41, &SERVERS[..1]);
    s.online();
    let max = crate::core::client::MAX_IN_FLIGHT;
    for i in 0..(max + 10) {
        s.c.join(topic(&format!("t{i}")), true, s.now).unwrap();
    }
    let first = s.requests();
    assert_eq!(first.len(), max);
    s.advance(100);
    assert!(s.requests().is_empty(), "nothing more is sent while every slot is taken");
    s.respond(first[0].0, ResponseBody::Ok);
    assert_eq!(s.requests().len(), 1, "one answer frees one slot");
}

// ---- abort -------------------------------------------------------------------------------------

#[test]
fn given_an_aborted_lookup_then_it_fails_aborted_and_the_late_reply_is_ignored() {
    let mut s = Sim::new(42, &SERVERS[..1]);
    s.online();
    let op = s.c.lookup(topic("t"), None, s.now).unwrap();
    let (id, _) = s.requests()[0].clone();
    s.c.cancel(op, s.now);
    assert_eq!(s.op_result(op).unwrap().unwrap_err().code, Code::Aborted);
    s.respond(id, ResponseBody::Lookup { peers: vec![], next_cursor: None });
    assert_eq!(s.op_result(op), None, "completed once");
    // Aborting again, or aborting a finished operation, does nothing.
    s.take_events();
    s.c.cancel(op, s.now);
    assert!(s.take_events().is_empty());
}

#[test]
fn given_an_aborted_lookup_still_queued_then_it_is_never_sent() {
    let mut s = Sim::new(43, &SERVERS[..1]);
    let op = s.c.lookup(topic("t"), None, s.now).unwrap();
    s.c.cancel(op, s.now);
    assert_eq!(s.op_result(op).unwrap().unwrap_err().code, Code::Aborted);
    s.online();
    assert!(s.requests().is_empty());
}

#[test]
fn given_an_aborted_connect_then_it_fails_aborted_and_the_attempt_is_dropped_with_a_bye() {
    let mut p = Pair::new(44, 45);
    let op = p.a.c.connect(p.b.peer(), "x", p.a.now).unwrap();
    p.a.drain();
    let h = match p.a.rtc.as_slice() {
        [RtcCommand::Create { handle, .. }, ..] => *handle,
        other => panic!("{other:?}"),
    };
    p.a.c.cancel(op, p.a.now);
    assert_eq!(p.a.op_result(op).unwrap().unwrap_err().code, Code::Aborted);
    assert!(p.a.rtc.contains(&RtcCommand::Close { handle: h }));
    assert!(connections(&p.a).is_empty());
    // A later connect starts afresh and works.
    let again = p.a.c.connect(p.b.peer(), "x", p.a.now).unwrap();
    p.a.drain();
    p.run();
    assert!(matches!(p.a.op_result(again), Some(Ok(OpResult::Connection(_)))));
}

#[test]
fn given_two_waiters_when_one_aborts_then_the_other_still_gets_the_connection() {
    let mut p = Pair::new(46, 47);
    let first = p.a.c.connect(p.b.peer(), "x", p.a.now).unwrap();
    let second = p.a.c.connect(p.b.peer(), "x", p.a.now).unwrap();
    p.a.c.cancel(first, p.a.now);
    p.a.drain();
    assert_eq!(p.a.op_result(first).unwrap().unwrap_err().code, Code::Aborted);
    p.run();
    assert!(matches!(p.a.op_result(second), Some(Ok(OpResult::Connection(_)))));
}

// ---- renegotiation (perfect negotiation) -------------------------------------------------------

/// An open connection between the pair: (a's handle, b's handle).
fn open_pair(p: &mut Pair) -> (Handle, Handle) {
    let op = p.a.c.connect(p.b.peer(), "x", p.a.now).unwrap();
    p.a.drain();
    p.run();
    let Some(Ok(OpResult::Connection(ha))) = p.a.op_result(op) else { panic!("{:?}", p.a.events) };
    let hb = p.b.c.peer_handles()[0];
    p.a.rtc_log.clear();
    p.b.rtc_log.clear();
    p.a.take_events();
    p.b.take_events();
    (ha, hb)
}

fn offers_applied(s: &Sim) -> Vec<String> {
    s.rtc_log
        .iter()
        .filter_map(|c| if let RtcCommand::ApplyOffer { sdp, .. } = c { Some(sdp.clone()) } else { None })
        .collect()
}

fn count(s: &Sim, f: impl Fn(&RtcCommand) -> bool) -> usize {
    s.rtc_log.iter().filter(|c| f(c)).count()
}

fn assert_settled(p: &Pair, ha: Handle, hb: Handle) {
    assert_eq!(p.a.c.negotiation_stable(ha), Some(true), "a is not stable: {:?}", p.a.rtc_log);
    assert_eq!(p.b.c.negotiation_stable(hb), Some(true), "b is not stable: {:?}", p.b.rtc_log);
    for s in [&p.a, &p.b] {
        assert!(!s.events.iter().any(|e| matches!(e, Event::PeerClosed { .. })), "closed: {:?}", s.events);
        assert_eq!(s.c.peer_handles().len(), 1);
        assert!(!s.rtc_log.iter().any(|c| matches!(c, RtcCommand::Close { .. } | RtcCommand::Create { .. })));
    }
}

#[test]
fn given_an_open_connection_when_either_side_adds_a_track_then_it_renegotiates_in_place() {
    for responder_adds in [false, true] {
        let mut p = Pair::new(50, 51);
        let (ha, hb) = open_pair(&mut p);
        if responder_adds {
            p.b.c.rtc_negotiation_needed(hb, p.b.now);
            p.b.drain();
        } else {
            p.a.c.rtc_negotiation_needed(ha, p.a.now);
            p.a.drain();
        }
        p.run();
        let (offerer, answerer) = if responder_adds { (&p.b, &p.a) } else { (&p.a, &p.b) };
        assert_eq!(count(offerer, |c| matches!(c, RtcCommand::CreateOffer { ice_restart: false, .. })), 1);
        assert_eq!(offers_applied(answerer), vec!["offer restart=false".to_string()]);
        assert_eq!(count(offerer, |c| matches!(c, RtcCommand::ApplyAnswer { .. })), 1);
        assert_settled(&p, ha, hb);
    }
}

#[test]
fn given_negotiation_needed_before_the_channel_opens_then_the_first_offer_covers_it() {
    let mut p = Pair::new(52, 53);
    let op = p.a.c.connect(p.b.peer(), "x", p.a.now).unwrap();
    p.a.drain();
    let h = p.a.c.peer_handles()[0];
    p.a.c.rtc_negotiation_needed(h, p.a.now);
    p.a.drain();
    p.run();
    assert!(matches!(p.a.op_result(op), Some(Ok(OpResult::Connection(_)))));
    assert_eq!(count(&p.a, |c| matches!(c, RtcCommand::CreateOffer { .. })), 1);
}

#[test]
fn given_both_sides_add_a_track_at_once_then_the_polite_side_rolls_back_and_both_offers_complete() {
    // Both seed orders, so each side is polite once.
    for (sa, sb) in [(54, 55), (55, 54)] {
        let mut p = Pair::new(sa, sb);
        let (ha, hb) = open_pair(&mut p);
        p.a.c.rtc_negotiation_needed(ha, p.a.now);
        p.b.c.rtc_negotiation_needed(hb, p.b.now);
        p.a.drain();
        p.b.drain();
        // Both offers are made before either arrives (the step runs each side's WebRTC first).
        let a_offer = p.a.rtc.clone();
        let b_offer = p.b.rtc.clone();
        assert!(matches!(a_offer.as_slice(), [RtcCommand::CreateOffer { .. }]));
        assert!(matches!(b_offer.as_slice(), [RtcCommand::CreateOffer { .. }]));
        p.run();
        let a_polite = p.a.peer() > p.b.peer();
        let (polite, impolite) = if a_polite { (&p.a, &p.b) } else { (&p.b, &p.a) };
        // The impolite side never applied the colliding offer; the polite side answered it and then
        // made its own offer again, which the impolite side answered.
        assert_eq!(count(polite, |c| matches!(c, RtcCommand::CreateOffer { .. })), 2, "{:?}", polite.rtc_log);
        assert_eq!(offers_applied(polite).len(), 1);
        assert_eq!(offers_applied(impolite).len(), 1);
        assert_eq!(count(impolite, |c| matches!(c, RtcCommand::ApplyAnswer { .. })), 1);
        assert_eq!(count(polite, |c| matches!(c, RtcCommand::ApplyAnswer { .. })), 1);
        assert_settled(&p, ha, hb);
    }
}

#[test]
fn given_a_polite_offer_still_being_made_when_the_other_offer_arrives_then_it_is_discarded() {
    for (sa, sb) in [(56, 57), (57, 56)] {
        let mut p = Pair::new(sa, sb);
        let (ha, hb) = open_pair(&mut p);
        let (polite, impolite, hp, hi) =
            if p.a.peer() > p.b.peer() { (&mut p.a, &mut p.b, ha, hb) } else { (&mut p.b, &mut p.a, hb, ha) };
        // The polite side asked the browser for an offer, which has not reported yet...
        polite.c.rtc_negotiation_needed(hp, polite.now);
        polite.drain();
        let pending = core::mem::take(&mut polite.rtc);
        // ...when the impolite side's offer arrives and is applied (rolling back).
        impolite.c.rtc_negotiation_needed(hi, impolite.now);
        impolite.drain();
        Pair::step(impolite, polite); // makes the offer
        Pair::step(impolite, polite); // delivers it
        assert!(
            matches!(polite.rtc.first(), Some(RtcCommand::ApplyOffer { .. })),
            "the polite side applies the other offer: {:?}",
            polite.rtc
        );
        // Now the browser reports the rolled-back offer: it is not sent.
        assert!(matches!(pending.as_slice(), [RtcCommand::CreateOffer { .. }]));
        polite.c.rtc_local_description(hp, SdpKind::Offer, "stale offer".into(), polite.now);
        polite.drain();
        let sent: Vec<PeerMessage> = polite
            .requests()
            .into_iter()
            .filter_map(|(_, b)| match b {
                RequestBody::Signal { payload, .. } => Some(PeerSignal::decode(payload).unwrap().message),
                _ => None,
            })
            .collect();
        assert!(
            !sent.iter().any(|m| matches!(m, PeerMessage::Offer { sdp, .. } if sdp == "stale offer")),
            "{sent:?}"
        );
        p.run();
        assert_settled(&p, ha, hb);
    }
}

#[test]
fn given_a_renegotiation_during_an_ice_restart_then_both_complete() {
    for (sa, sb) in [(58, 59), (59, 58)] {
        let mut p = Pair::new(sa, sb);
        let (ha, hb) = open_pair(&mut p);
        // ICE fails on the initiator: it makes an ICE-restart offer; at the same moment the
        // responder adds a track.
        p.a.c.rtc_ice_failed(ha, p.a.now);
        p.b.c.rtc_negotiation_needed(hb, p.b.now);
        p.a.drain();
        p.b.drain();
        p.run();
        // The responder applied the restart offer (at once, or after the polite initiator rolled
        // it back and made it again), and the initiator applied the responder's offer.
        assert!(offers_applied(&p.b).contains(&"offer restart=true".to_string()), "{:?}", p.b.rtc_log);
        assert!(offers_applied(&p.a).contains(&"offer restart=false".to_string()), "{:?}", p.a.rtc_log);
        assert_settled(&p, ha, hb);
        // ICE is back: nothing closes the connection afterwards.
        p.a.c.rtc_ice_connected(ha, p.a.now);
        p.b.c.rtc_ice_connected(hb, p.b.now);
        p.a.advance(20_000);
        p.b.advance(20_000);
        assert!(p.a.c.session_peer(ha).is_some() && p.b.c.session_peer(hb).is_some());
    }
}

#[test]
fn given_many_renegotiations_from_both_sides_then_every_one_completes() {
    let mut p = Pair::new(60, 61);
    let (ha, hb) = open_pair(&mut p);
    let mut rng = crate::core::backoff::Rng::new(5);
    for _ in 0..50 {
        match rng.next_u64() % 3 {
            0 => p.a.c.rtc_negotiation_needed(ha, p.a.now),
            1 => p.b.c.rtc_negotiation_needed(hb, p.b.now),
            _ => {
                p.a.c.rtc_negotiation_needed(ha, p.a.now);
                p.b.c.rtc_negotiation_needed(hb, p.b.now);
            }
        }
        p.a.drain();
        p.b.drain();
        if rng.next_u64().is_multiple_of(2) {
            p.run();
        } else {
            Pair::step(&mut p.a, &mut p.b);
        }
    }
    p.run();
    assert_settled(&p, ha, hb);
    let answers = count(&p.a, |c| matches!(c, RtcCommand::ApplyAnswer { .. }))
        + count(&p.b, |c| matches!(c, RtcCommand::ApplyAnswer { .. }));
    let offers = offers_applied(&p.a).len() + offers_applied(&p.b).len();
    assert_eq!(answers, offers, "every applied offer was answered and the answer applied");
}

#[test]
fn given_trickled_candidates_then_they_ask_for_failures_only_and_a_failure_still_reaches_the_session() {
    let mut s = Sim::new(42, &SERVERS[..1]);
    s.authenticate(Limits::default());
    let peer = Identity::from_seed([77; 32]).peer_id();
    s.c.connect(peer, "x", s.now).unwrap();
    s.drain();
    let Some(handle) = std::mem::take(&mut s.rtc).into_iter().find_map(|c| match c {
        RtcCommand::CreateOffer { handle, .. } => Some(handle),
        _ => None,
    }) else {
        panic!("no offer made")
    };
    s.c.rtc_local_description(handle, SdpKind::Offer, "offer".into(), s.now);
    for i in 0..3 {
        let c = Candidate { candidate: format!("c{i}"), ..Default::default() };
        s.c.rtc_local_candidate(handle, c, s.now);
    }
    s.drain();
    let reqs = s.requests();
    let acks: Vec<signal_mesh_proto::AckMode> = reqs
        .iter()
        .map(|(_, body)| match body {
            RequestBody::Signal { ack, .. } => *ack,
            other => panic!("{other:?}"),
        })
        .collect();
    use signal_mesh_proto::AckMode::{Always, FailuresOnly};
    assert_eq!(acks, vec![Always, FailuresOnly, FailuresOnly, FailuresOnly]);
    // An old node acknowledges them anyway: ignored. Nothing times out for the silent ones.
    s.respond(reqs[0].0, ResponseBody::Ok);
    s.respond(reqs[1].0, ResponseBody::Ok);
    s.advance(60_000);
    assert!(s.take_events().iter().all(|e| !matches!(e, Event::Error(_))));
    // A failure of one candidate still reaches its session, by request id.
    let mut s2 = Sim::new(43, &SERVERS[..1]);
    s2.authenticate(Limits::default());
    s2.c.connect(peer, "x", s2.now).unwrap();
    s2.drain();
    let handle = std::mem::take(&mut s2.rtc)
        .into_iter()
        .find_map(|c| match c {
            RtcCommand::CreateOffer { handle, .. } => Some(handle),
            _ => None,
        })
        .unwrap();
    s2.c.rtc_local_description(handle, SdpKind::Offer, "offer".into(), s2.now);
    s2.c.rtc_local_candidate(handle, Candidate { candidate: "c".into(), ..Default::default() }, s2.now);
    s2.drain();
    let reqs = s2.requests();
    assert_eq!(s2.c.peer_handles().len(), 1);
    let gone = ResponseBody::Error { code: ErrorCode::PeerNotFound, message: "gone".into() };
    s2.respond(reqs[1].0, gone);
    assert!(s2.c.peer_handles().is_empty(), "PEER_NOT_FOUND for a candidate ends the session");
}
