//! The limits a node enforces, announced to each client in its `Welcome`.

use crate::wire;

/// Limits enforced per connection (and, for `max_connections`, per node). Every one is
/// configurable on the node; the defaults suit a public node serving browsers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame the node accepts, in bytes. Larger is `TOO_LARGE`.
    pub max_frame_bytes: u32,
    /// Largest signal payload, in bytes. Larger is `TOO_LARGE`.
    pub max_payload_bytes: u32,
    /// Most topics one peer may have joined at once. More is `LIMIT_EXCEEDED`.
    pub max_topics_per_peer: u32,
    /// Largest lookup page. Asking for more is `LIMIT_EXCEEDED`.
    pub max_lookup_page: u32,
    /// Sustained requests per second per connection (token bucket refill rate).
    pub requests_per_second: u32,
    /// Token bucket size: how many requests may arrive back to back.
    pub request_burst: u32,
    /// A connection that sends nothing for this long is closed with `IDLE_TIMEOUT`.
    pub idle_timeout_ms: u32,
    /// Most client connections the node holds at once; more are refused with `OVERLOADED`.
    pub max_connections: u32,
}

impl Limits {
    /// Default [`Limits::max_frame_bytes`]: room for the largest payload plus framing.
    pub const DEFAULT_MAX_FRAME_BYTES: u32 = 65_536;
    /// Default [`Limits::max_payload_bytes`]: a large SDP offer is ~10 KiB.
    pub const DEFAULT_MAX_PAYLOAD_BYTES: u32 = 32_768;
    /// Default [`Limits::max_topics_per_peer`].
    pub const DEFAULT_MAX_TOPICS_PER_PEER: u32 = 64;
    /// Default [`Limits::max_lookup_page`].
    pub const DEFAULT_MAX_LOOKUP_PAGE: u32 = 256;
    /// Default [`Limits::requests_per_second`].
    pub const DEFAULT_REQUESTS_PER_SECOND: u32 = 200;
    /// Default [`Limits::request_burst`]: a page discovering a few hundred peers and sending each
    /// an offer stays within it.
    pub const DEFAULT_REQUEST_BURST: u32 = 500;
    /// Default [`Limits::idle_timeout_ms`]; clients ping every third of it.
    pub const DEFAULT_IDLE_TIMEOUT_MS: u32 = 30_000;
    /// Default [`Limits::max_connections`].
    pub const DEFAULT_MAX_CONNECTIONS: u32 = 100_000;
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: Self::DEFAULT_MAX_FRAME_BYTES,
            max_payload_bytes: Self::DEFAULT_MAX_PAYLOAD_BYTES,
            max_topics_per_peer: Self::DEFAULT_MAX_TOPICS_PER_PEER,
            max_lookup_page: Self::DEFAULT_MAX_LOOKUP_PAGE,
            requests_per_second: Self::DEFAULT_REQUESTS_PER_SECOND,
            request_burst: Self::DEFAULT_REQUEST_BURST,
            idle_timeout_ms: Self::DEFAULT_IDLE_TIMEOUT_MS,
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
        }
    }
}

impl From<Limits> for wire::Limits {
    fn from(l: Limits) -> Self {
        wire::Limits {
            max_frame_bytes: l.max_frame_bytes,
            max_payload_bytes: l.max_payload_bytes,
            max_topics_per_peer: l.max_topics_per_peer,
            max_lookup_page: l.max_lookup_page,
            requests_per_second: l.requests_per_second,
            request_burst: l.request_burst,
            idle_timeout_ms: l.idle_timeout_ms,
            max_connections: l.max_connections,
        }
    }
}

impl From<wire::Limits> for Limits {
    fn from(l: wire::Limits) -> Self {
        Limits {
            max_frame_bytes: l.max_frame_bytes,
            max_payload_bytes: l.max_payload_bytes,
            max_topics_per_peer: l.max_topics_per_peer,
            max_lookup_page: l.max_lookup_page,
            requests_per_second: l.requests_per_second,
            request_burst: l.request_burst,
            idle_timeout_ms: l.idle_timeout_ms,
            max_connections: l.max_connections,
        }
    }
}
