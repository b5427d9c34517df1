//! The browser shell: drives the sans-IO [`crate::core::Client`] with real WebSockets, timers,
//! WebCrypto and `RTCPeerConnection`s. It decides nothing: every input goes to the core, every
//! output of the core is carried out here.
//!
//! Run loop: an input is fed to the core under a short `RefCell` borrow; then [`Driver::pump`]
//! drains the outputs one by one and carries each out *without* holding the borrow (application
//! listeners run inside `dispatchEvent` and may call back into the client); finally the single
//! timer is re-armed for [`crate::core::Client::poll_timeout`].
//!
//! # Layout
//! - `socket`: one WebSocket with owned listeners. `timer`: one owned `setTimeout`.
//! - `host`: how results reach JavaScript (promises, events, the `onIncoming` hook, signing,
//!   WebRTC commands).
//!
//! Two jobs live in the JavaScript facade, where they cost far fewer bytes than Rust calling the
//! same browser APIs through web-sys: the identity (an Ed25519 key in WebCrypto; the engine gets
//! the public key and a `sign(message)` callback) and the `RTCPeerConnection`s (the engine sends
//! each `RtcCommand` to an `rtc(...)` callback and the facade reports back through
//! `WasmClient::rtc_report`).

pub mod host;
pub mod socket;
pub mod timer;

#[cfg(test)]
mod tests;

use alloc::rc::{Rc, Weak};
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;
use wasm_bindgen::JsValue;

use crate::core::{Client, ClientError, Config, ConnId, Event, Handle, Millis, OpId, Output};
use host::{Host, OpKind};
use socket::{Socket, SocketEvent};
use timer::Timeout;

/// Milliseconds on the wall clock (the core only compares them).
pub fn now() -> Millis {
    js_sys::Date::now() as Millis
}

/// Options of [`Driver::start`], parsed from JavaScript by the bindings.
#[derive(Debug)]
pub struct Options {
    /// Node URLs.
    pub servers: Vec<String>,
    /// The public key the facade's `sign` callback signs for.
    pub peer_id: signal_mesh_proto::PeerId,
    /// Random bits from `crypto.getRandomValues` for the core's seed (jitter, session ids).
    pub entropy: u64,
    /// The peer connect timeout (and the start deadline).
    pub connect_timeout_ms: Option<u64>,
}

/// Engines alive (started and not yet dropped), for the test that `close()` frees them.
static LIVE: AtomicU32 = AtomicU32::new(0);

/// How many clients' engines are alive.
pub fn live_engines() -> u32 {
    LIVE.load(Ordering::Relaxed)
}

struct Inner {
    core: Client,
    /// The operation [`Driver::op`] started last (for `AbortSignal`s).
    last_op: Option<OpId>,
    socket: Option<(ConnId, Socket)>,
    timer: Option<(Millis, Timeout)>,
    host: Host,
}

impl Drop for Inner {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A running client. Cloning gives another handle to the same client.
#[derive(Clone)]
pub struct Driver {
    inner: Rc<RefCell<Inner>>,
}

impl core::fmt::Debug for Driver {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Driver").finish_non_exhaustive()
    }
}

impl Driver {
    /// Starts connecting. The returned driver is not yet online: wait for [`Driver::started`].
    pub fn start(options: Options, host: Host) -> Driver {
        let mut config = Config::new(options.servers, options.peer_id, options.entropy);
        if let Some(ms) = options.connect_timeout_ms {
            config.connect_timeout_ms = ms;
        }
        let core = Client::new(config, now());
        let inner = Inner { core, last_op: None, socket: None, timer: None, host };
        LIVE.fetch_add(1, Ordering::Relaxed);
        Driver { inner: Rc::new(RefCell::new(inner)) }
    }

    /// A promise that resolves when the client first authenticates (rejects if it cannot).
    pub fn started(&self) -> js_sys::Promise {
        let p = self.inner.borrow_mut().host.start_promise();
        self.pump();
        p
    }

    fn weak(&self) -> Weak<RefCell<Inner>> {
        Rc::downgrade(&self.inner)
    }

    fn from_weak(w: &Weak<RefCell<Inner>>) -> Option<Driver> {
        w.upgrade().map(|inner| Driver { inner })
    }

    /// Runs `f` on the core, then carries out what it produced.
    pub fn with_core<R>(&self, f: impl FnOnce(&mut Client, Millis) -> R) -> R {
        let r = {
            let mut inner = self.inner.borrow_mut();
            f(&mut inner.core, now())
        };
        self.pump();
        r
    }

    /// Starts an operation with `f` and returns its promise (rejected at once when `f` fails). The
    /// promise is registered before any output runs, so an operation that completes at once (say,
    /// `connect` to a peer already connected) still settles it.
    pub fn op(
        &self,
        kind: OpKind,
        f: impl FnOnce(&mut Client, Millis) -> Result<OpId, ClientError>,
    ) -> js_sys::Promise {
        let p = {
            let mut inner = self.inner.borrow_mut();
            match f(&mut inner.core, now()) {
                Ok(op) => {
                    inner.last_op = Some(op);
                    inner.host.op_promise(op, kind)
                }
                Err(e) => {
                    inner.last_op = None;
                    host::rejected(&e)
                }
            }
        };
        self.pump();
        p
    }

    /// The operation the last [`Driver::op`] call started, if it started one.
    pub fn last_op(&self) -> Option<OpId> {
        self.inner.borrow().last_op
    }

