//! Built-in TLS (placeholder until rustls is wired in).

use std::io;

use tokio::net::TcpStream;

/// Accepts TLS connections.
#[derive(Clone, Debug)]
pub(crate) struct TlsAcceptor;

impl TlsAcceptor {
    pub(crate) async fn accept(&self, tcp: TcpStream) -> io::Result<TcpStream> {
        Ok(tcp)
    }
}
