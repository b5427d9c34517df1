//! The node's Ed25519 identity, kept in a key file.

use std::io::Write;
use std::path::{Path, PathBuf};

use signal_mesh_proto::auth::Identity;
use signal_mesh_proto::{InvalidId, NodeId, PeerId};

/// Why the node identity could not be loaded or created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The key file could not be read or written.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The key file does not hold a seed.
    #[error("key file {path} must hold 64 hex characters (an Ed25519 seed): {source}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: InvalidId,
    },
    /// The operating system's random number generator failed.
    #[error("no randomness for a new identity: {0}")]
    Random(getrandom::Error),
}

/// A new random identity.
pub fn generate() -> Result<Identity, IdentityError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(IdentityError::Random)?;
    Ok(Identity::from_seed(seed))
}

/// The identity in `path` (64 hex characters, surrounding whitespace ignored); a missing file
/// is created with a new random seed (mode 0600 on Unix).
pub fn load_or_create(path: &Path) -> Result<Identity, IdentityError> {
    let io = |source| IdentityError::Io { path: path.to_owned(), source };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            // The seed is parsed with the 32-byte hex parser the ids use.
            let seed = PeerId::from_hex(text.trim())
                .map_err(|source| IdentityError::Format { path: path.to_owned(), source })?;
            Ok(Identity::from_seed(*seed.as_bytes()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let identity = generate()?;
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(path).map_err(io)?;
            let hex = signal_mesh_proto::ids::hex_encode(&identity.seed());
            writeln!(file, "{hex}").map_err(io)?;
            Ok(identity)
        }
        Err(e) => Err(io(e)),
    }
}

/// The same Ed25519 key as a libp2p identity: the node's identity in the mesh.
pub fn keypair(identity: &Identity) -> libp2p::identity::Keypair {
    let mut seed = identity.seed();
    match libp2p::identity::Keypair::ed25519_from_bytes(&mut seed) {
        Ok(k) => k,
        // Invariant: any 32 bytes are an Ed25519 secret key.
        Err(_) => unreachable!("a 32-byte seed is a valid Ed25519 secret key"),
    }
}

/// The node's libp2p peer id (printed base58, `12D3KooW...`).
pub fn node_key(identity: &Identity) -> libp2p::PeerId {
    keypair(identity).public().to_peer_id()
}

/// The node id announced in challenges: the bytes of its libp2p peer id, so the id a client
/// signs over is the one the mesh, the logs and the status pages show.
pub fn node_id(identity: &Identity) -> NodeId {
    match NodeId::new(node_key(identity).to_bytes()) {
        Ok(id) => id,
        // Invariant: an Ed25519 libp2p peer id is 38 bytes, within NodeId's 1 to 64.
        Err(_) => unreachable!("an Ed25519 peer id is a valid node id"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_key_file_is_created_and_then_reused() {
        let dir = std::env::temp_dir().join(format!("signal-mesh-node-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("node.key");
        let _ = std::fs::remove_file(&path);
        let first = load_or_create(&path).unwrap();
        let second = load_or_create(&path).unwrap();
        assert_eq!(first.peer_id(), second.peer_id());
        assert_eq!(node_key(&first), node_key(&second));
        assert_eq!(node_id(&first).as_bytes().as_ref(), node_key(&first).to_bytes().as_slice());
        assert!(node_key(&first).to_string().starts_with("12D3KooW"));
        std::fs::write(&path, "not hex").unwrap();
        assert!(matches!(load_or_create(&path), Err(IdentityError::Format { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
