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

/// How often observed state is compared with intended state.
const RECONCILE_EVERY: Duration = Duration::from_millis(200);

/// Intended vs observed, forever: today, primaries that stopped
/// heartbeating are replaced (with a higher epoch).
async fn reconcile_loop(manager: Arc<Manager>) {
    let mut tick = tokio::time::interval(RECONCILE_EVERY);
    loop {
        tick.tick().await;
        let m = manager.clone();
        match tokio::task::spawn_blocking(move || m.reconcile_primaries()).await {
            Ok(Ok(changes)) => {
                for c in changes {
                    tracing::info!(shard_id = c.shard, from = ?c.from, to = c.to, epoch = c.epoch, "primary failover");
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "reconciling primaries failed"),
            Err(e) => tracing::warn!(error = %e, "reconciler task failed"),
        }
    }
}

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
    let reconciler = tokio::spawn(reconcile_loop(manager.clone()));
    tonic::transport::Server::builder()
        .add_service(ShardManagerServer::new(ShardManagerService::new(manager)))
        .serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(listener), shutdown)
        .await
        .context("serving")?;
    // Wait for the aborted task to go: it holds the store, whose RocksDB
    // lock must be free when this returns (a restart reopens it at once).
    reconciler.abort();
    let _ = reconciler.await;
    Ok(())
}
