//! The `signal-mesh-node` binary: flags -> [`Config`], logging, bind, one line on stdout, serve
//! until SIGINT or SIGTERM.

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use signal_mesh_node::{Config, LogFormat};
use tracing::error;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The command line: the node's flags, or a subcommand.
#[derive(Debug, Parser)]
#[command(
    name = "signal-mesh-node",
    version,
    about = "Signal Mesh signal node: WebRTC discovery and signaling relay"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Tool>,
    #[command(flatten)]
    config: Config,
}

#[derive(Debug, Subcommand)]
enum Tool {
    /// Print the node id (libp2p peer id) of a key file, creating the key if it is missing, so
    /// bootstrap lists can be written before any node starts. Prints one line; the id is its
    /// last word.
    Id {
        /// The key file (64 hex characters; created with mode 0600 if missing).
        #[arg(long, env = "SIGNAL_MESH_KEY_FILE")]
        key_file: std::path::PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Tool::Id { key_file }) = cli.command {
        return match signal_mesh_node::identity::load_or_create(&key_file) {
            Ok(identity) => {
                println!("node id {}", signal_mesh_node::identity::node_key(&identity));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("signal-mesh-node id: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let config = cli.config;
    init_logging(config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            error!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> Result<(), signal_mesh_node::Error> {
    let node = signal_mesh_node::Node::new(config.clone())?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    // The one line on stdout; scripts and tests parse it. The node id and the mesh multiaddrs
    // are logged (stderr).
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "signal-mesh-node listening on {addr}")?;
    stdout.flush()?;
    drop(stdout);
    node.serve(listener, shutdown_signal()).await
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Logs to stderr at the level in `SIGNAL_MESH_LOG` (default `info`).
///
/// The default leaves out Kademlia's behaviour warnings: it warns "Failed to trigger bootstrap:
/// No known peers" whenever a node without links gets a listen address, which is every lone
/// node's start; the mesh's own log says at INFO when links come and go.
fn init_logging(format: LogFormat) {
    let filter: Targets =
        std::env::var("SIGNAL_MESH_LOG").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            Targets::new()
                .with_default(tracing::Level::INFO)
                .with_target("libp2p_kad::behaviour", tracing::Level::ERROR)
        });
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Plain => {
            registry.with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr)).init()
        }
        LogFormat::Json => {
            registry.with(tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr)).init()
        }
    }
}
