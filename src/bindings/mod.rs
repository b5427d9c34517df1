//! The only `#[wasm_bindgen]` code: `WasmClient`, the engine behind the JavaScript `SignalClient`
//! facade in `js/index.js`. Not a public API: the facade adds the `EventTarget`, `PeerConnection`
//! objects and `SignalMeshError`.

use alloc::{borrow::ToOwned, string::String};

mod args;

use js_sys::{Function, Promise};
use wasm_bindgen::prelude::*;

use crate::core::{Candidate, ClientError, Code, Handle, SdpKind};
use crate::shell::host::{self, Host, OpKind};
use crate::shell::{Driver, now};

fn js_err(e: &ClientError) -> JsValue {
    host::error_value(e)
}

/// The engine of one `SignalClient`.
#[wasm_bindgen]
#[derive(Debug)]
pub struct WasmClient {
    driver: Driver,
}

#[wasm_bindgen]
impl WasmClient {
    /// Starts a client and resolves once it is authenticated with a node. `emit(type, detail)`
    /// receives events; `incoming(peerId)` decides on incoming offers (`boolean | Promise<boolean>`);
    /// `sign(message)` signs with the identity whose public key is `options.peerId`.
    pub async fn create(
        options: JsValue,
        emit: Function,
        incoming: Function,
        sign: Function,
        rtc: Function,
    ) -> Result<WasmClient, JsValue> {
        let options = args::options(&options).map_err(|e| js_err(&e))?;
        let driver = Driver::start(options, Host::new(emit, incoming, sign, rtc));
        wasm_bindgen_futures::JsFuture::from(driver.started()).await?;
        Ok(WasmClient { driver })
    }

    /// Lowercase hex of the public key.
    #[wasm_bindgen(getter, js_name = peerId)]
    pub fn peer_id(&self) -> String {
        self.driver.peer_id()
    }

    /// `connecting`, `online`, `offline` or `closed`.
    #[wasm_bindgen(getter)]
    pub fn state(&self) -> String {
        self.driver.state().to_owned()
    }

    /// Joins a topic id (`announce` defaults to true).
    pub fn join(&self, topic: JsValue, options: JsValue) -> Promise {
        let parsed = args::topic(&topic).and_then(|t| Ok((t, args::opt_bool(&options, "announce", true)?)));
        self.driver.op(OpKind::Unit, |c, now| parsed.and_then(|(t, a)| c.join(t, a, now)))
    }

    /// Leaves a topic id.
    pub fn leave(&self, topic: JsValue) -> Promise {
        let parsed = args::topic(&topic);
        self.driver.op(OpKind::Unit, |c, now| parsed.and_then(|t| c.leave(t, now)))
    }

    /// Announced peers of a topic id.
    pub fn lookup(&self, topic: JsValue, options: JsValue) -> Promise {
        let parsed = args::topic(&topic).and_then(|t| Ok((t, args::opt_u32(&options, "limit")?)));
        self.driver.op(OpKind::Peers, |c, now| parsed.and_then(|(t, l)| c.lookup(t, l, now)))
    }

    /// The operation the last join, leave, lookup or connect call started (-1 if it failed at
    /// once), for [`WasmClient::cancel`].
    #[wasm_bindgen(getter, js_name = lastOp)]
    pub fn last_op(&self) -> f64 {
        self.driver.last_op().map_or(-1.0, |op| op as f64)
    }

    /// Aborts a lookup or connect: its promise rejects with `ABORTED`.
    pub fn cancel(&self, op: f64) {
        if op >= 0.0 {
            self.driver.with_core(|c, now| c.cancel(op as u64, now));
        }
    }

    /// Connects to a peer; resolves with `{ handle, peerId, pc, channel }` once the channel is open.
    pub fn connect(&self, peer: JsValue, options: JsValue) -> Promise {
        let parsed = args::peer_id(&peer).and_then(|p| Ok((p, args::opt_string(&options, "label")?)));
        self.driver.op(OpKind::Connection, |c, now| {
            parsed.and_then(|(p, label)| c.connect(p, label.as_deref().unwrap_or("signal-mesh"), now))
        })
    }

    /// What the facade's `RTCPeerConnection` of `handle` reports: kind 0 local description (`a`
    /// is an offer, `b` SDP), 1 local candidate (`a` candidate, `b` mid, `c` m-line index, `d`
    /// username fragment), 2 data channel open, 3 ICE failed, 4 ICE connected, 5 negotiation
    /// needed, 6 closed (`a` why), 7 a WebRTC call failed (`a` why).
    #[wasm_bindgen(js_name = rtcReport)]
    pub fn rtc_report(&self, handle: u32, kind: u32, a: JsValue, b: JsValue, c: JsValue, d: JsValue) {
        let h = Handle::from_raw(handle);
        let text = |v: &JsValue| v.as_string().unwrap_or_default();
        self.driver.with_core(|core, now| match kind {
            0 => {
                let sdp_kind = if a.is_truthy() { SdpKind::Offer } else { SdpKind::Answer };
                core.rtc_local_description(h, sdp_kind, text(&b), now);
            }
            1 => {
                let index = c.as_f64().filter(|i| (0.0..=f64::from(u16::MAX)).contains(i)).map(|i| i as u16);
                let candidate = Candidate {
                    candidate: text(&a),
                    sdp_mid: text(&b),
                    sdp_m_line_index: index,
                    username_fragment: text(&d),
                };
                core.rtc_local_candidate(h, candidate, now);
            }
            2 => core.rtc_channel_open(h, now),
            3 => core.rtc_ice_failed(h, now),
            4 => core.rtc_ice_connected(h, now),
            5 => core.rtc_negotiation_needed(h, now),
            6 => core.rtc_closed(h, ClientError::closed(text(&a)), now),
            _ => core.rtc_closed(h, ClientError::new(Code::Browser, text(&a)), now),
        });
    }

    /// Closes one connection (says bye to the peer).
    #[wasm_bindgen(js_name = closeConnection)]
    pub fn close_connection(&self, handle: u32) {
        self.driver.with_core(|c, now| c.close_connection(Handle::from_raw(handle), now));
    }

    /// Closes the client.
    pub fn close(&self) {
        self.driver.with_core(|c, now| c.close(now));
    }

    /// How many engines are alive: created and not yet freed (for tests).
    #[wasm_bindgen(js_name = liveEngines)]
    pub fn live_engines() -> u32 {
        crate::shell::live_engines()
    }

    /// Milliseconds on the client's clock (for tests).
    #[wasm_bindgen(js_name = now)]
    pub fn clock() -> f64 {
        now() as f64
    }
}
