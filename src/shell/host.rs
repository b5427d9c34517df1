//! How results reach JavaScript: promises of operations, events through the facade's `emit`
//! callback, and the `onIncoming` decision. Every call into JavaScript may throw or reject; none of
//! them is unwrapped.

use alloc::string::String;

use js_sys::{Array, Function, Object, Promise, Reflect};
use wasm_bindgen::JsValue;
use wasm_bindgen_futures::JsFuture;

use crate::core::vecmap::VecMap;
use crate::core::{ClientError, Event, Handle, OpId, OpResult, RtcCommand};

/// A JavaScript `Error` with a stable `code` (the facade turns it into a `SignalMeshError`).
pub fn error_value(e: &ClientError) -> JsValue {
    let err = js_sys::Error::new(&e.message);
    err.set_name("SignalMeshError");
    let _ = Reflect::set(&err, &JsValue::from_str("code"), &JsValue::from_str(e.code.as_str()));
    err.into()
}

/// A promise already rejected with `e`.
pub fn rejected(e: &ClientError) -> Promise {
    Promise::reject(&error_value(e))
}

fn object(fields: &[(&str, &JsValue)]) -> JsValue {
    let o = Object::new();
    for (k, v) in fields {
        let _ = Reflect::set(&o, &JsValue::from_str(k), v);
    }
    o.into()
}

/// The raw connection the facade wraps into a `PeerConnection` (it owns `pc` and `channel`).
pub fn connection(handle: Handle, peer: &str) -> JsValue {
    object(&[("handle", &JsValue::from(handle.get())), ("peerId", &JsValue::from_str(peer))])
}

/// What an operation's promise resolves with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// `undefined` (join, leave, close).
    Unit,
    /// `string[]` of peer ids (lookup).
    Peers,
    /// A raw connection (connect).
    Connection,
}

/// The two halves of a promise.
#[derive(Debug)]
pub struct Settle {
    resolve: Function,
    reject: Function,
    kind: OpKind,
}

/// A new promise and its halves.
pub fn promise(kind: OpKind) -> (Promise, Option<Settle>) {
    let mut settle = None;
    let p = Promise::new(&mut |resolve, reject| settle = Some(Settle { resolve, reject, kind }));
    (p, settle)
}

impl Settle {
    /// Resolves or rejects. `value` is the resolution for [`OpKind::Connection`].
    pub fn settle(self, result: Result<OpResult, ClientError>, value: JsValue) {
        let _ = match result {
            Err(e) => self.reject.call1(&JsValue::NULL, &error_value(&e)),
            Ok(OpResult::Peers(peers)) => {
                let arr: Array = peers.iter().map(|p| JsValue::from_str(&p.to_hex())).collect();
                self.resolve.call1(&JsValue::NULL, &arr)
            }
            Ok(_) if self.kind == OpKind::Connection => self.resolve.call1(&JsValue::NULL, &value),
            Ok(_) => self.resolve.call0(&JsValue::NULL),
        };
    }
}

/// The facade's callbacks.
#[derive(Clone, Debug)]
pub struct Callbacks {
    emit: Function,
    incoming: Function,
    sign: Function,
    rtc: Function,
}

impl Callbacks {
    /// Hands a WebRTC command to the facade: `rtc(kind, handle, a, b, c, d)` with kind
    /// 0 create (`a` initiator, `b` label), 1 create offer (`a` ICE restart), 2 apply offer
    /// (`a` SDP), 3 apply answer (`a` SDP), 4 add candidate (`a` candidate, `b` mid,
    /// `c` m-line index, `d` username fragment), 5 close. It reports back through
    /// `WasmClient.rtcReport`.
    pub fn rtc(&self, cmd: RtcCommand) {
        let s = |v: &str| JsValue::from_str(v);
        let u = JsValue::UNDEFINED;
        let (kind, h, a, b, c, d) = match cmd {
            RtcCommand::Create { handle, initiator, label } => {
                (0, handle, initiator.into(), s(&label), u.clone(), u)
            }
            RtcCommand::CreateOffer { handle, ice_restart } => {
                (1, handle, ice_restart.into(), u.clone(), u.clone(), u)
            }
            RtcCommand::ApplyOffer { handle, sdp } => (2, handle, s(&sdp), u.clone(), u.clone(), u),
            RtcCommand::ApplyAnswer { handle, sdp } => (3, handle, s(&sdp), u.clone(), u.clone(), u),
            RtcCommand::AddCandidate { handle, candidate: c } => (
                4,
                handle,
                s(&c.candidate),
                s(&c.sdp_mid),
                c.sdp_m_line_index.map_or(JsValue::NULL, JsValue::from),
                s(&c.username_fragment),
            ),
            RtcCommand::Close { handle } => (5, handle, u.clone(), u.clone(), u.clone(), u),
        };
        let args = Array::new();
        for v in [JsValue::from(kind), JsValue::from(h.get()), a, b, c, d] {
            args.push(&v);
        }
        // A throwing facade must not break the engine; the session's deadline covers a lost command.
        let _ = self.rtc.apply(&JsValue::NULL, &args);
    }