    /// The client's peer id, hex.
    pub fn peer_id(&self) -> String {
        self.inner.borrow().core.peer_id().to_hex()
    }

    /// The state, as JavaScript spells it.
    pub fn state(&self) -> &'static str {
        self.inner.borrow().core.state().as_str()
    }

    /// Carries out every pending output of the core, then re-arms the timer.
    // Not inlined: every `with_core` call site would get a copy (tens of KB of wasm).
    #[inline(never)]
    pub fn pump(&self) {
        loop {
            let out = self.inner.borrow_mut().core.poll_output();
            let Some(out) = out else { break };
            self.exec(out);
        }
        self.arm_timer();
    }

    // Not inlined: every `with_core` call site would get a copy (tens of KB of wasm).
    #[inline(never)]
    fn arm_timer(&self) {
        let mut inner = self.inner.borrow_mut();
        let Some(at) = inner.core.poll_timeout() else {
            inner.timer = None;
            return;
        };
        if inner.timer.as_ref().is_some_and(|(t, _)| *t == at) {
            return;
        }
        let weak = self.weak();
        let delay = at.saturating_sub(now());
        inner.timer = Some((
            at,
            Timeout::new(delay, move || {
                if let Some(d) = Driver::from_weak(&weak) {
                    d.inner.borrow_mut().timer = None;
                    d.with_core(|c, now| c.handle_timeout(now));
                }
            }),
        ));
    }

    // Not inlined: every `with_core` call site would get a copy (tens of KB of wasm).
    #[inline(never)]
    fn exec(&self, out: Output) {
        match out {
            Output::OpenSocket { conn, url } => self.open_socket(conn, &url),
            Output::CloseSocket { conn } => {
                let old = {
                    let mut inner = self.inner.borrow_mut();
                    if inner.socket.as_ref().is_some_and(|(c, _)| *c == conn) {
                        inner.socket.take()
                    } else {
                        None
                    }
                };
                drop(old);
            }
            Output::Send { conn, frame } => {
                let inner = self.inner.borrow();
                if let Some((c, s)) = &inner.socket
                    && *c == conn
                {
                    s.send(&frame);
                }
            }
            Output::Sign { conn, message } => {
                let signing = self.inner.borrow().host.clone_callbacks().sign(&message);
                let weak = self.weak();
                wasm_bindgen_futures::spawn_local(async move {
                    let signed = signing.await;
                    let Some(d) = Driver::from_weak(&weak) else { return };
                    match signed {
                        Ok(sig) => d.with_core(|c, now| c.handle_signed(conn, sig, now)),
                        Err(e) => {
                            let host = d.inner.borrow().host.clone_callbacks();
                            host.error(&e);
                        }
                    }
                });
            }
            Output::Rtc(cmd) => {
                let host = self.inner.borrow().host.clone_callbacks();
                host.rtc(cmd);
            }
            Output::Event(e) => self.event(e),
        }
    }

    // Not inlined: every `with_core` call site would get a copy (tens of KB of wasm).
    #[inline(never)]
    fn open_socket(&self, conn: ConnId, url: &str) {
        let weak = self.weak();
        let socket = Socket::open(url, move |e| {
            let Some(d) = Driver::from_weak(&weak) else { return };
            match e {
                SocketEvent::Open => d.with_core(|c, now| c.handle_socket_open(conn, now)),
                SocketEvent::Frame(f) => d.with_core(|c, now| c.handle_frame(conn, Bytes::from(f), now)),
                SocketEvent::Closed(code) => {
                    d.with_core(|c, now| c.handle_socket_closed(conn, Some(code), now))
                }
            }
        });
        match socket {
            Ok(s) => {
                let old = self.inner.borrow_mut().socket.replace((conn, s));
                drop(old);
            }
            Err(_) => {
                // An invalid URL fails like an unreachable node; the core moves on to the next.
                self.inner.borrow_mut().core.handle_socket_closed(conn, None, now());
            }
        }
    }

    fn connection_value(&self, handle: Handle) -> JsValue {
        match self.inner.borrow().core.session_peer(handle) {
            Some(peer) => host::connection(handle, &peer.to_hex()),
            None => JsValue::UNDEFINED,
        }
    }

    // Not inlined: every `with_core` call site would get a copy (tens of KB of wasm).
    #[inline(never)]
    fn event(&self, e: Event) {
        match e {
            Event::OpDone { op, result } => {
                let value = match &result {
                    Ok(crate::core::OpResult::Connection(h)) => self.connection_value(*h),
                    _ => JsValue::UNDEFINED,
                };
                let done = self.inner.borrow_mut().host.take_op(op);
                if let Some(done) = done {
                    done.settle(result, value);
                }
            }
            Event::Incoming { handle, .. } => {
                let conn = self.connection_value(handle);
                let host = self.inner.borrow().host.clone_callbacks();
                host.emit_connection(conn);
            }
            Event::IncomingOffer { handle, peer } => {
                let host = self.inner.borrow().host.clone_callbacks();
                let weak = self.weak();
                host.ask_incoming(&peer.to_hex(), move |accept| {
                    if let Some(d) = Driver::from_weak(&weak) {
                        d.with_core(|c, now| c.decide_incoming(handle, accept, now));
                    }
                });
            }
            other => {
                let host = self.inner.borrow().host.clone_callbacks();
                let start = match &other {
                    Event::Started | Event::StartFailed(_) => self.inner.borrow_mut().host.take_start(),
                    _ => None,
                };
                host.event(other, start);
            }
        }
    }
}
