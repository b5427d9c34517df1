//! Errors the client reports to the application, each with a stable code.

use alloc::string::String;
use alloc::vec::Vec;

use core::fmt;

use signal_mesh_proto::ErrorCode;

/// The stable code of a [`ClientError`]: a node's [`ErrorCode`] or one of the client's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Code {
    /// A code the node sent (`PEER_NOT_FOUND`, `RATE_LIMITED`, `SESSION_REPLACED`, ...).
    Node(ErrorCode),
    /// The application passed a bad argument (malformed peer id, oversize topic, connect to self).
    InvalidArgument,
    /// The remote peer (or its application) refused the connection.
    Rejected,
    /// No answer in time (a request, a peer connection, or reaching any node at start).
    Timeout,
    /// The client or the peer connection was closed before the operation completed.
    Closed,
    /// The browser failed a WebRTC or WebCrypto call.
    Browser,
    /// The browser lacks something the client needs (for example Ed25519 in WebCrypto).
    Unsupported,
    /// The application aborted the operation (its `AbortSignal` fired).
    Aborted,
}

impl Code {
    /// The `SCREAMING_SNAKE_CASE` spelling exposed to JavaScript as `error.code`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Code::Node(c) => c.as_str(),
            Code::InvalidArgument => "INVALID_ARGUMENT",
            Code::Rejected => "REJECTED",
            Code::Timeout => "TIMEOUT",
            Code::Closed => "CLOSED",
            Code::Browser => "BROWSER_ERROR",
            Code::Unsupported => "UNSUPPORTED",
            Code::Aborted => "ABORTED",
        }
    }
}

/// Every code the client itself reports (besides the node's [`ErrorCode`]s), for the type
/// declarations test.
pub const CLIENT_CODES: [Code; 7] = [
    Code::InvalidArgument,
    Code::Rejected,
    Code::Timeout,
    Code::Closed,
    Code::Browser,
    Code::Unsupported,
    Code::Aborted,
];

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `parts` one after the other: `[..].concat()` without its generic machinery (less wasm).
pub(crate) fn cat(parts: &[&str]) -> String {
    let mut s = String::new();
    for p in parts {
        s.push_str(p);
    }
    s
}

/// Lowercase hex of `bytes`, as `PeerId::to_hex` spells it (without its `char` pushes).
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = Vec::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)]);
        s.push(DIGITS[usize::from(b & 15)]);
    }
    String::from_utf8(s).unwrap_or_default()
}

/// Messages that name a limit, spelled out: building them at run time (`format!`, or digits by
/// hand) costs more wasm than the text. A test checks each against its constant.
pub(crate) mod msg {
    /// [`super::super::client::MAX_LOOKUP`].
    pub const LOOKUP_LIMIT: &str = "lookup limit must be at most 10000";
    /// [`super::super::peers::MAX_LABEL_BYTES`].
    pub const LABEL_TOO_LONG: &str = "label longer than 256 bytes";
    /// [`super::super::peers::MAX_SESSIONS`].
    pub const TOO_MANY_SESSIONS: &str = "at most 256 peer connections at once";
    /// [`signal_mesh_proto::PROTOCOL_VERSION`].
    pub const UNSUPPORTED_VERSION: &str = "the node does not speak protocol version 1";
}

/// An error with a stable [`Code`] and a human-readable message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ClientError {
    /// The stable code.
    pub code: Code,
    /// What happened, for people.
    pub message: String,
}

impl ClientError {
    /// An error with `code` and `message`.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        ClientError { code, message: message.into() }
    }

    /// An [`Code::InvalidArgument`] error.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, message)
    }

    /// A [`Code::Closed`] error.
    pub fn closed(message: impl Into<String>) -> Self {
        Self::new(Code::Closed, message)
    }

    /// A [`Code::Timeout`] error.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(Code::Timeout, message)
    }
}

#[cfg(test)]
mod tests {
    use std::{
        borrow::ToOwned,
        string::{String, ToString},
        vec::Vec,
    };

    use super::*;

    /// The members of `export type SignalMeshErrorCode = | 'A' | 'B' ...;` in the package's types.
    fn declared_codes() -> Vec<String> {
        let dts = include_str!("../../js/index.d.ts");
        let start = dts.find("export type SignalMeshErrorCode =").expect("the union is declared");
        let body = &dts[start..];
        let end = body.find(';').expect("the union ends");
        body[..end].split('\'').skip(1).step_by(2).map(str::to_owned).collect()
    }

    #[test]
    fn the_declared_error_codes_are_exactly_the_protos_and_the_clients() {
        let mut declared = declared_codes();
        let mut known: Vec<String> = ErrorCode::ALL
            .iter()
            .map(|c| Code::Node(*c))
            .chain(CLIENT_CODES)
            .map(|c| c.as_str().to_owned())
            .collect();
        declared.sort();
        known.sort();
        // A duplicate in the declaration would hide a missing code.
        let mut unique = declared.clone();
        unique.dedup();
        assert_eq!(unique, declared, "js/index.d.ts lists a code twice");
        assert_eq!(
            declared, known,
            "js/index.d.ts SignalMeshErrorCode differs from ErrorCode + CLIENT_CODES"
        );
    }

    #[test]
    fn hex_is_the_ids_hex() {
        let id = signal_mesh_proto::PeerId::from_array(core::array::from_fn(|i| (i * 37) as u8));
        assert_eq!(hex(id.as_bytes()), id.to_hex());
    }

    #[test]
    fn messages_name_the_limits_they_check() {
        use crate::core::{client, peers};
        let ends =
            |m: &str, n: usize, tail: &str| assert!(m.ends_with(&[&n.to_string(), tail].concat()), "{m}");
        ends(msg::LOOKUP_LIMIT, client::MAX_LOOKUP as usize, "");
        ends(msg::LABEL_TOO_LONG, peers::MAX_LABEL_BYTES, " bytes");
        ends(msg::TOO_MANY_SESSIONS, peers::MAX_SESSIONS, " peer connections at once");
        ends(msg::UNSUPPORTED_VERSION, signal_mesh_proto::PROTOCOL_VERSION as usize, "");
    }

    #[test]
    fn every_client_code_is_listed_once() {
        // Adding a `Code` variant without listing it in CLIENT_CODES fails to compile here.
        for c in CLIENT_CODES {
            match c {
                Code::Node(_)
                | Code::InvalidArgument
                | Code::Rejected
                | Code::Timeout
                | Code::Closed
                | Code::Browser
                | Code::Unsupported
                | Code::Aborted => {}
            }
        }
        let mut names: Vec<&str> = CLIENT_CODES.iter().map(|c| c.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CLIENT_CODES.len());
    }
}
