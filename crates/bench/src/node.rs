//! Starting, measuring and stopping the `signal-mesh-node` process, and reading `/proc`.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

use crate::error::BenchError;
use crate::ws::WsUrl;

/// What the node prints once it is bound.
const LISTENING_PREFIX: &str = "signal-mesh-node listening on ";

/// How long the node gets to print its listening line.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the node gets to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// CPU time and memory of a process at one instant.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcSample {
    /// utime + stime, in microseconds.
    pub cpu_us: u64,
    /// Resident set size, KiB.
    pub rss_kib: u64,
    /// Peak resident set size, KiB.
    pub hwm_kib: u64,
    /// Number of threads.
    pub threads: u64,
}

/// Reads `/proc/PID/stat` and `/proc/PID/status` (`pid` None: this process).
pub fn sample(pid: Option<u32>) -> Result<ProcSample, BenchError> {
    let dir = match pid {
        Some(p) => format!("/proc/{p}"),
        None => "/proc/self".to_owned(),
    };
    let stat = std::fs::read_to_string(format!("{dir}/stat"))?;
    // The command name (field 2) may contain spaces; the fields after its ')' are fixed.
    let after = stat.rsplit_once(')').map(|(_, a)| a).unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After ')': state is index 0, so utime (field 14) is index 11 and stime (15) index 12.
    let ticks = |i: usize| -> Result<u64, BenchError> {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .ok_or_else(|| BenchError::Process(format!("unreadable {dir}/stat")))
    };
    let hz = rustix::param::clock_ticks_per_second().max(1);
    let cpu_us = (ticks(11)? + ticks(12)?) * 1_000_000 / hz;
    let status = std::fs::read_to_string(format!("{dir}/status"))?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok(ProcSample { cpu_us, rss_kib: field("VmRSS:"), hwm_kib: field("VmHWM:"), threads: field("Threads:") })
}

/// How to start the node.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    /// The release binary.
    pub binary: PathBuf,
    /// Pin to this core with `taskset` (None: no pinning).
    pub core: Option<usize>,
    /// Extra flags, after the generator's own.
    pub extra_args: Vec<String>,
    /// Where the node's stdout and stderr go.
    pub log: PathBuf,
}

/// A node the generator started; stopped (SIGTERM, then SIGKILL) when dropped.
#[derive(Debug)]
pub struct NodeProcess {
    child: Child,
    /// The node's pid.
    pub pid: u32,
    /// Its edge WebSocket.
    pub url: WsUrl,
    /// The command line it was started with, for the report.
    pub command: String,
}

/// Limits raised so the node never rate-limits or disconnects the benchmark's clients.
pub fn benchmark_limit_args(max_connections: u64) -> Vec<String> {
    [
        ("--listen", "127.0.0.1:0".to_owned()),
        ("--max-connections", max_connections.to_string()),
        ("--requests-per-second", "1000000".to_owned()),
        ("--request-burst", "1000000".to_owned()),
        ("--idle-timeout-ms", "600000".to_owned()),
        ("--max-frame-bytes", "65536".to_owned()),
        ("--max-payload-bytes", "32768".to_owned()),
        ("--outbound-queue-frames", "1024".to_owned()),
        // Thousands of clients come from a few loopback addresses.
        ("--max-connections-per-ip", "0".to_owned()),
        ("--max-pending-connections", "4096".to_owned()),
    ]
    .into_iter()
    .flat_map(|(k, v)| [k.to_owned(), v])
    .collect()
}

