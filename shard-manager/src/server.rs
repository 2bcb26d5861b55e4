//! Runs the shard manager on a given listener until a shutdown future
//! resolves (tests bind port 0).

use crate::config::ManagerConfig;
use crate::manager::{LivenessConfig, Manager};
use crate::service::ShardManagerService;
use crate::store::MetaStore;
use anyhow::Context;
use shoal_proto::sm::shard_manager_server::ShardManagerServer;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

pub async fn run(
    config: ManagerConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir).with_context(|| format!("creating {}", config.data_dir.display()))?;
    let (store, state) = MetaStore::open(&config.data_dir.join("db")).context("opening the state database")?;
    tracing::info!(
        nodes = state.nodes.len(),
        keyspaces = state.keyspaces.len(),
        shards = state.shards.len(),
        "loaded state"
    );
    let liveness = LivenessConfig {
        suspect_after: Duration::from_millis(config.suspect_after_ms),
        dead_after: Duration::from_millis(config.dead_after_ms),
    };
    let manager = Arc::new(Manager::new(store, state, liveness));
    tonic::transport::Server::builder()
        .add_service(ShardManagerServer::new(ShardManagerService::new(manager)))
        .serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(listener), shutdown)
        .await
        .context("serving")?;
    Ok(())
}
