//! Rebalancing under load: a node that joins a running cluster, a node
//! that is drained and re-activated, and a node that comes back after its
//! replicas were rebuilt elsewhere each receive replicas and primaries until
//! every node is within one of the others, while writers run; nothing
//! acknowledged is lost, every replica converges, and a node keeps no copy
//! of a shard it gave away.

mod common;

use common::load::{must_load, must_read_back, spawn_writer, voters_of};
use common::{must_start_spec, must_wait_for_map, shard_manager_bin, test_spec};
use shoal_proto::sm::ShardMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Replica and primary counts of the usable nodes are within one of each
/// other, nothing is changing, and every shard has three distinct voters.
fn balanced(map: &ShardMap, usable: &[u64]) -> bool {
    let count = |f: &dyn Fn(&shoal_proto::sm::NodeState) -> u32| {
        let values: Vec<u32> = map
            .nodes
            .iter()
            .filter(|n| usable.contains(&n.node_id))
            .map(f)
            .collect();
        values.iter().max().unwrap_or(&0) - values.iter().min().unwrap_or(&0)
    };
    count(&|n| n.replica_count) <= 1
        && count(&|n| n.primary_count) <= 1
        && map
            .shards
            .iter()
            .all(|s| s.change_phase.is_empty() && s.voters.len() == 3)
}

/// The replicas each node reports hosting equal what the map places on it.
async fn must_host_only_what_the_map_says(cluster: &local_cluster::LocalCluster, map: &ShardMap, nodes: &[u64]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for node in nodes {
        let mut wanted: Vec<u64> = map
            .shards
            .iter()
            .filter(|s| s.voters.contains(node) || s.learners.contains(node))
            .map(|s| s.shard_id)
            .collect();
        wanted.sort();
        loop {
            let mut hosted: Vec<u64> = cluster
                .replica_status(*node)
                .await
                .map(|s| s.replicas.iter().map(|r| r.shard_id).collect())
                .unwrap_or_default();
            hosted.sort();
            if hosted == wanted {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "node {node} hosts {hosted:?}, the map places {wanted:?} on it"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_drained_and_returning_nodes_fill_up_until_balanced_with_nothing_lost() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = test_spec(&dir, 4, 6);
    spec.shard_manager = true;
    spec.shard_manager_bin = shard_manager_bin();
    spec.late_nodes = 1;
    spec.dead_after = Duration::from_secs(4);
    let mut tc = must_start_spec(spec, dir).await;
    let client = must_load(&tc.cluster, 300).await;
    let before = tc.cluster.shard_map().await.unwrap();
    assert!(before.shards.iter().all(|s| !s.voters.contains(&4)));

    let stop = Arc::new(AtomicBool::new(false));
    let writer = spawn_writer(client.clone(), stop.clone(), 300);

    // 1. A new node joins: 18 replicas over 4 nodes (5, 5, 4, 4) and 6
    //    primaries (2, 2, 1, 1).
    let joined_at = Instant::now();
    tc.cluster.join_node(4).expect("node 4 joins");
    let map = must_wait_for_map(&tc.cluster, Duration::from_secs(120), "balanced after a join", |m| {
        balanced(m, &[1, 2, 3, 4])
    })
    .await;
    let node4 = map.nodes.iter().find(|n| n.node_id == 4).unwrap();
    eprintln!(
        "node 4 balanced in {:?}: {} replicas, {} primaries",
        joined_at.elapsed(),
        node4.replica_count,
        node4.primary_count
    );
    assert_eq!(node4.replica_count, 4);
    assert!(node4.primary_count >= 1);
    must_host_only_what_the_map_says(&tc.cluster, &map, &[1, 2, 3, 4]).await;

    // 2. Drained, it gives everything away; re-activated, it fills up again.
    tc.cluster.drain_node(4).await.expect("drain");
    must_wait_for_map(&tc.cluster, Duration::from_secs(120), "drained", |m| {
        let n = m.nodes.iter().find(|n| n.node_id == 4).unwrap();
        n.replica_count == 0 && balanced(m, &[1, 2, 3])
    })
    .await;
    tc.cluster.activate_node(4).await.expect("activate");
    let map = must_wait_for_map(
        &tc.cluster,
        Duration::from_secs(120),
        "balanced after activation",
        |m| balanced(m, &[1, 2, 3, 4]),
    )
    .await;
    assert_eq!(map.nodes.iter().find(|n| n.node_id == 4).unwrap().replica_count, 4);

    // 3. Killed past the grace period, its replicas are rebuilt on the
    //    others; back, it holds stale copies and is given replicas again.
    tc.cluster.kill(4).expect("kill -9");
    must_wait_for_map(&tc.cluster, Duration::from_secs(120), "repaired without node 4", |m| {
        m.shards
            .iter()
            .all(|s| !s.voters.contains(&4) && s.change_phase.is_empty())
    })
    .await;
    tc.cluster.start_node(4).expect("restart");
    let map = must_wait_for_map(
        &tc.cluster,
        Duration::from_secs(120),
        "balanced after the return",
        |m| balanced(m, &[1, 2, 3, 4]),
    )
    .await;

    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let (acked, errors) = writer.await.unwrap();
    eprintln!("{} writes acknowledged; errors: {errors:?}", acked.len());
    // A kill -9 may leave a write's outcome unknown; nothing else fails.
    assert!(errors.iter().all(|e| e.contains("indeterminate")), "{errors:?}");
    assert!(acked.len() > 100, "the writer kept writing: {}", acked.len());
    must_host_only_what_the_map_says(&tc.cluster, &map, &[1, 2, 3, 4]).await;
    tc.cluster
        .wait_converged(&voters_of(&map), Duration::from_secs(60))
        .await
        .expect("replicas converge");
    must_read_back(&client, (0..300).chain(acked)).await;
    tc.cluster.stop_all(Duration::from_secs(10));
}
