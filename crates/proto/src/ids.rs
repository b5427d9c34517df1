//! Validated identifiers. Each is parsed once at the edge of the system and is valid from then on.

use alloc::string::String;
use core::fmt;
use core::str::FromStr;

use bytes::Bytes;
use sha2::{Digest, Sha256};

/// Why bytes or a string are not a valid identifier.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidId {
    /// The identifier has the wrong number of bytes.
    #[error("{what} must be {expected} bytes, got {actual}")]
    Length {
        /// Which identifier.
        what: &'static str,
        /// The required length.
        expected: usize,
        /// The length received.
        actual: usize,
    },
    /// The string is not lowercase or uppercase hex of the right length.
    #[error("{what} must be {expected} hex characters")]
    Hex {
        /// Which identifier.
        what: &'static str,
        /// The required number of hex characters.
        expected: usize,
    },
}

/// The longest topic name [`TopicId::from_name`] accepts, in UTF-8 bytes. Names are hashed, so the
/// bound is not about the wire; it catches a caller passing a whole document by mistake.
pub const MAX_TOPIC_NAME_BYTES: usize = 1024;

/// A topic name longer than [`MAX_TOPIC_NAME_BYTES`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("topic name is {0} bytes; at most {MAX_TOPIC_NAME_BYTES} are allowed")]
pub struct TopicNameTooLong(pub usize);

macro_rules! fixed_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; 32]);

        impl $name {
            /// Length in bytes.
            pub const LEN: usize = 32;

            /// Wraps 32 bytes.
            pub const fn from_array(bytes: [u8; 32]) -> Self {
                Self(bytes)
            }

            /// Parses exactly 32 bytes.
            pub fn from_slice(bytes: &[u8]) -> Result<Self, InvalidId> {
                <[u8; 32]>::try_from(bytes).map(Self).map_err(|_| InvalidId::Length {
                    what: $what,
                    expected: 32,
                    actual: bytes.len(),
                })
            }

            /// The raw bytes.
            pub const fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// The raw bytes as a refcounted buffer, for the wire.
            pub fn to_bytes(&self) -> Bytes {
                Bytes::copy_from_slice(&self.0)
            }

            /// Lowercase hex, 64 characters.
            pub fn to_hex(&self) -> String {
                hex_encode(&self.0)
            }

            /// Parses 64 hex characters (either case).
            pub fn from_hex(s: &str) -> Result<Self, InvalidId> {
                hex_decode_32(s).map(Self).ok_or(InvalidId::Hex { what: $what, expected: 64 })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                for b in &self.0 {
                    write!(f, "{b:02x}")?;
                }
                Ok(())
            }
        }

        impl fmt::Debug for $name {
            /// Short form (first 8 hex characters) keeps logs readable.
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), &self.to_hex()[..8])
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, InvalidId> {
                Self::from_hex(s)
            }
        }

        impl TryFrom<&[u8]> for $name {
            type Error = InvalidId;
            fn try_from(bytes: &[u8]) -> Result<Self, InvalidId> {
                Self::from_slice(bytes)
            }
        }
    };
}

fixed_id!(
    /// A peer's identity: its Ed25519 public key. A client proves it owns the key when it
    /// authenticates, so a peer id cannot be claimed by anyone else.
    PeerId,
    "peer id"
);

fixed_id!(
    /// A topic: 32 bytes, usually the SHA-256 of a name ([`TopicId::from_name`]).
    TopicId,
    "topic"
);

impl TopicId {
    /// SHA-256 of the UTF-8 name. The JavaScript client hashes string topics the same way.
    pub fn from_name(name: &str) -> Result<TopicId, TopicNameTooLong> {
        if name.len() > MAX_TOPIC_NAME_BYTES {
            return Err(TopicNameTooLong(name.len()));
        }
        Ok(TopicId(Sha256::digest(name.as_bytes()).into()))
    }
}

/// The longest node id accepted on the wire.
pub const MAX_NODE_ID_BYTES: usize = 64;

/// A signal node's identity as sent in its challenge: opaque bytes (at most
/// [`MAX_NODE_ID_BYTES`]) that the client binds into its signature, so a signature made for one
/// node is useless at another.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct NodeId(Bytes);

impl NodeId {
    /// Parses at most [`MAX_NODE_ID_BYTES`] bytes (and at least one).
    pub fn new(bytes: impl Into<Bytes>) -> Result<NodeId, InvalidId> {
        let bytes = bytes.into();
        if bytes.is_empty() || bytes.len() > MAX_NODE_ID_BYTES {
            return Err(InvalidId::Length {
                what: "node id",
                expected: MAX_NODE_ID_BYTES,
                actual: bytes.len(),
            });
        }
        Ok(NodeId(bytes))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex_encode(&self.0)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = self.to_hex();
        write!(f, "NodeId({})", &hex[..hex.len().min(8)])
    }
}

/// Lowercase hex of any bytes.
pub fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

fn hex_decode_32(s: &str) -> Option<[u8; 32]> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let s = s.as_bytes();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        out[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_from_name_is_sha256_of_utf8() {
        // SHA-256("hello"), a published test vector.
        let t = TopicId::from_name("hello").unwrap();
        assert_eq!(t.to_hex(), "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
    }

    #[test]
    fn topic_name_longer_than_the_limit_is_rejected() {
        let long = "x".repeat(MAX_TOPIC_NAME_BYTES + 1);
        assert_eq!(TopicId::from_name(&long), Err(TopicNameTooLong(MAX_TOPIC_NAME_BYTES + 1)));
        assert!(TopicId::from_name(&long[1..]).is_ok());
    }

    #[test]
    fn peer_id_hex_round_trips_and_rejects_bad_input() {
        let id = PeerId::from_array([0xab; 32]);
        assert_eq!(id.to_hex().len(), 64);
        assert_eq!(id.to_hex().parse::<PeerId>(), Ok(id));
        assert_eq!(id.to_hex().to_uppercase().parse::<PeerId>(), Ok(id));
        assert!(matches!("zz".repeat(32).parse::<PeerId>(), Err(InvalidId::Hex { .. })));
        assert!("ab".repeat(31).parse::<PeerId>().is_err());
        assert!("ab".repeat(33).parse::<PeerId>().is_err());
        assert!("é".repeat(32).parse::<PeerId>().is_err());
    }

    #[test]
    fn peer_id_from_slice_checks_the_length() {
        assert!(PeerId::from_slice(&[1; 32]).is_ok());
        assert_eq!(
            PeerId::from_slice(&[1; 31]),
            Err(InvalidId::Length { what: "peer id", expected: 32, actual: 31 })
        );
        assert!(PeerId::from_slice(&[]).is_err());
        assert!(TopicId::from_slice(&[0; 33]).is_err());
    }

    #[test]
    fn node_id_is_bounded() {
        assert!(NodeId::new(vec![1u8; 64]).is_ok());
        assert!(NodeId::new(vec![1u8; 65]).is_err());
        assert!(NodeId::new(Vec::new()).is_err());
    }

    #[test]
    fn debug_is_short_and_display_is_full_hex() {
        let id = PeerId::from_array([0x12; 32]);
        assert_eq!(format!("{id:?}"), "PeerId(12121212)");
        assert_eq!(format!("{id}"), "12".repeat(32));
    }
}
