//! The shell's pieces in a real browser (`scripts/test-wasm.sh`: headless Chromium through
//! wasm-bindgen-test-runner and chromedriver).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use alloc::rc::Rc;
use core::cell::RefCell;

use js_sys::Promise;
use signal_mesh_proto::auth;
use wasm_bindgen::JsValue;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

use super::host::Host;
use super::socket::{Socket, SocketEvent};
use super::timer::Timeout;
use super::{Driver, Options};
use crate::core::{Handle, SdpKind};

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
        Host::new(noop.clone(), noop.clone(), sign, noop),
    );
    assert_eq!(d.peer_id(), auth::Identity::from_seed([3; 32]).peer_id().to_hex());
    let err = JsFuture::from(d.started()).await.unwrap_err();
    let code = js_sys::Reflect::get(&err, &"code".into()).unwrap().as_string();
    assert_eq!(code.as_deref(), Some("TIMEOUT"));
    assert_eq!(d.state(), "closed");
}

type Commands = Rc<RefCell<Vec<(u32, u32)>>>;
type RtcRecorder = (
    js_sys::Function,
    Commands,
    wasm_bindgen::closure::Closure<dyn FnMut(JsValue, JsValue, JsValue, JsValue, JsValue, JsValue)>,
);

/// A fake `rtc(kind, handle, ...)` callback that records (kind, handle); the test plays the browser.
fn rtc_recorder() -> RtcRecorder {
    use wasm_bindgen::JsCast;
    let log: Commands = Rc::new(RefCell::new(Vec::new()));
    let l = log.clone();
    let c = wasm_bindgen::closure::Closure::<dyn FnMut(JsValue, JsValue, JsValue, JsValue, JsValue, JsValue)>::new(
        move |kind: JsValue, handle: JsValue, _a, _b, _c, _d| {
            let n = |v: &JsValue| v.as_f64().unwrap_or(-1.0) as u32;
            l.borrow_mut().push((n(&kind), n(&handle)));
        },
    );
    (c.as_ref().unchecked_ref::<js_sys::Function>().clone(), log, c)
}

/// Plays a browser that makes descriptions at once and opens the channel once they are applied.
fn play(d: &Driver, log: &Commands) {
    let commands: Vec<(u32, u32)> = core::mem::take(&mut *log.borrow_mut());
    for (kind, h) in commands {
        let h = Handle::from_raw(h);
        d.with_core(|c, now| match kind {
            1 => c.rtc_local_description(h, SdpKind::Offer, "v=0 offer".into(), now),
            2 => {
                c.rtc_local_description(h, SdpKind::Answer, "v=0 answer".into(), now);
                c.rtc_channel_open(h, now);
            }
            3 => c.rtc_channel_open(h, now),
            _ => {}
        });
    }
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
/// time): two drivers authenticate (Ed25519 signatures the node verifies), one connects to the
/// other through signals relayed by the node (the WebRTC side is played by the test: the facade
/// drives the real `RTCPeerConnection`s, covered by the browser tests), and an unknown peer is
/// `PEER_NOT_FOUND`.
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
    let (rtc_a, cmds_a, _keep_ra) = rtc_recorder();
    let (rtc_b, cmds_b, _keep_rb) = rtc_recorder();
    let a = Driver::start(
        options(vec![url.to_owned()], 11, 10_000),
        Host::new(emit_a, accept.clone(), sign_a, rtc_a),
    );
    let b =
        Driver::start(options(vec![url.to_owned()], 12, 10_000), Host::new(emit_b, accept, sign_b, rtc_b));
    JsFuture::from(a.started()).await.unwrap();
    JsFuture::from(b.started()).await.unwrap();
    assert_eq!((a.state(), b.state()), ("online", "online"));
    let peer_b = signal_mesh_proto::PeerId::from_hex(&b.peer_id()).unwrap();
    let done = Rc::new(RefCell::new(None));
    let d = done.clone();
    let p = a.op(super::host::OpKind::Connection, |c, now| c.connect(peer_b, "t", now));
    wasm_bindgen_futures::spawn_local(async move {
        *d.borrow_mut() = Some(JsFuture::from(p).await);
    });
    let conn = until(10_000, || {
        play(&a, &cmds_a);
        play(&b, &cmds_b);
        done.borrow_mut().take()
    })
    .await
    .unwrap();
    let peer = js_sys::Reflect::get(&conn, &"peerId".into()).unwrap().as_string();
    assert_eq!(peer, Some(b.peer_id()));
    until(5000, || log_b.borrow().iter().any(|k| k == "connection").then_some(())).await;
    assert!(log_a.borrow().iter().any(|k| k == "statechange"));
    // An unknown peer is PEER_NOT_FOUND, not a timeout.
    let nobody = signal_mesh_proto::PeerId::from_array([0x5a; 32]);
    let p = a.op(super::host::OpKind::Connection, |c, now| c.connect(nobody, "t", now));
    play(&a, &cmds_a);
    let err = JsFuture::from(p).await.unwrap_err();
    let code = js_sys::Reflect::get(&err, &"code".into()).unwrap().as_string();
    assert_eq!(code.as_deref(), Some("PEER_NOT_FOUND"));
    a.with_core(|c, now| c.close(now));
    b.with_core(|c, now| c.close(now));
}
