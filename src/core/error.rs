//! Errors the client reports to the application, each with a stable code.

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
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `n` in decimal. Messages are built with this and `concat` rather than `format!`, which keeps
/// the formatting machinery out of the wasm (a few KB).
pub(crate) fn decimal(n: u64) -> String {
    let mut digits = Vec::new();
    let mut n = n;
    loop {
        digits.push(char::from(b'0' + (n % 10) as u8));
        n /= 10;
        if n == 0 {
            break;
        }
    }
    digits.iter().rev().collect()
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
