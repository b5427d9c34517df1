//! The shell's pieces in a real browser (`scripts/test-wasm.sh`: headless Chromium through
//! wasm-bindgen-test-runner and chromedriver).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::Promise;
use signal_mesh_proto::auth;
use wasm_bindgen::JsValue;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

use super::host::Host;
use super::rtc::{Rtc, RtcReport};
use super::socket::{Socket, SocketEvent};
use super::timer::Timeout;
use super::{Driver, Options};
use crate::core::{Candidate, Handle, RtcCommand};

wasm_bindgen_test_configure!(run_in_browser);

async fn sleep(ms: u64) {
    let mut keep = None;
    let p = Promise::new(&mut |resolve, _| {
        keep = Some(Timeout::new(ms, move || {
            let _ = resolve.call0(&JsValue::NULL);
        }));
    });
    JsFuture::from(p).await.unwrap();
    drop(keep);
}

/// Waits (up to `ms`) until `f` finds something.
async fn until<T>(ms: u64, mut f: impl FnMut() -> Option<T>) -> T {
    for _ in 0..ms / 20 {
        if let Some(v) = f() {
            return v;
        }
        sleep(20).await;
    }
    panic!("timed out");
}

/// A `sign(message)` callback signing with the reference Ed25519 implementation (the facade signs
/// with WebCrypto; `tests/browser/tests/client-review.test.mjs` checks it against Node's Ed25519).
fn signer(
    seed: [u8; 32],
) -> (js_sys::Function, wasm_bindgen::closure::Closure<dyn FnMut(JsValue) -> JsValue>) {
    use wasm_bindgen::JsCast;
    let id = auth::Identity::from_seed(seed);
    let c = wasm_bindgen::closure::Closure::<dyn FnMut(JsValue) -> JsValue>::new(move |m: JsValue| {
        let msg = js_sys::Uint8Array::new(&m).to_vec();
        Promise::resolve(&js_sys::Uint8Array::from(id.sign(&msg).as_slice())).into()
    });
    (c.as_ref().unchecked_ref::<js_sys::Function>().clone(), c)
}

fn options(servers: Vec<String>, seed: u8, connect_timeout_ms: u64) -> Options {
    Options {
        servers,
        peer_id: auth::Identity::from_seed([seed; 32]).peer_id(),
        entropy: u64::from(seed),
        ice_servers: JsValue::UNDEFINED,
        connect_timeout_ms: Some(connect_timeout_ms),
    }
}

#[wasm_bindgen_test]
async fn a_timer_fires_once_and_a_dropped_timer_never() {
    let fired = Rc::new(RefCell::new(0));
    let f = fired.clone();
    let _kept = Timeout::new(10, move || *f.borrow_mut() += 1);
    let f = fired.clone();
    drop(Timeout::new(10, move || *f.borrow_mut() += 100));
    sleep(80).await;
    assert_eq!(*fired.borrow(), 1);
}

#[wasm_bindgen_test]
async fn a_socket_to_a_closed_port_reports_closed() {
    let events = Rc::new(RefCell::new(Vec::new()));
    let e = events.clone();
    let _s = Socket::open("ws://127.0.0.1:9/signal", move |ev| e.borrow_mut().push(ev)).unwrap();
    let code = until(5000, || {
        events.borrow().iter().find_map(|e| if let SocketEvent::Closed(c) = e { Some(*c) } else { None })
    })
    .await;
    assert_eq!(code, 1006);
    assert!(Socket::open("ftp://example/", |_| {}).is_err());
}

#[wasm_bindgen_test]
async fn a_driver_without_a_reachable_node_rejects_start_with_timeout() {
    let noop = js_sys::Function::new_no_args("");
    let (sign, _keep) = signer([3; 32]);
    let d = Driver::start(
        options(vec!["ws://127.0.0.1:9/signal".into()], 3, 1500),
        Host::new(noop.clone(), noop, sign),
    );
    assert_eq!(d.peer_id(), auth::Identity::from_seed([3; 32]).peer_id().to_hex());
    let err = JsFuture::from(d.started()).await.unwrap_err();
    let code = js_sys::Reflect::get(&err, &"code".into()).unwrap().as_string();
    assert_eq!(code.as_deref(), Some("TIMEOUT"));
    assert_eq!(d.state(), "closed");
}

type Log = Rc<RefCell<Vec<RtcReport>>>;

fn rtc(initiator: bool) -> (Rtc, Log) {
    let log: Log = Rc::new(RefCell::new(Vec::new()));
    let l = log.clone();
    (Rtc::new(&JsValue::UNDEFINED, initiator, "test", move |r| l.borrow_mut().push(r)).unwrap(), log)
}

fn take_description(log: &Log) -> Option<String> {
    let mut log = log.borrow_mut();
    let i = log.iter().position(|r| matches!(r, RtcReport::LocalDescription(..)))?;
    match log.remove(i) {
        RtcReport::LocalDescription(_, sdp) => Some(sdp),
        _ => None,
    }
}

fn take_candidates(log: &Log) -> Vec<Candidate> {
    let mut out = Vec::new();
    log.borrow_mut().retain(|r| match r {
        RtcReport::LocalCandidate(c) => {
            out.push(c.clone());
            false
        }
        _ => true,
    });
    out
}