impl NodeProcess {
    /// Starts the node and waits for its listening line.
    pub fn start(spec: &NodeSpec, max_connections: u64) -> Result<NodeProcess, BenchError> {
        if !spec.binary.is_file() {
            return Err(BenchError::Process(format!(
                "{} not found: build it with `cargo build --release -p signal-mesh-node` or pass --node-bin",
                spec.binary.display()
            )));
        }
        let mut args = benchmark_limit_args(max_connections);
        args.extend(spec.extra_args.iter().cloned());
        let mut cmd = match spec.core {
            Some(core) if have_taskset() => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(core.to_string()).arg(&spec.binary);
                c
            }
            _ => Command::new(&spec.binary),
        };
        cmd.args(&args);
        let log = std::fs::File::create(&spec.log)?;
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::from(log.try_clone()?));
        // Keep the node's own logging quiet unless asked otherwise: logs are not what we measure.
        if std::env::var_os("SIGNAL_MESH_LOG").is_none() {
            cmd.env("SIGNAL_MESH_LOG", "warn");
        }
        let command = std::iter::once(format!("{:?}", cmd.get_program()))
            .chain(cmd.get_args().map(|a| a.to_string_lossy().into_owned()))
            .collect::<Vec<_>>()
            .join(" ")
            .replace('"', "");
        let mut child = cmd.spawn()?;
        let pid = child.id();
        let stdout = child.stdout.take().ok_or_else(|| BenchError::Process("no stdout pipe".into()))?;
        // A thread reads the listening line, then copies the rest of stdout into the log so the
        // node never blocks on a full pipe.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let mut log = log;
            loop {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        use std::io::Write;
                        let _ = log.write_all(line.as_bytes());
                        if let Some(addr) = line.trim().strip_prefix(LISTENING_PREFIX) {
                            let _ = tx.send(addr.to_owned());
                            break;
                        }
                    }
                }
            }
            let mut rest = reader.into_inner();
            let mut buf = [0u8; 4096];
            while let Ok(n) = rest.read(&mut buf) {
                if n == 0 {
                    break;
                }
                use std::io::Write;
                let _ = log.write_all(&buf[..n]);
            }
        });
        let mut node = NodeProcess { child, pid, url: WsUrl::parse("ws://127.0.0.1:1/signal")?, command };
        let addr = match rx.recv_timeout(START_TIMEOUT) {
            Ok(addr) => addr,
            Err(_) => {
                let status = node.child.try_wait().ok().flatten();
                return Err(BenchError::Process(format!(
                    "node did not print its listening line within {START_TIMEOUT:?} (exit status {status:?}); \
                     see {}",
                    spec.log.display()
                )));
            }
        };
        node.url = WsUrl::parse(&format!("ws://{addr}/signal"))?;
        Ok(node)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL at once, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, wait, then SIGKILL.
    pub fn stop(&mut self) {
        if !self.is_running() {
            return;
        }
        if let Some(pid) = i32::try_from(self.pid).ok().and_then(Pid::from_raw) {
            let _ = kill_process(pid, Signal::TERM);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if !self.is_running() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

fn have_taskset() -> bool {
    Command::new("taskset")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Pins this process (its current thread, and so every thread it starts later) to `core`.
pub fn pin_self(core: usize) -> Result<(), BenchError> {
    let mut set = rustix::thread::CpuSet::new();
    set.set(core);
    rustix::thread::sched_setaffinity(None, &set).map_err(std::io::Error::from)?;
    Ok(())
}

/// Raises the open-file soft limit to the hard limit; returns the new soft limit.
pub fn raise_nofile() -> Result<u64, BenchError> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    lim.current = lim.maximum;
    setrlimit(Resource::Nofile, lim).map_err(std::io::Error::from)?;
    Ok(getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX))
}

/// Machine facts for the report.
pub fn machine() -> serde_json::Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, m)| m.trim()))
        .unwrap_or("unknown")
        .to_owned();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned();
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let online =
        std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default().trim().to_owned();
    serde_json::json!({ "cpu_model": model, "kernel": kernel, "cpus_online": online, "cpus_usable": cpus })
}

/// The default release binary, relative to the workspace target directory.
pub fn default_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("SIGNAL_MESH_NODE_BIN") {
        return PathBuf::from(p);
    }
    // Next to this binary (target/release/signal-mesh-bench) first, then ./target/release.
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        let p = dir.join("signal-mesh-node");
        if p.is_file() {
            return p;
        }
    }
    Path::new("target/release/signal-mesh-node").to_path_buf()
}

/// A free TCP port on 127.0.0.1 (for a node's libp2p listener, which must be known in advance).
pub fn free_port() -> Result<u16, BenchError> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
