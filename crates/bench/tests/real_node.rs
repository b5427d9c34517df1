//! Runs the generator's scenarios, small, against a real `signal-mesh-node` started in this test
//! process (`--url`), so the generator's protocol and counting are checked against the node they
//! measure. The published figures come from the release node process (BENCHMARKS.md).
// Test code: a panic here is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use signal_mesh_node::{Config, Node};

/// Starts a real node with benchmark limits on its own runtime thread; returns its URL.
fn real_node() -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let mut config = Config::default().with_listen("127.0.0.1:0".parse().unwrap());
            config.requests_per_second = 1_000_000;
            config.request_burst = 1_000_000;
            config.max_connections = 10_000;
            config.idle_timeout_ms = 600_000;
            let node = Node::start(config).await.unwrap();
            tx.send(node.local_addr()).unwrap();
            // Serve until the test process exits.
            std::future::pending::<()>().await;
            drop(node);
        });
    });
    format!("ws://{}/signal", rx.recv().unwrap())
}

fn bench(url: &str, args: &[&str]) -> (String, serde_json::Value) {
    let dir = std::env::temp_dir().join(format!("smb-test-{}-{}", std::process::id(), args[0]));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("out.json");
    let out = Command::new(env!("CARGO_BIN_EXE_signal-mesh-bench"))
        .args(["--no-pin", "--max-seconds", "120", "--url", url, "--json"])
        .arg(&json)
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    (stdout, v)
}

#[test]
fn relay_counts_every_echo_and_loses_none() {
    let url = real_node();
    let (out, v) = bench(&url, &["relay", "--pairs", "20", "--duration-secs", "1", "--warmup-secs", "0"]);
    let s = &v["scenarios"][0]["data"];
    assert_eq!(s["lost"], 0, "{out}");
    assert_eq!(s["out_of_order"], 0, "{out}");
    assert!(s["echoed"].as_u64().unwrap() > 100, "{out}");
    assert_eq!(s["relayed"].as_u64().unwrap(), 2 * s["echoed"].as_u64().unwrap(), "{out}");
    assert!(out.contains("RTT p50"), "{out}");
}

#[test]
fn relay_in_failure_only_mode_gets_no_acks_and_loses_none() {
    let url = real_node();
    let args =
        ["relay", "--pairs", "20", "--duration-secs", "1", "--warmup-secs", "0", "--ack", "failures-only"];
    let (out, v) = bench(&url, &args);
    let s = &v["scenarios"][0]["data"];
    assert_eq!(s["ack"], "failures-only", "{out}");
    assert_eq!(s["lost"], 0, "{out}");
    assert_eq!(s["out_of_order"], 0, "{out}");
    assert_eq!(s["duplicated"], 0, "{out}");
    assert!(s["echoed"].as_u64().unwrap() > 100, "{out}");
    assert_eq!(s["errors"], serde_json::json!({}), "{out}");
}

#[test]
fn capacity_holds_every_client_and_looks_up_its_topic() {
    let url = real_node();
    let (out, v) = bench(&url, &["capacity", "--clients", "200", "--settle-secs", "0"]);
    let s = &v["scenarios"][0]["data"];
    assert_eq!(s["clients"], 200, "{out}");
    assert_eq!(s["alive_after"], 200, "{out}");
    assert_eq!(s["lookup_topic0_peers"], 10, "{out}");
}

#[test]
fn churn_joins_leaves_and_looks_up() {
    let url = real_node();
    let (out, v) = bench(
        &url,
        &[
            "churn",
            "--topics",
            "5",
            "--churners",
            "20",
            "--lookers",
            "5",
            "--stable-per-topic",
            "2",
            "--duration-secs",
            "1",
        ],
    );
    let s = &v["scenarios"][0]["data"];
    assert_eq!(s["errors"], 0, "{out}");
    assert!(s["joins"].as_u64().unwrap() > 10, "{out}");
    assert!(s["lookups"].as_u64().unwrap() > 10, "{out}");
}
