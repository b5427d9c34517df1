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
        "tls-cert",
        "tls-key",
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

/// Issue 9, defect 2: with too few file descriptors, accept errors used to be swallowed. Now
/// they are logged, at most about once per second, and the node serves again once descriptors
/// are free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_descriptors_is_logged_rate_limited_and_survived() {
    let mut child = Command::new("sh")
        .args(["-c", "ulimit -n 64 && exec \"$0\" --listen 127.0.0.1:0 --header-timeout-ms 60000", BIN])
        .env_remove("SIGNAL_MESH_LISTEN")
        .env("SIGNAL_MESH_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr: std::net::SocketAddr =
        line.trim_end().strip_prefix("signal-mesh-node listening on ").unwrap().parse().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<(std::time::Instant, String)>();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send((std::time::Instant::now(), line));
        }
    });
    // More silent connections than the node has descriptors.
    let mut silent = Vec::new();
    for _ in 0..100 {
        silent.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    let first = tokio::task::block_in_place(|| rx.recv_timeout(std::time::Duration::from_secs(10)))
        .expect("no warning about the failing accept");
    assert!(first.1.contains("out of file descriptors"), "{}", first.1);
    // Two and a half seconds of failing accepts (every 100 ms) give at most four lines.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let more: Vec<_> = rx.try_iter().filter(|(_, l)| l.contains("accepting a connection failed")).collect();
    assert!(more.len() <= 3, "not rate-limited: {} more lines", more.len());
    drop(silent);
    let mut healthy = false;
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        if let Ok(r) =
            tokio::time::timeout(std::time::Duration::from_secs(2), support::http_get(addr, "/health")).await
            && r.starts_with("HTTP/1.1 200")
        {
            healthy = true;
            break;
        }
    }
    assert!(healthy, "the node did not recover after the descriptors were freed");
    let _ = child.kill();
    let _ = child.wait();
}
