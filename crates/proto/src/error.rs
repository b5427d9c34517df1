//! The error codes that travel on the wire.

use core::fmt;

use crate::wire;

/// A stable, typed error code. Every error a node reports carries one; the JavaScript client
/// exposes it as `error.code` (the [`ErrorCode::as_str`] spelling).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The frame or request could not be decoded or holds an invalid value.
    BadRequest,
    /// The client's protocol version is not supported.
    UnsupportedVersion,
    /// Bad signature, wrong peer id, or wrong or reused challenge.
    AuthFailed,
    /// A request arrived before authentication.
    NotAuthenticated,
    /// The target peer is not connected.
    PeerNotFound,
    /// A frame or payload exceeded the size limit.
    TooLarge,
    /// A count limit was exceeded.
    LimitExceeded,
    /// The request rate exceeded the token bucket.
    RateLimited,
    /// A newer connection with the same peer id replaced this one.
    SessionReplaced,
    /// Nothing was received within the idle timeout.
    IdleTimeout,
    /// The client did not read fast enough.
    SlowConsumer,
    /// The node is shutting down.
    ShuttingDown,
    /// The node failed to serve the request.
    Internal,
    /// The client broke the protocol repeatedly.
    PolicyViolation,
    /// The node is at its connection limit.
    Overloaded,
    /// A leave for a topic that was not joined.
    NotJoined,
    /// The target's node could not be reached in time.
    PeerUnreachable,
    /// The target's queue is past its watermark, or the sender used up its share of it.
    PeerBusy,
}

impl ErrorCode {
    /// Every code, in wire order.
    pub const ALL: [ErrorCode; 18] = [
        ErrorCode::BadRequest,
        ErrorCode::UnsupportedVersion,
        ErrorCode::AuthFailed,
        ErrorCode::NotAuthenticated,
        ErrorCode::PeerNotFound,
        ErrorCode::TooLarge,
        ErrorCode::LimitExceeded,
        ErrorCode::RateLimited,
        ErrorCode::SessionReplaced,
        ErrorCode::IdleTimeout,
        ErrorCode::SlowConsumer,
        ErrorCode::ShuttingDown,
        ErrorCode::Internal,
        ErrorCode::PolicyViolation,
        ErrorCode::Overloaded,
        ErrorCode::NotJoined,
        ErrorCode::PeerUnreachable,
        ErrorCode::PeerBusy,
    ];

    /// The `SCREAMING_SNAKE_CASE` name used in the `.proto`, the docs and JavaScript.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "BAD_REQUEST",
            ErrorCode::UnsupportedVersion => "UNSUPPORTED_VERSION",
            ErrorCode::AuthFailed => "AUTH_FAILED",
            ErrorCode::NotAuthenticated => "NOT_AUTHENTICATED",
            ErrorCode::PeerNotFound => "PEER_NOT_FOUND",
            ErrorCode::TooLarge => "TOO_LARGE",
            ErrorCode::LimitExceeded => "LIMIT_EXCEEDED",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::SessionReplaced => "SESSION_REPLACED",
            ErrorCode::IdleTimeout => "IDLE_TIMEOUT",
            ErrorCode::SlowConsumer => "SLOW_CONSUMER",
            ErrorCode::ShuttingDown => "SHUTTING_DOWN",
            ErrorCode::Internal => "INTERNAL",
            ErrorCode::PolicyViolation => "POLICY_VIOLATION",
            ErrorCode::Overloaded => "OVERLOADED",
            ErrorCode::NotJoined => "NOT_JOINED",
            ErrorCode::PeerUnreachable => "PEER_UNREACHABLE",
            ErrorCode::PeerBusy => "PEER_BUSY",
        }
    }

    /// The WebSocket close code a node uses when it closes a connection for this reason
    /// (4000 + the wire value, in the range reserved for applications).
    pub const fn close_code(self) -> u16 {
        4000 + self.to_wire() as u16
    }

    /// The inverse of [`ErrorCode::close_code`].
    pub fn from_close_code(code: u16) -> Option<ErrorCode> {
        code.checked_sub(4000).and_then(|v| Self::from_wire(i32::from(v)))
    }

    /// The protobuf enum value.
    pub const fn to_wire(self) -> i32 {
        let w = match self {
            ErrorCode::BadRequest => wire::ErrorCode::BadRequest,
            ErrorCode::UnsupportedVersion => wire::ErrorCode::UnsupportedVersion,
            ErrorCode::AuthFailed => wire::ErrorCode::AuthFailed,
            ErrorCode::NotAuthenticated => wire::ErrorCode::NotAuthenticated,
            ErrorCode::PeerNotFound => wire::ErrorCode::PeerNotFound,
            ErrorCode::TooLarge => wire::ErrorCode::TooLarge,
            ErrorCode::LimitExceeded => wire::ErrorCode::LimitExceeded,
            ErrorCode::RateLimited => wire::ErrorCode::RateLimited,
            ErrorCode::SessionReplaced => wire::ErrorCode::SessionReplaced,
            ErrorCode::IdleTimeout => wire::ErrorCode::IdleTimeout,
            ErrorCode::SlowConsumer => wire::ErrorCode::SlowConsumer,
            ErrorCode::ShuttingDown => wire::ErrorCode::ShuttingDown,
            ErrorCode::Internal => wire::ErrorCode::Internal,
            ErrorCode::PolicyViolation => wire::ErrorCode::PolicyViolation,
            ErrorCode::Overloaded => wire::ErrorCode::Overloaded,
            ErrorCode::NotJoined => wire::ErrorCode::NotJoined,
            ErrorCode::PeerUnreachable => wire::ErrorCode::PeerUnreachable,
            ErrorCode::PeerBusy => wire::ErrorCode::PeerBusy,
        };
        w as i32
    }

    /// Parses a protobuf enum value; `None` for `UNSPECIFIED` and values this version does not
    /// know (a client treats those as [`ErrorCode::Internal`]).
    pub fn from_wire(value: i32) -> Option<ErrorCode> {
        Self::ALL.into_iter().find(|c| c.to_wire() == value)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_wire_and_close_code() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_wire(code.to_wire()), Some(code));
            assert_eq!(ErrorCode::from_close_code(code.close_code()), Some(code));
            assert!((4001..4100).contains(&code.close_code()));
        }
    }

    #[test]
    fn names_match_the_proto_enum() {
        for code in ErrorCode::ALL {
            let w = wire::ErrorCode::try_from(code.to_wire()).unwrap();
            assert_eq!(w.as_str_name(), code.as_str());
        }
    }

    #[test]
    fn unspecified_and_unknown_values_are_none() {
        assert_eq!(ErrorCode::from_wire(0), None);
        assert_eq!(ErrorCode::from_wire(999), None);
        assert_eq!(ErrorCode::from_close_code(1000), None);
    }
}
