//! The `/signal` opening handshake's checks; the framing itself is the shared sans-IO crate
//! [`signal_mesh_ws`] (also used by the load generator), re-exported here.

use axum::http::{HeaderMap, HeaderValue, header};
use base64::Engine;

pub(crate) use signal_mesh_ws::{
    Decoder, Event, FrameError, OP_BINARY, OP_CLOSE, OP_PONG, Role, accept_key, encode_close, encode_frame,
    truncate,
};

/// Why an upgrade request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum HandshakeError {
    #[error("not a WebSocket upgrade (Connection: upgrade and Upgrade: websocket required)")]
    NotUpgrade,
    #[error("unsupported Sec-WebSocket-Version (13 required)")]
    Version,
    #[error("missing or malformed Sec-WebSocket-Key")]
    Key,
}

/// Checks the upgrade request's headers; returns the `Sec-WebSocket-Accept` value.
pub(crate) fn check_upgrade(headers: &HeaderMap) -> Result<HeaderValue, HandshakeError> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .any(|v| v.to_str().is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token))))
    };
    if !has_token(header::CONNECTION, "upgrade") || !has_token(header::UPGRADE, "websocket") {
        return Err(HandshakeError::NotUpgrade);
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION).map(HeaderValue::as_bytes) != Some(b"13") {
        return Err(HandshakeError::Version);
    }
    let key = headers.get(header::SEC_WEBSOCKET_KEY).ok_or(HandshakeError::Key)?.as_bytes();
    // The key is the base64 of 16 random bytes: 24 characters.
    match base64::engine::general_purpose::STANDARD.decode(key) {
        Ok(raw) if raw.len() == 16 => {}
        _ => return Err(HandshakeError::Key),
    }
    HeaderValue::from_str(&accept_key(key)).map_err(|_| HandshakeError::Key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrade_headers_are_checked() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("WebSocket"));
        h.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        h.insert(header::SEC_WEBSOCKET_KEY, HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="));
        assert_eq!(check_upgrade(&h), Ok(HeaderValue::from_static("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")));
        let mut bad = h.clone();
        bad.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("8"));
        assert_eq!(check_upgrade(&bad), Err(HandshakeError::Version));
        let mut bad = h.clone();
        bad.insert(header::SEC_WEBSOCKET_KEY, HeaderValue::from_static("short"));
        assert_eq!(check_upgrade(&bad), Err(HandshakeError::Key));
        let mut bad = h.clone();
        bad.remove(header::UPGRADE);
        assert_eq!(check_upgrade(&bad), Err(HandshakeError::NotUpgrade));
        let mut bad = h;
        bad.insert(header::CONNECTION, HeaderValue::from_static("close"));
        assert_eq!(check_upgrade(&bad), Err(HandshakeError::NotUpgrade));
    }
}
