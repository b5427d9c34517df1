//! The engine in a real browser (`scripts/test-wasm.sh`: headless Chromium through
//! wasm-bindgen-test-runner and chromedriver), against a real node that script starts: each test
//! plays the facade with a small driver of its own (a WebSocket, the clock, Ed25519 signing with
//! the reference implementation, a fake WebRTC stack). The real facade (`js/index.js`) is covered
//! by the browser tests in `tests/browser`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::RefCell;
use std::rc::Rc;
use std::{vec, vec::Vec};

use js_sys::{ArrayBuffer, Promise, Uint8Array};
use signal_mesh_proto::auth::Identity;
use wasm_bindgen::JsCast;
use wasm_bindgen::closure::Closure;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};
use web_sys::{BinaryType, CloseEvent, MessageEvent, WebSocket};

use super::Engine;
use super::out::IDLE;
use super::out::read::{Out, read};

wasm_bindgen_test_configure!(run_in_browser);

fn now() -> f64 {
    js_sys::Date::now()
}

async fn sleep(ms: i32) {
    let p = Promise::new(&mut |resolve, _| {
        web_sys::window()
            .unwrap()
            .set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms)
            .unwrap();
    });
    JsFuture::from(p).await.unwrap();
}

/// What the socket reported: a frame, or its close code.
type Inbox = Rc<RefCell<Vec<(u32, Result<Vec<u8>, u16>)>>>;

struct Socket {
    conn: u32,
    ws: WebSocket,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_close: Closure<dyn FnMut(CloseEvent)>,
}

impl Drop for Socket {
    fn drop(&mut self) {
        self.ws.set_onmessage(None);
        self.ws.set_onclose(None);
        let _ = self.ws.close_with_code(1000);
    }
}

/// One engine and the test's facade.
struct Page {
    e: Engine,
    id: Identity,
    inbox: Inbox,
    socket: Option<Socket>,
    /// Outputs the driver does not carry out itself (events, settled operations).
    seen: Vec<Out>,
    /// When the engine wants `tick` (a `Date.now()` time).
    timer: Option<f64>,
}

impl Page {
    fn new(servers: &str, seed: u8, connect_timeout_ms: u32) -> Page {
        let id = Identity::from_seed([seed; 32]);
        let config = [id.peer_id().as_bytes().as_slice(), &[seed; 8], servers.as_bytes()].concat();
        let e = Engine::new(now(), &config, connect_timeout_ms);
        Page { e, id, inbox: Rc::default(), socket: None, seen: vec![], timer: None }
    }

    fn open(&mut self, conn: u32, url: &str) {
        self.socket = None;
        let Ok(ws) = WebSocket::new(url) else {
            self.e.closed(now(), conn, 0);
            return;
        };
        ws.set_binary_type(BinaryType::Arraybuffer);
        let inbox = self.inbox.clone();
        let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |m: MessageEvent| {
            if let Ok(b) = m.data().dyn_into::<ArrayBuffer>() {
                inbox.borrow_mut().push((conn, Ok(Uint8Array::new(&b).to_vec())));
            }
        });
        let inbox = self.inbox.clone();
        let on_close = Closure::<dyn FnMut(CloseEvent)>::new(move |c: CloseEvent| {
            inbox.borrow_mut().push((conn, Err(c.code())));
        });
        ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        self.socket = Some(Socket { conn, ws, _on_message: on_message, _on_close: on_close });
    }

    /// Feeds what happened since the last step, runs the timer when due, carries out the outputs.
    fn step(&mut self) {
        let inbox = core::mem::take(&mut *self.inbox.borrow_mut());
        for (conn, what) in inbox {
            match what {
                Ok(frame) => self.e.frame(now(), conn, &frame),
                Err(code) => self.e.closed(now(), conn, code.into()),
            }
        }
        if self.timer.is_some_and(|at| at <= now()) {
            self.e.tick(now());
        }
        let report = |e: &mut Engine, h: u64, kind: u32, n: f64, a: &str| {
            e.report(now(), h as u32, kind, n, a.as_bytes());
        };
        loop {
            let o = read(&self.e.poll());
            let (n, conn) = (o.n[0], o.n[0] as u32);
            match o.kind {
                IDLE => {
                    self.timer = n.checked_sub(1).map(|t| t as f64);
                    break;
                }
                0 => self.open(conn, o.s(0)),
                1 => {
                    if self.socket.as_ref().is_some_and(|s| s.conn == conn) {
                        self.socket = None;
                    }
                }
                2 => {
                    if let Some(s) = self.socket.as_ref().filter(|s| s.conn == conn) {
                        let _ = s.ws.send_with_u8_array(&o.b[0]);
                    }
                }
                3 => {
                    let signature = self.id.sign(&o.b[0]);
                    self.e.signed(now(), conn, &signature);
                }
                // The fake WebRTC stack: descriptions at once, the channel open once applied.
                5 => report(&mut self.e, n, 0, 1.0, "v=0 offer"),
                6 => {
                    report(&mut self.e, n, 0, 0.0, "v=0 answer");
                    report(&mut self.e, n, 2, 0.0, "");
                }
                7 => report(&mut self.e, n, 2, 0.0, ""),
                4 | 8 | 9 => {}
                19 => self.e.decide(now(), conn, true),
                _ => self.seen.push(o),
            }
        }
    }

    /// Steps every 20 ms (up to `ms`) until `f` finds something in what this page saw.
    async fn until<T>(pages: &mut [&mut Page], ms: u32, mut f: impl FnMut(&[&mut Page]) -> Option<T>) -> T {
        for _ in 0..ms / 20 {
            for p in pages.iter_mut() {
                p.step();
            }
            if let Some(v) = f(pages) {
                return v;
            }
            sleep(20).await;
        }
        panic!("timed out");
    }

    fn find(&self, kind: u64) -> Option<&Out> {
        self.seen.iter().find(|o| o.kind == kind)
    }
}

