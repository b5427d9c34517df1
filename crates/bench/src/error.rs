//! The generator's one error type.

use signal_mesh_proto::{DecodeError, ErrorCode};

/// Why a benchmark step failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// Bad command line or configuration.
    #[error("usage: {0}")]
    Usage(String),
    /// A socket or process operation failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The WebSocket opening handshake failed.
    #[error("websocket handshake: {0}")]
    Handshake(String),
    /// The node sent something the protocol does not allow here.
    #[error("protocol: {0}")]
    Protocol(String),
    /// A frame from the node did not decode.
    #[error("decode: {0}")]
    Decode(#[from] DecodeError),
    /// The node answered with an error code.
    #[error("node error {code:?}: {message}")]
    Node {
        /// The code.
        code: ErrorCode,
        /// The node's message.
        message: String,
    },
    /// The connection was closed.
    #[error("connection closed ({code:?}): {reason}")]
    Closed {
        /// WebSocket close code, when there was a close frame.
        code: Option<u16>,
        /// Why.
        reason: String,
    },
    /// A step did not finish in time.
    #[error("timed out: {0}")]
    Timeout(&'static str),
    /// Starting, reading or stopping the node process failed.
    #[error("node process: {0}")]
    Process(String),
}
