//! The `signal-mesh-node` binary: its `--help`, its listening line, `/health`, SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_signal-mesh-node");

#[test]
fn help_documents_every_flag_with_its_environment_variable() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "listen",
        "key-file",
        "static-dir",
        "log-format",
        "max-frame-bytes",
        "max-payload-bytes",
        "max-topics-per-peer",
        "max-lookup-page",
        "requests-per-second",
        "request-burst",
        "idle-timeout-ms",
        "max-connections",
        "outbound-queue-frames",
        "auth-timeout-ms",
        "max-consecutive-errors",
        "ws-read-buffer-bytes",
        "ws-write-buffer-bytes",
        "outbound-queue-bytes",
        "header-timeout-ms",
        "max-pending-connections",
        "max-connections-per-ip",
        "shutdown-grace-ms",
    ] {
        assert!(help.contains(&format!("--{flag}")), "--help lacks --{flag}:\n{help}");
        let env = format!("SIGNAL_MESH_{}", flag.to_uppercase().replace('-', "_"));
        assert!(help.contains(&env), "--help lacks {env}:\n{help}");
    }
    for default in ["127.0.0.1:4000", "65536", "32768", "[default: 64]", "[default: 256]", "30000", "100000"]
    {
        assert!(help.contains(default), "--help lacks default {default}:\n{help}");
    }
}

#[tokio::test]
async fn the_binary_prints_its_address_serves_and_stops_on_sigterm() {
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
        .env_remove("SIGNAL_MESH_LISTEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr: std::net::SocketAddr = line
        .trim_end()
        .strip_prefix("signal-mesh-node listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();
    assert_ne!(addr.port(), 0);
    let health = support::http_get(addr, "/health").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");

    let mut client = support::Client::connect(addr).await;
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    assert_eq!(client.closed().await, support::closed(signal_mesh_proto::ErrorCode::ShuttingDown));
    let exit = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert!(exit.success(), "{exit:?}");
}
