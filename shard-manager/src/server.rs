//! Runs the shard manager on a given listener until a shutdown future
//! resolves (tests bind port 0).

use crate::config::ManagerConfig;
use crate::layout_service::LayoutService;
use crate::locality::LocalityJudge;
use crate::manager::{BalancePacing, LivenessConfig, Manager};
use crate::moves::MoveDriver;
use crate::rebalance::BalanceStep;
use crate::service::ShardManagerService;
use crate::split_trigger::SplitTrigger;
use crate::store::MetaStore;
use anyhow::Context;
use shoal_config::manager::{MoveBudget, Rebalance};
use shoal_proto::admin::admin_server::AdminServer;
use shoal_proto::sm::shard_manager_server::ShardManagerServer;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// How often observed state is compared with intended state.
const RECONCILE_EVERY: Duration = Duration::from_millis(200);

/// Intended vs observed, forever: primaries on nodes that stopped
/// heartbeating or are draining are replaced (with a higher epoch), then
/// replicas on nodes dead past the grace period, draining or removed are
/// rebuilt elsewhere, then replicas and primaries move towards even loads.
async fn reconcile_loop(manager: Arc<Manager>, policy: Rebalance, budget: MoveBudget) {
    let mut tick = tokio::time::interval(RECONCILE_EVERY);
    let pacing = Arc::new(std::sync::Mutex::new(BalancePacing::new(std::time::Instant::now())));
    loop {
        tick.tick().await;
        let m = manager.clone();
        let (policy, budget, pacing) = (policy.clone(), budget.clone(), pacing.clone());
        let result = tokio::task::spawn_blocking(move || {
            let primaries = m.reconcile_primaries();
            let membership = m.reconcile_membership();
            let mut pacing = pacing.lock().unwrap_or_else(|p| p.into_inner());
            let balancing = m.rebalance(&policy, &budget, &mut pacing, std::time::Instant::now());
            (primaries, membership, balancing)
        })
        .await;
        let (primaries, membership, balancing) = match result {
            Ok(all) => all,
            Err(e) => {
                tracing::warn!(error = %e, "reconciler task failed");
                continue;
            }
        };
        match primaries {
            Ok(changes) => {
                for c in changes {
                    tracing::info!(shard_id = %c.shard, from = ?c.from, to = %c.to, epoch = %c.epoch, "primary moved");
                }
            }
            Err(e) => tracing::warn!(error = %e, "reconciling primaries failed"),
        }
        match membership {
            Ok(steps) => {
                for s in steps {
                    tracing::info!(shard_id = %s.shard, step = ?s.step, conf_ver = s.conf_ver, "replica repair");
                }
            }
            Err(e) => tracing::warn!(error = %e, "reconciling membership failed"),
        }
        match balancing {
            Ok(steps) => {
                for step in steps {
                    match step {
                        BalanceStep::Replica { shard, change, why, .. } => {
                            tracing::info!(shard_id = %shard, from = %change.removing, to = %change.adding, why, "rebalancing a replica")
                        }
                        BalanceStep::Primary { shard, to, why } => {
                            tracing::info!(shard_id = %shard, to = %to, why, "rebalancing a primary")
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "rebalancing failed"),
        }
    }
}

/// Drives μshard moves through their phases (see [`crate::moves`]).
async fn move_loop(manager: Arc<Manager>, driver: Arc<MoveDriver>, budget: MoveBudget) {
    let mut tick = tokio::time::interval(RECONCILE_EVERY);
    loop {
        tick.tick().await;
        driver.tick(&manager, &budget);
    }
}

/// Splits the shards of compact keyspaces that grew too big or stayed too
/// busy (see [`crate::split_trigger`]).
async fn split_loop(manager: Arc<Manager>, mut trigger: SplitTrigger) {
    let mut tick = tokio::time::interval(RECONCILE_EVERY);
    loop {
        tick.tick().await;
        let now = std::time::Instant::now();
        if !trigger.window_over(now) {
            continue;
        }
        manager.roll_ushard_load();
        for (shard, why) in trigger.judge(now, &manager.splittable_usage()) {
            match manager.split_shard(shard, &why) {
                Ok((new_shard, _)) => {
                    trigger.split_into(now, new_shard);
                    tracing::info!(shard = %shard, new_shard = %new_shard, why, "automatic split");
                }
                // Busy with a move, or no room: the next window tries again.
                Err(e) => tracing::info!(shard = %shard, error = %e, "automatic split refused"),
            }
        }
    }
}

/// Moves μshards of akkio keyspaces towards the region their traffic comes
/// from (see [`crate::locality`]).
async fn locality_loop(manager: Arc<Manager>, mut judge: LocalityJudge) {
    let mut tick = tokio::time::interval(RECONCILE_EVERY);
    loop {
        tick.tick().await;
        let now = std::time::Instant::now();
        if !judge.window_over(now) {
            continue;
        }
        let heat = manager.take_heat();
        let candidates = manager.locality_candidates(&heat);
        let decisions = judge.judge(now, &heat, candidates);
        for key in manager.act_on_locality(decisions) {
            judge.moved(now, key);
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
    let reconciler = tokio::spawn(reconcile_loop(
        manager.clone(),
        config.rebalance.clone(),
        config.moves.clone(),
    ));
    let driver = Arc::new(MoveDriver::default());
    let mover = tokio::spawn(move_loop(manager.clone(), driver.clone(), config.moves.clone()));
    let splitter = tokio::spawn(split_loop(manager.clone(), SplitTrigger::new(config.splits.clone())));
    let locality = config.locality.enabled.then(|| {
        tokio::spawn(locality_loop(
            manager.clone(),
            LocalityJudge::new(config.locality.clone()),
        ))
    });
    let stop_moves = driver.clone();
    tonic::transport::Server::builder()
        .add_service(ShardManagerServer::new(ShardManagerService::new(
            manager.clone(),
            driver,
        )))
        .add_service(AdminServer::new(LayoutService::new(manager)))
        .serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(listener), shutdown)
        .await
        .context("serving")?;
    // Wait for the aborted task to go: it holds the store, whose RocksDB
    // lock must be free when this returns (a restart reopens it at once).
    reconciler.abort();
    mover.abort();
    splitter.abort();
    if let Some(task) = &locality {
        task.abort();
    }
    let _ = reconciler.await;
    let _ = mover.await;
    let _ = splitter.await;
    if let Some(task) = locality {
        let _ = task.await;
    }
    stop_moves.stop().await;
    Ok(())
}
