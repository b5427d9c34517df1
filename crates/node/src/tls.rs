//! Built-in TLS: `--tls-cert FILE --tls-key FILE` (PEM), served with rustls, so browsers on an
//! `https://` page can reach `wss://…/signal` without a reverse proxy.
//!
//! The certificate chain and key are read at start (an error stops the node) and again on each
//! `SIGHUP`: a good pair replaces the old one for new connections, open connections keep theirs,
//! and a bad pair is logged and ignored (the node keeps serving the old certificate). The
//! handshake is bounded by the listener's header timeout and counts as a pending connection.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tracing::{info, warn};

/// Why the TLS certificate or key could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A file is not PEM of the expected kind.
    #[error("{path} holds no valid PEM {what}: {source}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// "certificate" or "private key".
        what: &'static str,
        /// Why.
        source: rustls::pki_types::pem::Error,
    },
    /// The certificate file holds no certificate.
    #[error("{0} holds no certificate")]
    NoCertificate(PathBuf),
    /// rustls refused the pair (for example, the key does not match the certificate).
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// Accepts TLS connections with the current certificate.
#[derive(Clone, Debug)]
pub(crate) struct TlsAcceptor {
    current: Arc<RwLock<Arc<ServerConfig>>>,
    cert: PathBuf,
    key: PathBuf,
}

impl TlsAcceptor {
    /// Loads the PEM certificate chain `cert` and private key `key`.
    pub(crate) fn load(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
        let config = server_config(cert, key)?;
        Ok(TlsAcceptor { current: Arc::new(RwLock::new(config)), cert: cert.to_owned(), key: key.to_owned() })
    }

    /// Reads the files again; new connections use the new pair. On error the old pair stays.
    pub(crate) fn reload(&self) -> Result<(), TlsError> {
        let config = server_config(&self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = config;
        Ok(())
    }

    /// The server side of a TLS handshake on `tcp`.
    pub(crate) async fn accept(&self, tcp: TcpStream) -> io::Result<TlsStream<TcpStream>> {
        let config = self.current.read().unwrap_or_else(PoisonError::into_inner).clone();
        tokio_rustls::TlsAcceptor::from(config).accept(tcp).await
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_owned(), source })
}

fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let pem = read(cert)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem { path: cert.to_owned(), what: "certificate", source })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(cert.to_owned()));
    }
    let key_pem = read(key)?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|source| TlsError::Pem {
        path: key.to_owned(),
        what: "private key",
        source,
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)?;
    // The WebSocket upgrade is HTTP/1.1.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Reloads the certificate on every `SIGHUP` while it lives.
#[derive(Debug)]
pub(crate) struct ReloadOnHangup(Option<tokio::task::JoinHandle<()>>);

impl Drop for ReloadOnHangup {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

/// Starts reloading `acceptor`'s files on `SIGHUP` (Unix only).
pub(crate) fn reload_on_hangup(acceptor: &TlsAcceptor) -> ReloadOnHangup {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "cannot listen for SIGHUP: the TLS certificate will not be reloaded");
                return ReloadOnHangup(None);
            }
        };
        let acceptor = acceptor.clone();
        ReloadOnHangup(Some(tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                match acceptor.reload() {
                    Ok(()) => info!(cert = %acceptor.cert.display(), "SIGHUP: TLS certificate reloaded"),
                    Err(e) => warn!(error = %e, "SIGHUP: TLS certificate not reloaded; keeping the old one"),
                }
            }
        })))
    }
    #[cfg(not(unix))]
    {
        let _ = acceptor;
        ReloadOnHangup(None)
    }
}
