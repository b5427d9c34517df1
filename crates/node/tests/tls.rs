//! Built-in TLS: wss:// with a certificate the test makes, and reloading it on SIGHUP without
//! dropping open connections.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rcgen::{BasicConstraints, Certificate, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use signal_mesh_proto::{ClientMessage, ServerMessage, decode_server, encode_client};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

const BIN: &str = env!("CARGO_BIN_EXE_signal-mesh-node");

/// A test CA and certificates it signs for `localhost` and 127.0.0.1.
struct Ca {
    cert: Certificate,
    key: KeyPair,
}

impl Ca {
    fn new() -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "signal-mesh test CA");
        Ca { cert: params.self_signed(&key).unwrap(), key }
    }

    /// Writes a new leaf certificate and its key to `dir`; returns the certificate's DER.
    fn issue(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf, CertificateDer<'static>) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path, cert.der().clone())
    }

    fn client(&self) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("signal-mesh-tls-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

type Wss = WebSocketStream<TlsStream<TcpStream>>;

/// Connects over TLS (verifying the node's certificate against the test CA), upgrades, reads the
/// challenge; returns the socket and the certificate the node presented.
async fn wss(ca: &Ca, addr: SocketAddr) -> (Wss, CertificateDer<'static>) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls =
        ca.client().connect(ServerName::try_from("localhost").unwrap(), tcp).await.expect("TLS handshake");
    let presented = tls.get_ref().1.peer_certificates().unwrap()[0].clone().into_owned();
    let (mut ws, _) = tokio_tungstenite::client_async(format!("wss://localhost:{}/signal", addr.port()), tls)
        .await
        .expect("WebSocket upgrade over TLS");
    let first = tokio::time::timeout(support::STEP, ws.next()).await.unwrap().unwrap().unwrap();
    let Message::Binary(b) = first else { panic!("{first:?}") };
    assert!(matches!(decode_server(b, 1 << 20).unwrap(), ServerMessage::Challenge(_)));
    (ws, presented)
}

/// A protocol ping and its pong: the connection works.
async fn ping(ws: &mut Wss, n: u64) {
    ws.send(Message::Binary(encode_client(ClientMessage::Ping(n)))).await.unwrap();
    loop {
        let m = tokio::time::timeout(support::STEP, ws.next()).await.unwrap().unwrap().unwrap();
        if let Message::Binary(b) = m {
            assert_eq!(decode_server(b, 1 << 20).unwrap(), ServerMessage::Pong(n));
            return;
        }
    }
}

#[tokio::test]
async fn wss_works_with_the_configured_certificate_and_plain_http_does_not() {
    let ca = Ca::new();
    let dir = temp_dir("serve");
    let (cert, key, der) = ca.issue(&dir, "node");
    let mut cfg = support::config();
    cfg.tls_cert = Some(cert);
    cfg.tls_key = Some(key);
    let node = support::start(cfg).await;
    let (mut ws, presented) = wss(&ca, node.local_addr()).await;
    assert_eq!(presented, der);
    ping(&mut ws, 1).await;
    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain =
        tokio::time::timeout(Duration::from_secs(5), support::http_get(node.local_addr(), "/health")).await;
    assert!(!matches!(&plain, Ok(r) if r.starts_with("HTTP/1.1 200")), "{plain:?}");
    node.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_missing_or_mismatched_key_stops_the_start_with_an_error() {
    let ca = Ca::new();
    let dir = temp_dir("bad");
    let (cert, _key, _) = ca.issue(&dir, "node");
    let mut cfg = support::config();
    cfg.tls_cert = Some(cert.clone());
    cfg.tls_key = Some(dir.join("missing.pem"));
    let err = signal_mesh_node::Node::start(cfg.clone()).await.unwrap_err();
    assert!(err.to_string().contains("missing.pem"), "{err}");
    // A key that is not the certificate's.
    std::fs::write(dir.join("other.pem"), KeyPair::generate().unwrap().serialize_pem()).unwrap();
    cfg.tls_key = Some(dir.join("other.pem"));
    assert!(signal_mesh_node::Node::start(cfg).await.is_err());
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_and_keeps_open_connections() {
    let ca = Ca::new();
    let dir = temp_dir("reload");
    let (cert, key, first_der) = ca.issue(&dir, "first");
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .env_remove("SIGNAL_MESH_LISTEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr: SocketAddr =
        line.trim_end().strip_prefix("signal-mesh-node listening on ").unwrap().parse().unwrap();
    let (mut open, presented) = wss(&ca, addr).await;
    assert_eq!(presented, first_der);

    let hangup = || {
        let status = Command::new("kill").args(["-HUP", &child.id().to_string()]).status().unwrap();
        assert!(status.success());
    };
    // A new certificate in the same files, then SIGHUP: new connections get it.
    let (_, _, second_der) = ca.issue(&dir, "second");
    hangup();
    let mut reloaded = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (ws, presented) = wss(&ca, addr).await;
        drop(ws);
        if presented == second_der {
            reloaded = true;
            break;
        }
        assert_eq!(presented, first_der);
    }
    assert!(reloaded, "SIGHUP did not reload the certificate");
    // The connection made with the first certificate is still open and working.
    ping(&mut open, 2).await;
    // A broken pair on SIGHUP is ignored: the node keeps the second certificate.
    std::fs::write(&key, "not a key").unwrap();
    hangup();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, presented) = wss(&ca, addr).await;
    assert_eq!(presented, second_der);
    ping(&mut open, 3).await;
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(dir);
}
