//! Parsing of application arguments from JavaScript values ("parse, don't validate"): each
//! failure is a [`ClientError`] with code `INVALID_ARGUMENT`.

use alloc::{string::String, vec::Vec};

use js_sys::{Array, Reflect, Uint8Array};
use signal_mesh_proto::{PeerId, TopicId};
use wasm_bindgen::{JsCast, JsValue};

use crate::core::ClientError;
use crate::core::error::decimal;
use crate::shell::Options;

fn get(obj: &JsValue, key: &str) -> JsValue {
    if obj.is_object() {
        Reflect::get(obj, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
    } else {
        JsValue::UNDEFINED
    }
}

/// A topic id: 32 bytes. The facade hashes topic names itself (SHA-256 of the UTF-8, exactly
/// `TopicId::from_name`, with WebCrypto) and hands the engine the bytes.
pub fn topic(v: &JsValue) -> Result<TopicId, ClientError> {
    let bytes = v
        .dyn_ref::<Uint8Array>()
        .ok_or_else(|| ClientError::invalid("a topic must be a string or a 32-byte Uint8Array"))?
        .to_vec();
    TopicId::from_slice(&bytes).map_err(|_| {
        ClientError::invalid(["topic must be 32 bytes, got ", &decimal(bytes.len() as u64)].concat())
    })
}

/// A peer id: 64 hex characters.
pub fn peer_id(v: &JsValue) -> Result<PeerId, ClientError> {
    let s = v
        .as_string()
        .ok_or_else(|| ClientError::invalid("a peer id must be a string of 64 hex characters"))?;
    PeerId::from_hex(&s)
        .map_err(|_| ClientError::invalid("invalid peer id: peer id must be 64 hex characters"))
}

/// An optional positive integer option.
pub fn opt_u32(obj: &JsValue, key: &str) -> Result<Option<u32>, ClientError> {
    let v = get(obj, key);
    if v.is_undefined() || v.is_null() {
        return Ok(None);
    }
    match v.as_f64() {
        Some(n) if (0.0..=f64::from(u32::MAX)).contains(&n) && f64::from(n as u32) == n => Ok(Some(n as u32)),
        _ => Err(ClientError::invalid([key, " must be a non-negative integer"].concat())),
    }
}

/// An optional boolean option (default `default`).
pub fn opt_bool(obj: &JsValue, key: &str, default: bool) -> Result<bool, ClientError> {
    let v = get(obj, key);
    if v.is_undefined() || v.is_null() {
        return Ok(default);
    }
    v.as_bool().ok_or_else(|| ClientError::invalid([key, " must be a boolean"].concat()))
}

/// An optional string option.
pub fn opt_string(obj: &JsValue, key: &str) -> Result<Option<String>, ClientError> {
    let v = get(obj, key);
    if v.is_undefined() || v.is_null() {
        return Ok(None);
    }
    v.as_string().map(Some).ok_or_else(|| ClientError::invalid([key, " must be a string"].concat()))
}

/// The options of `SignalClient.create`.
pub fn options(v: &JsValue) -> Result<Options, ClientError> {
    if !v.is_object() {
        return Err(ClientError::invalid("options must be an object with `servers`"));
    }
    let servers = get(v, "servers");
    if !Array::is_array(&servers) {
        return Err(ClientError::invalid("servers must be an array of ws:// or wss:// URLs"));
    }
    let mut list = Vec::new();
    for s in Array::from(&servers).iter() {
        let url = s.as_string().ok_or_else(|| ClientError::invalid("servers must hold strings"))?;
        if !(url.starts_with("ws://") || url.starts_with("wss://")) {
            return Err(ClientError::invalid(["server '", &url, "' is not a ws:// or wss:// URL"].concat()));
        }
        list.push(url);
    }
    if list.is_empty() {
        return Err(ClientError::invalid("servers must name at least one node"));
    }
    // Set by the facade from its WebCrypto identity, not by the application.
    let bytes = |key: &str| get(v, key).dyn_ref::<Uint8Array>().map(Uint8Array::to_vec).unwrap_or_default();
    let peer_id = PeerId::from_slice(&bytes("peerId"))
        .map_err(|_| ClientError::invalid("the facade passes a 32-byte peerId"))?;
    let entropy = <[u8; 8]>::try_from(bytes("entropy").as_slice())
        .map(u64::from_le_bytes)
        .map_err(|_| ClientError::invalid("the facade passes 8 bytes of entropy"))?;
    let connect_timeout_ms = match opt_u32(v, "connectTimeoutMs")? {
        Some(0) => return Err(ClientError::invalid("connectTimeoutMs must be positive")),
        t => t.map(u64::from),
    };
    Ok(Options { servers: list, peer_id, entropy, connect_timeout_ms })
}
