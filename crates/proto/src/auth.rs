//! The authentication challenge: what a client signs to prove it owns its peer id.
//!
//! The signed bytes are `AUTH_DOMAIN || u8(len(node_id)) || node_id || nonce`. The domain string
//! keeps the signature from being valid in any other protocol; the node id binds it to one node;
//! the nonce is fresh per connection, so a captured signature cannot be replayed.

use alloc::vec::Vec;

use crate::ids::NodeId;

/// Domain separation prefix of the signed challenge.
pub const AUTH_DOMAIN: &[u8] = b"signal-mesh/edge/v1/auth\0";

/// Length of the challenge nonce.
pub const NONCE_LEN: usize = 32;

/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// The exact bytes a client signs for `node_id`'s challenge `nonce`.
pub fn signed_message(node_id: &NodeId, nonce: &[u8; NONCE_LEN]) -> Vec<u8> {
    let id = node_id.as_bytes();
    let mut msg = Vec::with_capacity(AUTH_DOMAIN.len() + 1 + id.len() + NONCE_LEN);
    msg.extend_from_slice(AUTH_DOMAIN);
    // NodeId is at most 64 bytes, so its length fits a byte.
    msg.push(id.len() as u8);
    msg.extend_from_slice(id);
    msg.extend_from_slice(nonce);
    msg
}

/// Why an authentication attempt was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The echoed nonce is not this connection's challenge.
    #[error("the challenge nonce does not match this connection's challenge")]
    WrongChallenge,
    /// The peer id is not a valid Ed25519 public key.
    #[error("the peer id is not a valid Ed25519 public key")]
    InvalidPeerId,
    /// The peer id is a point of small order: signatures by it can be made without a private
    /// key, so it is refused whatever the signature.
    #[error("the peer id is a weak (small-order) Ed25519 public key")]
    WeakPeerId,
    /// The signature does not verify.
    #[error("the signature does not verify for this peer id and challenge")]
    BadSignature,
}

#[cfg(feature = "auth")]
pub use self::crypto::{Identity, verify};

#[cfg(feature = "auth")]
mod crypto {
    use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

    use super::{AuthError, NONCE_LEN, SIGNATURE_LEN, signed_message};
    use crate::PROTOCOL_VERSION;
    use crate::ids::{NodeId, PeerId};
    use crate::message::{Authenticate, Challenge};

    /// Verifies `signature` by `peer` over the challenge `(node_id, nonce)`.
    ///
    /// Strict: weak (small-order) keys are refused outright, and the signature is checked with
    /// `verify_strict`, which also refuses a small-order `R` and non-canonical encodings. With the
    /// plain check, the identity point `01 00…00` "signs" every message with `R = 01 00…00, s = 0`.
    pub fn verify(
        peer: &PeerId,
        node_id: &NodeId,
        nonce: &[u8; NONCE_LEN],
        signature: &[u8; SIGNATURE_LEN],
    ) -> Result<(), AuthError> {
        let key = VerifyingKey::from_bytes(peer.as_bytes()).map_err(|_| AuthError::InvalidPeerId)?;
        if key.is_weak() {
            return Err(AuthError::WeakPeerId);
        }
        let sig = Signature::from_bytes(signature);
        key.verify_strict(&signed_message(node_id, nonce), &sig).map_err(|_| AuthError::BadSignature)
    }

    /// A peer's Ed25519 key pair, for native clients and tests (the browser client may sign with
    /// WebCrypto instead).
    #[derive(Clone)]
    pub struct Identity(SigningKey);