fn opened(log: &Log) -> bool {
    log.borrow().iter().any(|r| matches!(r, RtcReport::ChannelOpen))
}

#[wasm_bindgen_test]
async fn two_peer_connections_negotiate_an_open_channel_through_commands() {
    let (a, la) = rtc(true);
    let (b, lb) = rtc(false);
    a.enqueue(RtcCommand::CreateOffer { handle: Handle::from_raw(1), ice_restart: false });
    let offer = until(5000, || take_description(&la)).await;
    assert!(offer.starts_with("v=0"));
    b.enqueue(RtcCommand::ApplyOffer { handle: Handle::from_raw(2), sdp: offer });
    let answer = until(5000, || take_description(&lb)).await;
    a.enqueue(RtcCommand::ApplyAnswer { handle: Handle::from_raw(1), sdp: answer });
    until(10_000, || {
        for candidate in take_candidates(&la) {
            b.enqueue(RtcCommand::AddCandidate { handle: Handle::from_raw(2), candidate });
        }
        for candidate in take_candidates(&lb) {
            a.enqueue(RtcCommand::AddCandidate { handle: Handle::from_raw(1), candidate });
        }
        (opened(&la) && opened(&lb)).then_some(())
    })
    .await;
    let (ca, cb) = (a.channel().unwrap(), b.channel().unwrap());
    assert_eq!(cb.label(), "test");

    // Closing one side is seen on the other.
    drop(a);
    assert_ne!(ca.ready_state(), web_sys::RtcDataChannelState::Open);
    until(10_000, || lb.borrow().iter().any(|r| matches!(r, RtcReport::Closed(_))).then_some(())).await;
    drop(b);
    assert_ne!(cb.ready_state(), web_sys::RtcDataChannelState::Open);
}

type Recorder =
    (js_sys::Function, Rc<RefCell<Vec<String>>>, wasm_bindgen::closure::Closure<dyn FnMut(JsValue, JsValue)>);

/// A JavaScript function that records `emit(type, detail)` calls; keep the closure alive.
fn recorder() -> Recorder {
    use wasm_bindgen::JsCast;
    let log = Rc::new(RefCell::new(Vec::new()));
    let l = log.clone();
    let c =
        wasm_bindgen::closure::Closure::<dyn FnMut(JsValue, JsValue)>::new(move |kind: JsValue, _detail| {
            l.borrow_mut().push(kind.as_string().unwrap_or_default());
        });
    (c.as_ref().unchecked_ref::<js_sys::Function>().clone(), log, c)
}

/// Against a real node when `scripts/test-wasm.sh` started one (`SIGNAL_MESH_TEST_NODE` at build
/// time): two drivers authenticate (WebCrypto signatures the node verifies), one connects to the
/// other through signals, and the data channel opens.
#[wasm_bindgen_test]
async fn two_drivers_connect_through_a_real_node() {
    // Not skipped when the node is missing: a test that passes without its node proves nothing.
    let Some(url) = option_env!("SIGNAL_MESH_TEST_NODE") else {
        panic!("SIGNAL_MESH_TEST_NODE is unset: run this test through scripts/test-wasm.sh")
    };
    let accept = js_sys::Function::new_with_args("peer", "return true");
    let (emit_a, log_a, _keep_a) = recorder();
    let (emit_b, log_b, _keep_b) = recorder();
    let (sign_a, _keep_sa) = signer([11; 32]);
    let (sign_b, _keep_sb) = signer([12; 32]);
    let a =
        Driver::start(options(vec![url.to_owned()], 11, 10_000), Host::new(emit_a, accept.clone(), sign_a));
    let b = Driver::start(options(vec![url.to_owned()], 12, 10_000), Host::new(emit_b, accept, sign_b));
    JsFuture::from(a.started()).await.unwrap();
    JsFuture::from(b.started()).await.unwrap();
    assert_eq!((a.state(), b.state()), ("online", "online"));
    let peer_b = signal_mesh_proto::PeerId::from_hex(&b.peer_id()).unwrap();
    let conn = JsFuture::from(a.op(super::host::OpKind::Connection, |c, now| c.connect(peer_b, "t", now)))
        .await
        .unwrap();
    let channel: web_sys::RtcDataChannel =
        wasm_bindgen::JsCast::unchecked_into(js_sys::Reflect::get(&conn, &"channel".into()).unwrap());
    assert_eq!(channel.ready_state(), web_sys::RtcDataChannelState::Open);
    until(5000, || log_b.borrow().iter().any(|k| k == "connection").then_some(())).await;
    assert!(log_a.borrow().iter().any(|k| k == "statechange"));
    // An unknown peer is PEER_NOT_FOUND, not a timeout.
    let nobody = signal_mesh_proto::PeerId::from_array([0x5a; 32]);
    let err = JsFuture::from(a.op(super::host::OpKind::Connection, |c, now| c.connect(nobody, "t", now)))
        .await
        .unwrap_err();
    let code = js_sys::Reflect::get(&err, &"code".into()).unwrap().as_string();
    assert_eq!(code.as_deref(), Some("PEER_NOT_FOUND"));
    a.with_core(|c, now| c.close(now));
    b.with_core(|c, now| c.close(now));
}
