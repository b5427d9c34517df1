//! A mesh of `signal-mesh-node` processes on 127.0.0.1, for the cross-node scenarios (`mesh`,
//! `relay --cross-node`): the first node gets a key file and a known libp2p port (TCP, or UDP for
//! QUIC), every other node bootstraps from it. Nodes can be added later (mesh join) and killed
//! (eviction). Every node is registered with the watchdog, so a run that overstays
//! `--max-seconds` leaves no process behind.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::Global;
use crate::error::BenchError;
use crate::node::{self, NodeProcess, NodeSpec};

/// How to start every node of the mesh.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    /// The node binary.
    pub binary: PathBuf,
    /// Core every node is pinned to (None: not pinned).
    pub core: Option<usize>,
    /// Flags for every node, after the generator's limits.
    pub extra_args: Vec<String>,
    /// Node `i` logs to `<log_dir>/<log_prefix><i>.log`.
    pub log_dir: PathBuf,
    /// See `log_dir`.
    pub log_prefix: String,
    /// `--max-connections` of each node (minus the generator's margin).
    pub max_connections: u64,
    /// Join the nodes over QUIC instead of TCP + Yamux.
    pub quic: bool,
}

impl ClusterSpec {
    /// The spec the global flags ask for: `--node-bin`, `--node-core`/`--no-pin`, `--node-arg`
    /// (after `extra_args`), logs next to `--node-log`; over TCP + Yamux.
    pub fn from_global(g: &Global, prefix: &str, extra_args: &[String], max_connections: u64) -> ClusterSpec {
        let mut args = extra_args.to_vec();
        args.extend(g.node_args.iter().cloned());
        ClusterSpec {
            binary: g.node_bin.clone().unwrap_or_else(node::default_binary),
            core: (!g.no_pin).then_some(g.node_core),
            extra_args: args,
            log_dir: g.node_log.parent().map(PathBuf::from).unwrap_or_default(),
            log_prefix: prefix.to_owned(),
            max_connections,
            quic: false,
        }
    }
}

/// The running nodes; all are stopped when dropped.
#[derive(Debug)]
pub struct Cluster {
    spec: ClusterSpec,
    /// The nodes, in start order (a killed node stays in the list, not running).
    pub nodes: Vec<NodeProcess>,
    /// The first node's libp2p address with its id: every later node bootstraps from it.
    pub bootstrap: String,
}

impl Cluster {
    /// Starts `n` nodes (the first, then the others bootstrapping from it; they connect in the
    /// background: see [`wait_ready`]).
    pub fn start(spec: ClusterSpec, n: usize) -> Result<Cluster, BenchError> {
        std::fs::create_dir_all(&spec.log_dir)?;
        let key = spec.log_dir.join(format!("{}1.key", spec.log_prefix));
        let _ = std::fs::remove_file(&key);
        let out = std::process::Command::new(&spec.binary).arg("id").arg("--key-file").arg(&key).output()?;
        let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let id = line.split_whitespace().last().unwrap_or_default().to_owned();
        if !out.status.success() || id.is_empty() {
            return Err(BenchError::Process(format!("`{} id` failed: {line}", spec.binary.display())));
        }
        let listen = if spec.quic {
            let port = std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port();
            format!("/ip4/127.0.0.1/udp/{port}/quic-v1")
        } else {
            format!("/ip4/127.0.0.1/tcp/{}", node::free_port()?)
        };
        let bootstrap = format!("{listen}/p2p/{id}");
        let mut cluster = Cluster { spec, nodes: Vec::new(), bootstrap };
        let first =
            vec!["--key-file".to_owned(), key.display().to_string(), "--p2p-listen".to_owned(), listen];
        cluster.start_node(first)?;
        for _ in 1..n {
            cluster.add()?;
        }
        Ok(cluster)
    }

    /// Starts one more node that bootstraps from the first; returns its index.
    pub fn add(&mut self) -> Result<usize, BenchError> {
        self.start_node(vec!["--bootstrap".to_owned(), self.bootstrap.clone()])
    }

    fn start_node(&mut self, args: Vec<String>) -> Result<usize, BenchError> {
        let i = self.nodes.len() + 1;
        let mut extra = args;
        extra.extend(self.spec.extra_args.iter().cloned());
        let spec = NodeSpec {
            binary: self.spec.binary.clone(),
            core: self.spec.core,
            extra_args: extra,
            log: self.spec.log_dir.join(format!("{}{i}.log", self.spec.log_prefix)),
        };
        let n = NodeProcess::start(&spec, self.spec.max_connections)?;
        crate::track_node(n.pid);
        self.nodes.push(n);
        Ok(i - 1)
    }

    /// Pids of the nodes still running.
    pub fn pids(&mut self) -> Vec<u32> {
        self.nodes.iter_mut().filter_map(|n| n.is_running().then_some(n.pid)).collect()
    }

    /// The command line of the first node, for the report.
    pub fn command(&self) -> Option<&str> {
        self.nodes.first().map(|n| n.command.as_str())
    }

    /// Hands the nodes over to the caller, who stops them and forgets them with the watchdog.
    pub fn into_nodes(mut self) -> Vec<NodeProcess> {
        std::mem::take(&mut self.nodes)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.stop();
            crate::untrack_node(n.pid);
        }
    }
}

/// `GET path` on the node's HTTP port: the status code and the body (bodies are small).
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), BenchError> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    // The response ends with the connection (Connection: close); bounded by the caller's timeout.
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| BenchError::Protocol(format!("not an HTTP response from {addr}{path}")))?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((code, body))
}

/// Polls `/ready` every `every` until it answers 200.
pub async fn wait_ready(addr: SocketAddr, every: Duration) -> Result<(), BenchError> {
    loop {
        if let Ok((200, _)) = http_get(addr, "/ready").await {
            return Ok(());
        }
        tokio::time::sleep(every).await;
    }
}