    impl core::fmt::Debug for Identity {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            write!(f, "Identity({:?})", self.peer_id())
        }
    }

    impl Identity {
        /// The key pair of a 32-byte secret seed.
        pub fn from_seed(seed: [u8; 32]) -> Identity {
            Identity(SigningKey::from_bytes(&seed))
        }

        /// The 32-byte secret seed.
        pub fn seed(&self) -> [u8; 32] {
            self.0.to_bytes()
        }

        /// The public key, which is the peer id.
        pub fn peer_id(&self) -> PeerId {
            PeerId::from_array(self.0.verifying_key().to_bytes())
        }

        /// Signs arbitrary bytes (tests use this to forge wrong signatures on purpose).
        pub fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
            self.0.sign(message).to_bytes()
        }

        /// The answer to `challenge`, speaking [`PROTOCOL_VERSION`].
        pub fn authenticate(&self, challenge: &Challenge) -> Authenticate {
            Authenticate {
                protocol_version: PROTOCOL_VERSION,
                peer_id: self.peer_id(),
                nonce: challenge.nonce,
                signature: self.sign(&signed_message(&challenge.node_id, &challenge.nonce)),
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::super::AUTH_DOMAIN;
        use super::*;

        fn challenge() -> Challenge {
            Challenge {
                protocol_versions: vec![PROTOCOL_VERSION],
                node_id: NodeId::new(vec![7u8; 32]).unwrap(),
                nonce: [9; NONCE_LEN],
            }
        }

        #[test]
        fn a_signed_challenge_verifies() {
            let id = Identity::from_seed([1; 32]);
            let c = challenge();
            let a = id.authenticate(&c);
            assert_eq!(verify(&a.peer_id, &c.node_id, &c.nonce, &a.signature), Ok(()));
        }

        #[test]
        fn another_nodes_or_nonces_signature_fails() {
            let id = Identity::from_seed([1; 32]);
            let c = challenge();
            let a = id.authenticate(&c);
            let other_node = NodeId::new(vec![8u8; 32]).unwrap();
            assert_eq!(verify(&a.peer_id, &other_node, &c.nonce, &a.signature), Err(AuthError::BadSignature));
            assert_eq!(
                verify(&a.peer_id, &c.node_id, &[0; NONCE_LEN], &a.signature),
                Err(AuthError::BadSignature)
            );
            let other = Identity::from_seed([2; 32]).peer_id();
            assert_eq!(verify(&other, &c.node_id, &c.nonce, &a.signature), Err(AuthError::BadSignature));
        }

        /// The eight points of small order (the torsion subgroup), canonically encoded.
        const SMALL_ORDER: [&str; 8] = [
            "0100000000000000000000000000000000000000000000000000000000000000",
            "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            "0000000000000000000000000000000000000000000000000000000000000000",
            "0000000000000000000000000000000000000000000000000000000000000080",
            "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
            "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
            "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
            "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
        ];

        fn point(hex: &str) -> [u8; 32] {
            let mut out = [0u8; 32];
            for (i, b) in out.iter_mut().enumerate() {
                *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
            }
            out
        }

        /// For each small-order key, finds a keyless forgery that the plain (non-strict) check
        /// accepts: `R` another small-order point, `s = 0`, over some challenge. Then checks that
        /// [`verify`] refuses that forgery and every other one.
        #[test]
        fn given_each_small_order_peer_id_then_forgeries_are_refused() {
            use ed25519_dalek::Verifier;
            let node_id = NodeId::new(vec![7u8; 32]).unwrap();
            for key_hex in SMALL_ORDER {
                let key_bytes = point(key_hex);
                let key = VerifyingKey::from_bytes(&key_bytes).unwrap();
                assert!(key.is_weak(), "{key_hex}");
                let peer = PeerId::from_array(key_bytes);
                let mut forged = None;
                'search: for n in 0..=255u8 {
                    let nonce = [n; NONCE_LEN];
                    for r_hex in SMALL_ORDER {
                        let mut sig = [0u8; SIGNATURE_LEN];
                        sig[..32].copy_from_slice(&point(r_hex));
                        let msg = signed_message(&node_id, &nonce);
                        if key.verify(&msg, &Signature::from_bytes(&sig)).is_ok() {
                            forged = Some((nonce, sig));
                            break 'search;
                        }
                    }
                }
                let (nonce, sig) = forged.unwrap_or_else(|| panic!("no forgery found for {key_hex}"));
                assert_eq!(verify(&peer, &node_id, &nonce, &sig), Err(AuthError::WeakPeerId), "{key_hex}");
            }
        }

        #[test]
        fn given_a_small_order_r_then_a_real_keys_signature_is_refused() {
            // A valid key with R replaced by a small-order point and s = 0 never verifies.
            let id = Identity::from_seed([5; 32]);
            let c = challenge();
            for r_hex in SMALL_ORDER {
                let mut sig = [0u8; SIGNATURE_LEN];
                sig[..32].copy_from_slice(&point(r_hex));
                assert_eq!(verify(&id.peer_id(), &c.node_id, &c.nonce, &sig), Err(AuthError::BadSignature));
            }
        }

        #[test]
        fn signed_message_is_domain_separated_and_length_prefixed() {
            let c = challenge();
            let m = signed_message(&c.node_id, &c.nonce);
            assert!(m.starts_with(AUTH_DOMAIN));
            assert_eq!(m[AUTH_DOMAIN.len()], 32);
            assert_eq!(m.len(), AUTH_DOMAIN.len() + 1 + 32 + NONCE_LEN);
        }
    }
}
