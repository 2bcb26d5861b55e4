//! Connections from the CLI to the servers it administers.

use crate::Cli;
use anyhow::Context;
use shoal_proto::sm::shard_manager_client::ShardManagerClient;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// A channel to one server (a node or the shard manager), failing fast when
/// nothing listens.
pub(crate) async fn channel(addr: &str) -> anyhow::Result<Channel> {
    Endpoint::from_shared(format!("http://{addr}"))
        .with_context(|| format!("{addr:?} is not HOST:PORT"))?
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("connecting to {addr}"))
}

/// A client of the shard manager at `--shard-manager`.
pub(crate) async fn shard_manager(cli: &Cli) -> anyhow::Result<ShardManagerClient<Channel>> {
    let ch = channel(&cli.shard_manager)
        .await
        .context("is the shard manager running? (--shard-manager)")?;
    Ok(ShardManagerClient::new(ch))
}
