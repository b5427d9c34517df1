//! The only `#[wasm_bindgen]` code: `WasmClient`, the engine behind the JavaScript `SignalClient`
//! facade in `js/index.js`. Not a public API: the facade adds the `EventTarget`, `PeerConnection`
//! objects and `SignalMeshError`.

mod args;

use js_sys::{Function, Promise};
use wasm_bindgen::prelude::*;

use crate::core::ClientError;
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
    /// receives events; `incoming(peerId)` decides on incoming offers (`boolean | Promise<boolean>`).
    pub async fn create(options: JsValue, emit: Function, incoming: Function) -> Result<WasmClient, JsValue> {
        let options = args::options(&options).map_err(|e| js_err(&e))?;
        let driver = Driver::start(options, Host::new(emit, incoming)).await.map_err(|e| js_err(&e))?;
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

    /// Joins a topic (`announce` defaults to true).
    pub fn join(&self, topic: JsValue, options: JsValue) -> Promise {
        match args::topic(&topic).and_then(|t| Ok((t, args::opt_bool(&options, "announce", true)?))) {
            Ok((t, a)) => self.driver.topic_op(OpKind::Unit, t, Box::new(move |c, t, now| c.join(t, a, now))),
            Err(e) => host::rejected(&e),
        }
    }

    /// Leaves a topic.
    pub fn leave(&self, topic: JsValue) -> Promise {
        match args::topic(&topic) {
            Ok(t) => self.driver.topic_op(OpKind::Unit, t, Box::new(|c, t, now| c.leave(t, now))),
            Err(e) => host::rejected(&e),
        }
    }

    /// Announced peers of a topic.
    pub fn lookup(&self, topic: JsValue, options: JsValue) -> Promise {
        match args::topic(&topic).and_then(|t| Ok((t, args::opt_u32(&options, "limit")?))) {
            Ok((t, l)) => {
                self.driver.topic_op(OpKind::Peers, t, Box::new(move |c, t, now| c.lookup(t, l, now)))
            }
            Err(e) => host::rejected(&e),
        }
    }

    /// Connects to a peer; resolves with `{ handle, peerId, pc, channel }` once the channel is open.
    pub fn connect(&self, peer: JsValue, options: JsValue) -> Promise {
        let parsed = args::peer_id(&peer).and_then(|p| Ok((p, args::opt_string(&options, "label")?)));
        self.driver.op(OpKind::Connection, |c, now| {
            parsed.and_then(|(p, label)| c.connect(p, label.as_deref().unwrap_or("signal-mesh"), now))
        })
    }

    /// Closes one connection (says bye to the peer).
    #[wasm_bindgen(js_name = closeConnection)]
    pub fn close_connection(&self, handle: u32) {
        self.driver.with_core(|c, now| c.close_connection(handle, now));
    }

    /// Closes the client.
    pub fn close(&self) {
        self.driver.with_core(|c, now| c.close(now));
    }

    /// Milliseconds on the client's clock (for tests).
    #[wasm_bindgen(js_name = now)]
    pub fn clock() -> f64 {
        now() as f64
    }
}