    /// Signs `message` with the facade's identity (`sign(Uint8Array) => Promise<Uint8Array>`).
    pub fn sign(
        &self,
        message: &[u8],
    ) -> impl core::future::Future<Output = Result<[u8; 64], ClientError>> + use<> {
        let called = self.sign.call1(&JsValue::NULL, &js_sys::Uint8Array::from(message));
        async move {
            let failed = |_| ClientError::new(crate::core::Code::Browser, "signing the challenge failed");
            let sig = JsFuture::from(Promise::resolve(&called.map_err(failed)?)).await.map_err(failed)?;
            <[u8; 64]>::try_from(js_sys::Uint8Array::new(&sig).to_vec().as_slice())
                .map_err(|_| ClientError::new(crate::core::Code::Browser, "a signature is 64 bytes"))
        }
    }

    fn emit(&self, kind: &str, detail: JsValue) {
        // A throwing listener must not break the client.
        let _ = self.emit.call2(&JsValue::NULL, &JsValue::from_str(kind), &detail);
    }

    /// Reports an error not tied to an operation.
    pub fn error(&self, e: &ClientError) {
        self.emit("error", object(&[("error", &error_value(e))]));
    }

    /// The `connection` event.
    pub fn emit_connection(&self, conn: JsValue) {
        self.emit("connection", object(&[("connection", &conn)]));
    }

    /// Asks the application about an incoming offer; `decide` gets the answer (a throw or a
    /// rejection is a refusal).
    pub fn ask_incoming(&self, peer: &str, decide: impl FnOnce(bool) + 'static) {
        let answer = self.incoming.call1(&JsValue::NULL, &JsValue::from_str(peer));
        let this = self.clone();
        wasm_bindgen_futures::spawn_local(async move {
            let accept = match answer {
                Ok(v) => match JsFuture::from(Promise::resolve(&v)).await {
                    Ok(v) => v.is_truthy(),
                    Err(e) => {
                        this.emit("error", object(&[("error", &e)]));
                        false
                    }
                },
                Err(e) => {
                    this.emit("error", object(&[("error", &e)]));
                    false
                }
            };
            decide(accept);
        });
    }

    /// Every other event; `start` is the start promise for `Started` / `StartFailed`.
    pub fn event(&self, e: Event, start: Option<Settle>) {
        let hex = |s: String| JsValue::from_str(&s);
        match e {
            Event::StateChanged(s) => {
                self.emit("statechange", object(&[("state", &JsValue::from_str(s.as_str()))]))
            }
            Event::Started => {
                if let Some(s) = start {
                    s.settle(Ok(OpResult::Done), JsValue::UNDEFINED);
                }
            }
            Event::StartFailed(err) => {
                if let Some(s) = start {
                    s.settle(Err(err), JsValue::UNDEFINED);
                }
            }
            Event::PeerJoined { topic, peer } => self.emit(
                "peer-joined",
                object(&[("topic", &hex(topic.to_hex())), ("peerId", &hex(peer.to_hex()))]),
            ),
            Event::PeerLeft { topic, peer } => self.emit(
                "peer-left",
                object(&[("topic", &hex(topic.to_hex())), ("peerId", &hex(peer.to_hex()))]),
            ),
            Event::PeerClosed { handle, peer } => self.emit(
                "connection-closed",
                object(&[("handle", &JsValue::from(handle.get())), ("peerId", &hex(peer.to_hex()))]),
            ),
            Event::Error(err) => self.error(&err),
            Event::OpDone { .. } | Event::Incoming { .. } | Event::IncomingOffer { .. } => {}
        }
    }
}

/// Pending promises and the facade's callbacks.
#[derive(Debug)]
pub struct Host {
    callbacks: Callbacks,
    ops: VecMap<OpId, Settle>,
    start: Option<Settle>,
}

impl Host {
    /// `emit(type, detail)` dispatches an event; `incoming(peerId)` returns
    /// `boolean | Promise<boolean>`; `sign(message)` returns `Promise<Uint8Array>` (64 bytes).
    /// `rtc(kind, handle, ...)` carries out WebRTC commands (see [`Callbacks::rtc`]).
    pub fn new(emit: Function, incoming: Function, sign: Function, rtc: Function) -> Host {
        Host { callbacks: Callbacks { emit, incoming, sign, rtc }, ops: VecMap::new(), start: None }
    }

    /// The callbacks, to call without holding the driver's borrow.
    pub fn clone_callbacks(&self) -> Callbacks {
        self.callbacks.clone()
    }

    /// Reports an error not tied to an operation.
    pub fn error(&self, e: &ClientError) {
        self.callbacks.error(e);
    }

    /// A promise for operation `op`.
    pub fn op_promise(&mut self, op: OpId, kind: OpKind) -> Promise {
        let (p, settle) = promise(kind);
        if let Some(s) = settle {
            self.ops.insert(op, s);
        }
        p
    }

    /// The promise halves of `op`, once.
    pub fn take_op(&mut self, op: OpId) -> Option<Settle> {
        self.ops.remove(&op)
    }

    /// The start promise.
    pub fn start_promise(&mut self) -> Promise {
        let (p, settle) = promise(OpKind::Unit);
        self.start = settle;
        p
    }

    /// The start promise's halves, once.
    pub fn take_start(&mut self) -> Option<Settle> {
        self.start.take()
    }
}
