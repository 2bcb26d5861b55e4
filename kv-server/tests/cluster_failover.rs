//! A 3-node, 4-shard cluster of real processes: 10,000 writes, kill -9 of a
//! shard leader while writes are in flight, writes continue, every
//! acknowledged write reads back, and the killed node restarts and catches
//! up through a snapshot because its log was purged meanwhile.

mod common;

use common::{must_connect, must_start_tuned};
use kv_client::{ClientError, ShoalClient};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Default)]
struct Outcomes {
    acked: HashMap<String, String>,
    indeterminate: HashMap<String, String>,
    acked_per_shard: HashMap<u64, u64>,
}

/// Writes keys `range` with `workers` concurrent tasks; every key gets a
/// unique value. A failed write with a definite outcome fails the test.
async fn write_keys(client: Arc<ShoalClient>, range: std::ops::Range<u64>, workers: u64) -> Outcomes {
    let mut tasks = Vec::new();
    for w in 0..workers {
        let client = client.clone();
        let range = range.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Outcomes::default();
            let mut i = range.start + w;
            while i < range.end {
                let key = format!("key/{i:06}");
                let value = format!("value-{i}");
                match client.put(key.clone(), value.clone()).await {
                    Ok(ack) => {
                        *out.acked_per_shard.entry(ack.shard).or_default() += 1;
                        out.acked.insert(key, value);
                    }
                    Err(e @ ClientError::Indeterminate(_)) => {
                        eprintln!("indeterminate write {key}: {e}");
                        out.indeterminate.insert(key, value);
                    }
                    Err(e) => panic!("write {key} failed definitely: {e}"),
                }
                i += workers;
            }
            out
        }));
    }
    let mut all = Outcomes::default();
    for task in tasks {
        let out = task.await.expect("writer task");
        all.acked.extend(out.acked);
        all.indeterminate.extend(out.indeterminate);
        for (shard, n) in out.acked_per_shard {
            *all.acked_per_shard.entry(shard).or_default() += n;
        }
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_leader_fails_over_and_catches_up_through_snapshot() {
    const SHARDS: u64 = 4;
    const NODES: u64 = 3;
    // Snapshot every 300 entries and keep only 20 behind it, so the killed
    // node's log position is purged on the survivors while it is down.
    let mut tc = must_start_tuned(NODES, SHARDS, |raft| {
        raft.snapshot_every_entries = 300;
        raft.logs_kept_behind_snapshot = 20;
    })
    .await;
    let client = Arc::new(must_connect(&tc.cluster).await);

    let first = write_keys(client.clone(), 0..10_000, 32).await;
    assert_eq!(
        first.acked.len(),
        10_000,
        "no fault yet: every write must be acknowledged"
    );
    assert!(
        first.acked_per_shard.len() as u64 == SHARDS,
        "keys spread over every shard: {:?}",
        first.acked_per_shard
    );

    let leaders = tc
        .cluster
        .wait_for_leaders(Duration::from_secs(10))
        .await
        .expect("leaders");
    let victim = leaders[&1];
    eprintln!("killing node {victim}, leader of shard 1 (leaders: {leaders:?})");

    // Kill -9 while a second wave of writes is in flight.
    let writer = tokio::spawn(write_keys(client.clone(), 10_000..14_000, 16));
    tokio::time::sleep(Duration::from_millis(300)).await;
    tc.cluster.kill(victim).expect("kill -9");
    let second = writer.await.expect("second wave");
    eprintln!(
        "after kill: {} acked, {} indeterminate, per shard {:?}",
        second.acked.len(),
        second.indeterminate.len(),
        second.acked_per_shard
    );
    assert!(
        second.acked_per_shard.get(&1).copied().unwrap_or(0) > 300,
        "writes to shard 1 continue after the election"
    );

    let new_leaders = tc
        .cluster
        .wait_for_leaders(Duration::from_secs(10))
        .await
        .expect("new leaders");
    assert_ne!(new_leaders[&1], victim, "shard 1 has a new leader");

    // More writes while the victim is down, so every shard snapshots and
    // purges past the victim's last log entry.
    let third = write_keys(client.clone(), 14_000..17_000, 32).await;
    assert_eq!(third.indeterminate.len(), 0, "no fault during the third wave");
    for shard in 1..=SHARDS {
        let leader = new_leaders[&shard];
        let status = tc.cluster.replica_status(leader).await.expect("status");
        let replica = status.replicas.iter().find(|r| r.shard_id == shard).expect("replica");
        assert!(
            replica.purged_index > 0,
            "shard {shard} leader purged its log: {replica:?}"
        );
    }

    tc.cluster.start_node(victim).expect("restart victim");
    let everywhere: Vec<(u64, Vec<u64>)> = (1..=SHARDS).map(|shard| (shard, (1..=NODES).collect())).collect();
    tc.cluster
        .wait_converged(&everywhere, Duration::from_secs(90))
        .await
        .expect("replicas converge");
    let log = std::fs::read_to_string(tc.cluster.log_path(victim).unwrap()).unwrap();
    assert!(
        log.contains("installed snapshot"),
        "the restarted node caught up through a snapshot"
    );

    // Every acknowledged write reads back; an indeterminate one is either
    // absent or has the value that was attempted.
    let mut expected = first.acked;
    expected.extend(second.acked);
    expected.extend(third.acked);
    let keys: Vec<String> = expected.keys().cloned().collect();
    for chunk in keys.chunks(500) {
        let values = client
            .multi_get(chunk.iter().map(|k| k.clone().into()).collect())
            .await
            .expect("multi_get");
        for (key, value) in chunk.iter().zip(values) {
            let value = value.unwrap_or_else(|| panic!("acknowledged write {key} is lost"));
            assert_eq!(String::from_utf8(value.value).unwrap(), expected[key], "value of {key}");
        }
    }
    for (key, attempted) in &second.indeterminate {
        if let Some(v) = client.get(key.clone()).await.expect("get") {
            assert_eq!(
                &String::from_utf8(v.value).unwrap(),
                attempted,
                "indeterminate {key} holds a value nobody wrote"
            );
        }
    }
    tc.cluster.stop_all(Duration::from_secs(10));
}
