//! The kv-server binary: `kv-server --config node.toml`.

use anyhow::Context;
use clap::Parser;
use std::path::PathBuf;
use tokio::signal::unix::{signal, SignalKind};

#[derive(Parser)]
#[command(about = "Shoal replica node")]
struct Args {
    /// Path of the node's TOML configuration (see kv-server/example.toml).
    #[arg(long)]
    config: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // openraft logs every failed heartbeat to a down peer at WARN, ten times
    // a second; ERROR keeps its real problems without that noise.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,openraft=error".into()),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let args = Args::parse();
    let config = kv_server::config::load(&args.config)?;
    let client = tokio::net::TcpListener::bind(&config.listen_client)
        .await
        .with_context(|| format!("binding listen_client {}", config.listen_client))?;
    let raft = tokio::net::TcpListener::bind(&config.listen_raft)
        .await
        .with_context(|| format!("binding listen_raft {}", config.listen_raft))?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    };
    kv_server::server::run(config, client, raft, shutdown).await
}
