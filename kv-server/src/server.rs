//! Wires a node together: engine, Raft transport, replicas, client services.
//! Takes its listeners and a shutdown future as arguments, so tests can bind
//! port 0 and stop a node without signals.

use crate::config::NodeConfig;
use crate::engine::{RocksEngine, SharedEngine};
use crate::layout::ClusterLayout;
use crate::rpc::admin_service::AdminService;
use crate::rpc::kv_service::KvService;
use crate::rpc::mover_service::MoverService;
use crate::rpc::raft_service::RaftService;
use crate::rpc::sm_agent;
use crate::shard::host::NodeHost;
use crate::transport_filter::TransportFilter;
use crate::ttl::ExpiryHorizons;
use anyhow::Context;
use shoal_proto::admin::admin_server::AdminServer;
use shoal_proto::kv::kv_server::KvServer;
use shoal_proto::mover::mover_server::MoverServer;
use shoal_proto::raft::raft_transport_server::RaftTransportServer;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

/// Largest gRPC message accepted: a full batch plus headroom.
const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// Accepted connections with Nagle's algorithm off: small Raft messages and
/// replies must leave at once, not wait ~40 ms for a delayed ACK.
fn no_delay(listener: TcpListener) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use futures::StreamExt;
    TcpListenerStream::new(listener).map(|stream| {
        if let Ok(stream) = &stream {
            let _ = stream.set_nodelay(true);
        }
        stream
    })
}

/// Waits (briefly) until this is the last handle on the engine, so the
/// database closes here and not on a background thread racing process exit
/// (RocksDB aborts with "pthread lock: Invalid argument" when that happens).
async fn close_engine(engine: SharedEngine) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while Arc::strong_count(&engine) > 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if Arc::strong_count(&engine) > 1 {
        tracing::warn!("storage still in use at exit");
    }
    let _ = tokio::task::spawn_blocking(move || drop(engine)).await;
}

/// Runs a node until `shutdown` resolves, then stops it cleanly.
pub async fn run(
    config: NodeConfig,
    client_listener: TcpListener,
    raft_listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    run_filtered(config, client_listener, raft_listener, shutdown, TransportFilter::new()).await
}

/// [`run`], with the node's messages to its peers and to the shard manager
/// passing through `filter`: the in-process test harness hands every node
/// of a cluster the same one, and cuts or slows links in it.
pub async fn run_filtered(
    config: NodeConfig,
    client_listener: TcpListener,
    raft_listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    filter: Arc<TransportFilter>,
) -> anyhow::Result<()> {
    crate::config::check_build_supports(&config)?;
    std::fs::create_dir_all(&config.data_dir).with_context(|| format!("creating {}", config.data_dir.display()))?;
    // The layout comes from a static file, or from the shard manager after
    // registering (which also gives this node its id).
    let (node_id, layout, sm_client) = match (&config.layout_file, &config.shard_manager) {
        (Some(path), _) => {
            let node_id = config.node_id.context("node_id: required with layout_file")?;
            crate::identity::claim(&config.data_dir, node_id)?;
            (node_id, ClusterLayout::load(path)?, None)
        }
        (None, Some(addr)) => {
            let mut client = sm_agent::connect(addr)?;
            let node_id = sm_agent::register(&config, &mut client, Duration::from_secs(60)).await?;
            let layout = sm_agent::fetch_layout(&mut client).await?;
            tracing::info!(node_id = %node_id, map_version = layout.version, "registered with the shard manager");
            (node_id, layout, Some(client))
        }
        (None, None) => anyhow::bail!("layout_file, shard_manager: set exactly one"),
    };
    let horizons = ExpiryHorizons::new();
    let reclaim = horizons.clone();
    let engine: SharedEngine = Arc::new(
        RocksEngine::open_with(
            &config.data_dir.join("db"),
            Some(Arc::new(move |key: &[u8], value: &[u8]| {
                reclaim.reclaimable(key, value)
            })),
            config.faults.lose_unsynced_writes,
        )
        .context("opening the RocksDB database")?,
    );
    let host = NodeHost::new(node_id, &config, layout, engine.clone(), horizons, filter)?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };

    // Peers must reach us while our shards start, so the transport comes first.
    let raft_service = RaftService::new(host.clone(), config.data_dir.join("snapshots").join("incoming"));
    let raft_server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(
                RaftTransportServer::new(raft_service)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES),
            )
            .serve_with_incoming_shutdown(no_delay(raft_listener), stopped(stop_rx.clone())),
    );

    host.sync_shards(&config).await?;
    tracing::info!(node_id = %host.node_id, shards = host.replicas().len(), "node started");
    let heartbeats = sm_client.map(|client| {
        tokio::spawn(sm_agent::heartbeat_loop(
            host.clone(),
            config.clone(),
            client,
            stop_rx.clone(),
        ))
    });

    let sweeper = tokio::spawn(leader_chores(host.clone(), config.raft.clone(), stop_rx.clone()));

    let client_server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(
                KvServer::new(KvService::new(host.clone()))
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES),
            )
            .add_service(AdminServer::new(AdminService::new(host.clone())))
            .add_service(
                MoverServer::new(MoverService::new(host.clone()))
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES),
            )
            .serve_with_incoming_shutdown(no_delay(client_listener), stopped(stop_rx.clone())),
    );

    shutdown.await;
    tracing::info!(node_id = %host.node_id, "shutting down");
    let _ = stop_tx.send(true);
    // Stop taking client requests first, then stop Raft, then the transport.
    client_server
        .await
        .context("client server task")?
        .context("client server")?;
    if let Some(heartbeats) = heartbeats {
        let _ = heartbeats.await;
    }
    let _ = sweeper.await;
    host.shutdown().await;
    raft_server.await.context("raft server task")?.context("raft server")?;
    drop(host);
    close_engine(engine).await;
    Ok(())
}

/// What a node does as leader of its shards, periodically: every
/// `idle_client_sweep_ms` it proposes forgetting the exactly-once records of
/// idle clients, every `clock_tick_ms` it ticks the apply clock of shards
/// nobody wrote to meanwhile (docs/consistency.md), and four times a
/// transaction window it raises the transaction floors
/// (docs/transactions.md).
async fn leader_chores(
    host: Arc<NodeHost>,
    tuning: crate::config::RaftTuning,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let every = |ms: u64| {
        let mut interval = tokio::time::interval(std::time::Duration::from_millis(ms.max(1)));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval
    };
    let mut sweeps = every(tuning.idle_client_sweep_ms);
    let mut clock_ticks = every(tuning.clock_tick_ms);
    let mut txn_floors = every(tuning.txn_window_ms / 4);
    // The only change the stop channel ever sees is "stop".
    while !*stop.borrow() {
        tokio::select! {
            _ = stop.changed() => return,
            _ = sweeps.tick() => host.forget_idle_clients(tuning.idle_client_expiry_ms).await,
            _ = clock_ticks.tick() => host.tick_idle_clocks(tuning.clock_tick_ms).await,
            _ = txn_floors.tick() => host.advance_txn_floors(tuning.txn_window_ms).await,
        }
    }
}
