//! Replica repair and node drain on five nodes in two regions: a node dead
//! past the grace period has its replicas rebuilt elsewhere (learner, catch
//! up, promote, remove) and deletes its stale copies when it comes back; a
//! drained node gives up every primary and replica while clients see no
//! failed request.

mod common;

use common::load::{must_load, must_read_back, spawn_writer, voters_of};
use common::{must_start_spec, must_wait_for_map, two_region_spec};
use local_cluster::probe::fully_replicated_without;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_node_is_rebuilt_elsewhere_and_cleans_up_when_it_returns() {
    let grace = Duration::from_secs(4);
    let dir = tempfile::tempdir().unwrap();
    let mut spec = two_region_spec(&dir, grace);
    // The returning node must find itself owning nothing: rebalancing would
    // start giving it replicas back (kv-server/tests/rebalance.rs).
    spec.rebalance.enabled = false;
    let mut tc = must_start_spec(spec, dir).await;
    let client = must_load(&tc.cluster, 500).await;
    let map = tc.cluster.shard_map().await.unwrap();
    // The node holding the most replicas.
    let victim = (1..=5u64)
        .max_by_key(|n| map.shards.iter().filter(|s| s.voters.contains(n)).count())
        .unwrap();
    let victim_shards = map.shards.iter().filter(|s| s.voters.contains(&victim)).count();

    let stop = Arc::new(AtomicBool::new(false));
    let writer = spawn_writer(client.clone(), stop.clone(), 500);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed_at = Instant::now();
    tc.cluster.kill(victim).expect("kill -9");

    let repaired = must_wait_for_map(&tc.cluster, Duration::from_secs(120), "full replication", |m| {
        fully_replicated_without(m, victim, 3)
    })
    .await;
    let took = killed_at.elapsed();
    eprintln!(
        "{victim_shards} replicas of node {victim} rebuilt; full replication {took:?} after kill -9 (grace {grace:?})"
    );
    assert!(took >= grace, "repair must wait for the grace period");
    for s in &repaired.shards {
        let regions: BTreeSet<bool> = s.voters.iter().map(|v| *v <= 3).collect();
        assert_eq!(regions.len(), 2, "still spread over both regions: {s:?}");
        let had_victim = map
            .shards
            .iter()
            .any(|o| o.shard_id == s.shard_id && o.voters.contains(&victim));
        if had_victim {
            // Start, promote, finish: three membership versions.
            assert!(s.conf_ver >= 4, "{s:?}");
        }
    }

    stop.store(true, Ordering::Relaxed);
    let (acked, errors) = writer.await.unwrap();
    eprintln!(
        "{} writes acknowledged during the repair; errors: {errors:?}",
        acked.len()
    );
    assert!(errors.iter().all(|e| e.contains("indeterminate")), "{errors:?}");
    tc.cluster
        .wait_converged(&voters_of(&repaired), Duration::from_secs(60))
        .await
        .expect("replicas converge");
    must_read_back(&client, (0..500).chain(acked)).await;

    // The victim comes back: the map no longer places it anywhere, so it
    // deletes what it still holds.
    tc.cluster.restart(victim).expect("restart");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(status) = tc.cluster.replica_status(victim).await {
            if status.replicas.is_empty() {
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node {victim} kept replicas it no longer owns"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = std::fs::read_to_string(tc.cluster.log_path(victim).unwrap()).unwrap();
    assert_eq!(
        log.matches("removed a replica this node no longer owns").count(),
        victim_shards,
        "every stale replica deleted"
    );
    tc.cluster.stop_all(Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_moves_every_replica_and_primary_off_a_node_with_no_failed_requests() {
    let dir = tempfile::tempdir().unwrap();
    let mut tc = must_start_spec(two_region_spec(&dir, Duration::from_secs(10)), dir).await;
    let client = must_load(&tc.cluster, 200).await;
    let map = tc.cluster.shard_map().await.unwrap();
    let victim = (1..=5u64)
        .max_by_key(|n| (map.shards.iter().filter(|s| s.primary == *n).count(), *n))
        .unwrap();
    assert!(map.shards.iter().any(|s| s.primary == victim));

    // Writes and strong reads run through the whole drain.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = spawn_writer(client.clone(), stop.clone(), 200);
    let read_errors = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let (client, stop, read_errors) = (client.clone(), stop.clone(), read_errors.clone());
        tokio::spawn(async move {
            let mut reads = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let i = reads % 200;
                match client.get(format!("key/{i}")).await {
                    Ok(Some(v)) if v.value == format!("v{i}").into_bytes() => {}
                    other => read_errors.lock().unwrap().push(format!("get key/{i}: {other:?}")),
                }
                reads += 1;
            }
            reads
        })
    };

    // Refused while the node holds replicas.
    let refused = tc.cluster.remove_node(victim).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused:?}");

    // Heartbeats carry each replica's load: with clients running, the map
    // shows requests per second on the nodes.
    let busy = must_wait_for_map(&tc.cluster, Duration::from_secs(10), "load reports", |m| {
        m.nodes.iter().map(|n| n.ops_per_sec).sum::<f64>() > 0.0
    })
    .await;
    eprintln!(
        "load before the drain: {:?} ops/s per node",
        busy.nodes.iter().map(|n| n.ops_per_sec.round()).collect::<Vec<_>>()
    );

    let started = Instant::now();
    tc.cluster.drain_node(victim).await.expect("drain");
    let drained = must_wait_for_map(&tc.cluster, Duration::from_secs(120), "drain", |m| {
        let node = m.nodes.iter().find(|n| n.node_id == victim).unwrap();
        node.replica_count == 0 && node.primary_count == 0 && fully_replicated_without(m, victim, 3)
    })
    .await;
    eprintln!("node {victim} drained in {:?}", started.elapsed());
    assert_eq!(
        drained.nodes.iter().find(|n| n.node_id == victim).unwrap().intent,
        "draining"
    );

    // The drained node deletes its copies while still running.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !tc.cluster.replica_status(victim).await.unwrap().replicas.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "drained node kept replicas");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Let the load run a little past the end of the drain.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let (acked, write_errors) = writer.await.unwrap();
    let reads = reader.await.unwrap();
    let read_errors = read_errors.lock().unwrap().clone();
    eprintln!("during the drain: {} writes, {reads} reads", acked.len());
    assert!(write_errors.is_empty(), "failed writes: {write_errors:?}");
    assert!(read_errors.is_empty(), "failed reads: {read_errors:?}");
    assert!(!acked.is_empty() && reads > 0);
    tc.cluster
        .wait_converged(&voters_of(&drained), Duration::from_secs(60))
        .await
        .expect("replicas converge");
    must_read_back(&client, (0..200).chain(acked)).await;

    // Now it may go; its id is never reused.
    tc.cluster.remove_node(victim).await.expect("remove a drained node");
    let map = tc.cluster.shard_map().await.unwrap();
    assert_eq!(
        map.nodes.iter().find(|n| n.node_id == victim).unwrap().intent,
        "removed"
    );
    tc.cluster.stop_all(Duration::from_secs(10));
}
