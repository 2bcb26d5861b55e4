//! `shoal playground`: a shard manager and kv-server processes on this
//! machine, until Ctrl-C.

use crate::{DEFAULT_ENDPOINTS, DEFAULT_SHARD_MANAGER};
use anyhow::Context;
use local_cluster::{LocalCluster, LocalClusterSpec, Ports};
use std::path::PathBuf;
use std::time::Duration;

pub struct Options {
    pub data_dir: PathBuf,
    pub nodes: u64,
    pub shards: u64,
    pub ushards: u32,
    pub regions: Vec<String>,
    pub base_port: u16,
}

pub async fn run(options: Options) -> anyhow::Result<()> {
    let mut spec = LocalClusterSpec::new(&options.data_dir);
    spec.nodes = options.nodes;
    spec.shards = options.shards;
    spec.ushards = options.ushards;
    spec.regions = options.regions;
    spec.shard_manager = true;
    spec.ports = Ports::Fixed {
        client_base: options.base_port,
        raft_base: options.base_port.saturating_add(100),
    };
    let mut cluster = LocalCluster::start(spec)?;
    cluster
        .ensure_default_keyspace(Duration::from_secs(60))
        .await
        .context("creating the default keyspace")?;
    let leaders = cluster
        .wait_for_leaders(Duration::from_secs(60))
        .await
        .context("waiting for the cluster to elect leaders")?;
    let sm = cluster.shard_manager_addr().unwrap_or_default().to_string();
    let endpoints = std::iter::once(sm.clone())
        .chain(cluster.endpoints())
        .collect::<Vec<_>>()
        .join(",");
    println!(
        "Shoal playground is up: a shard manager, {} nodes, {} shards.",
        cluster.endpoints().len(),
        leaders.len()
    );
    println!("  data:          {}", cluster.data_dir().display());
    println!("  shard manager: {sm}");
    println!("  endpoints:     {endpoints}");
    println!("  logs:          {}/*.log", cluster.data_dir().display());
    let shoal = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "shoal".into());
    println!("Try, in another terminal:");
    println!("  {shoal} put hello world && {shoal} get hello");
    if endpoints != DEFAULT_ENDPOINTS || sm != DEFAULT_SHARD_MANAGER {
        println!("  (first: export SHOAL_ENDPOINTS={endpoints} SHOAL_SHARD_MANAGER={sm})");
    }
    println!("Ctrl-C stops the cluster.");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = tick.tick() => {
                for (node, status) in cluster.reap_exited() {
                    println!("node {node} exited ({status}); the others keep serving. Restart the playground to bring it back.");
                }
            }
        }
    }
    println!("stopping...");
    cluster.stop_all(Duration::from_secs(10));
    println!("stopped.");
    Ok(())
}