#[wasm_bindgen_test]
async fn an_engine_without_a_reachable_node_fails_to_start_with_timeout() {
    let before = Engine::live();
    let mut p = Page::new("ws://127.0.0.1:9/signal", 3, 1500);
    assert_eq!(Engine::live(), before + 1);
    let err = Page::until(&mut [&mut p], 5000, |p| p[0].find(12).cloned()).await;
    assert_eq!(err.s(0), "TIMEOUT");
    assert!(p.find(11).is_none());
    drop(p);
    assert_eq!(Engine::live(), before);
}

/// Against a real node when `scripts/test-wasm.sh` started one (`SIGNAL_MESH_TEST_NODE` at build
/// time): two engines authenticate (Ed25519 signatures the node verifies), one connects to the
/// other through signals relayed by the node, and an unknown peer is `PEER_NOT_FOUND`.
#[wasm_bindgen_test]
async fn two_engines_connect_through_a_real_node() {
    // Not skipped when the node is missing: a test that passes without its node proves nothing.
    let Some(url) = option_env!("SIGNAL_MESH_TEST_NODE") else {
        panic!("SIGNAL_MESH_TEST_NODE is unset: run this test through scripts/test-wasm.sh")
    };
    let mut a = Page::new(url, 11, 10_000);
    let mut b = Page::new(url, 12, 10_000);
    Page::until(&mut [&mut a, &mut b], 10_000, |p| {
        (p[0].find(11).is_some() && p[1].find(11).is_some()).then_some(())
    })
    .await;
    let op = a.e.connect(now(), &[b.id.peer_id().as_bytes().as_slice(), b"t"].concat());
    assert!(op >= 1.0);
    let done = Page::until(&mut [&mut a, &mut b], 10_000, |p| {
        p[0].seen.iter().find(|o| (o.kind == 15 || o.kind == 16) && o.n[0] == op as u64).cloned()
    })
    .await;
    assert_eq!(done.kind, 15, "connect failed: {done:?}");
    assert_eq!(done.b[0], b.id.peer_id().as_bytes());
    let incoming = Page::until(&mut [&mut a, &mut b], 5000, |p| p[1].find(20).cloned()).await;
    assert_eq!(incoming.b[0], a.id.peer_id().as_bytes());
    // An unknown peer is PEER_NOT_FOUND, not a timeout.
    let op = a.e.connect(now(), &[[0x5a; 32].as_slice(), b"t"].concat());
    let failed = Page::until(&mut [&mut a], 5000, |p| {
        p[0].seen.iter().find(|o| o.kind == 16 && o.n[0] == op as u64).cloned()
    })
    .await;
    assert_eq!(failed.s(0), "PEER_NOT_FOUND");
    a.e.close(now());
    b.e.close(now());
    a.step();
    b.step();
}
