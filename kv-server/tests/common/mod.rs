//! Helpers shared by the process-level integration tests. `must_*` helpers
//! panic with context instead of returning errors.

#![allow(dead_code)]

pub mod in_process;
pub mod load;
pub mod schedules;

use kv_client::{ClientConfig, ShoalClient};
use kv_server::config::RaftTuning;
use local_cluster::{LocalCluster, LocalClusterSpec, ShardManagerAt};
use shoal_proto::sm::ShardMap;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;
use tempfile::TempDir;

pub fn kv_server_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kv-server"))
}

/// Raft timing for tests: fast elections.
pub fn fast_raft() -> RaftTuning {
    RaftTuning {
        heartbeat_interval_ms: 50,
        election_timeout_min_ms: 300,
        election_timeout_max_ms: 600,
        ..RaftTuning::default()
    }
}

pub struct TestCluster {
    pub cluster: LocalCluster,
    pub dir: TempDir,
}

/// The shard-manager binary, built next to kv-server by the workspace test
/// command (`make test`).
pub fn shard_manager_bin() -> PathBuf {
    let path = kv_server_bin().with_file_name("shard-manager");
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build -p shard-manager` (make test does)",
        path.display()
    );
    path
}

pub fn test_spec(dir: &TempDir, nodes: u64, shards: u64) -> LocalClusterSpec {
    let mut spec = LocalClusterSpec::new(dir.path());
    spec.nodes = nodes;
    spec.shards = shards;
    spec.ushards = 64;
    spec.kv_server_bin = kv_server_bin();
    spec.raft = fast_raft();
    spec
}

pub async fn must_start_cluster(nodes: u64, shards: u64) -> TestCluster {
    must_start_tuned(nodes, shards, |_| {}).await
}

/// [`must_start_cluster`] with the test Raft timing changed by `tune`.
pub async fn must_start_tuned(nodes: u64, shards: u64, tune: impl FnOnce(&mut RaftTuning)) -> TestCluster {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut spec = test_spec(&dir, nodes, shards);
    tune(&mut spec.raft);
    must_start_spec(spec, dir).await
}

pub async fn must_start_spec(spec: LocalClusterSpec, dir: TempDir) -> TestCluster {
    let nodes = spec.nodes;
    let cluster = LocalCluster::start(spec).expect("start local cluster");
    if let Err(e) = cluster.ensure_default_keyspace(Duration::from_secs(60)).await {
        panic!("default keyspace: {e:#}");
    }
    if let Err(e) = cluster.wait_for_leaders(Duration::from_secs(60)).await {
        for id in 1..=nodes {
            if let Some(path) = cluster.log_path(id) {
                eprintln!(
                    "--- node {id} log ---\n{}",
                    std::fs::read_to_string(path).unwrap_or_default()
                );
            }
        }
        panic!("cluster did not elect leaders: {e}");
    }
    TestCluster { cluster, dir }
}

/// Prints the last `lines` lines of the logs of nodes 1..=`nodes`: what a
/// failing test leaves for whoever reads its output.
pub fn print_node_logs(cluster: &LocalCluster, nodes: u64, lines: usize) {
    for id in 1..=nodes {
        let Some(path) = cluster.log_path(id) else { continue };
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(lines).collect();
        eprintln!("--- node {id} log, last {lines} lines ---");
        for line in tail.into_iter().rev() {
            eprintln!("{line}");
        }
    }
}

pub async fn must_connect(cluster: &LocalCluster) -> ShoalClient {
    must_connect_to(cluster.endpoints()).await
}

/// A client over `endpoints` (nodes or a shard manager), 20 s per call.
pub async fn must_connect_to(endpoints: Vec<String>) -> ShoalClient {
    let config = ClientConfig {
        endpoints,
        timeout: Duration::from_secs(20),
        ..ClientConfig::default()
    };
    ShoalClient::connect(config).await.expect("connect client")
}

/// Five nodes (three in east, two in west) under a shard manager whose
/// repair grace period is `dead_after`, with the default keyspace of four
/// shards placed.
pub async fn must_start_two_region_cluster(dead_after: Duration) -> TestCluster {
    let dir = tempfile::tempdir().unwrap();
    let spec = two_region_spec(&dir, dead_after);
    must_start_spec(spec, dir).await
}

/// The spec [`must_start_two_region_cluster`] starts.
pub fn two_region_spec(dir: &TempDir, dead_after: Duration) -> LocalClusterSpec {
    let mut spec = test_spec(dir, 5, 4);
    spec.shard_manager = true;
    spec.shard_manager_bin = shard_manager_bin();
    spec.regions = ["east", "east", "east", "west", "west"].map(String::from).to_vec();
    spec.dead_after = dead_after;
    spec
}

/// Polls the shard map until `done` holds, or panics after `timeout`.
pub async fn must_wait_for_map(
    cluster: &LocalCluster,
    timeout: Duration,
    what: &str,
    done: impl Fn(&ShardMap) -> bool,
) -> ShardMap {
    wait_for_map(&cluster.shard_manager().unwrap(), timeout, what, done).await
}

/// [`must_wait_for_map`] at a shard manager.
pub async fn wait_for_map(
    manager: &ShardManagerAt,
    timeout: Duration,
    what: &str,
    done: impl Fn(&ShardMap) -> bool,
) -> ShardMap {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Ok(map) = manager.shard_map().await {
            if done(&map) {
                return map;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("{what}: not reached within {timeout:?}; map: {map:#?}");
            }
        } else if tokio::time::Instant::now() >= deadline {
            panic!("{what}: shard manager unreachable for {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls until every shard's Raft leader is the shard manager's primary.
pub async fn must_align(cluster: &LocalCluster) -> ShardMap {
    align(&cluster.shard_manager().unwrap(), || cluster.leaders()).await
}

/// [`must_align`] with the leaders `leaders` reports (shard → node).
pub async fn align<F, Fut>(manager: &ShardManagerAt, leaders: F) -> ShardMap
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = HashMap<u64, u64>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let map = manager.shard_map().await.expect("shard map");
        let leaders = leaders().await;
        let misaligned: Vec<_> = map
            .shards
            .iter()
            .filter(|s| leaders.get(&s.shard_id) != Some(&s.primary))
            .map(|s| s.shard_id)
            .collect();
        if misaligned.is_empty() {
            return map;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "leaders never matched primaries: {misaligned:?} {leaders:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
