//! Fault schedules on the in-process harness (`common/in_process.rs`):
//! every node runs in this process and the transport filter cuts the
//! links, so the same schedules as the process-level tests (`safety.rs`,
//! `partitioned_primary.rs`) run without failpoints or child processes.
//! Also the harness's own checks: its cuts stop traffic and its restart
//! keeps a node's data.

mod common;

use common::in_process::{InProcessCluster, InProcessSpec};
use common::schedules::{partitioned_primary_is_fenced, quick_restart_inside_the_old_leaders_lease};
use futures::FutureExt;
use kv_client::ReadConsistency;
use shoal_types::NodeId;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

/// Failpoints are global to a process. Under nextest every test has a
/// process of its own; under plain `cargo test` (the Makefile's fallback)
/// the tests of this file share one, so each holds this lock while it runs
/// and the deliberate bug one of them switches on cannot reach the others.
static FAILPOINTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_a_quick_restart_cannot_elect_a_leader_inside_the_old_leaders_lease() {
    let _alone = FAILPOINTS.lock().await;
    const LEASE_MS: u64 = 2000;
    let mut spec = InProcessSpec::new(3, 9);
    spec.raft.election_timeout_max_ms = LEASE_MS;
    let mut cluster = InProcessCluster::start(spec).await;
    quick_restart_inside_the_old_leaders_lease(&mut cluster, LEASE_MS).await;
    cluster.shutdown().await;
}

/// The schedule above can fail: with the restart embargo switched off
/// (the deliberate bug `restart-embargo-off`, docs/failpoints.md), the
/// restarted node helps elect a second leader inside the first one's lease
/// and the schedule reports the stale strong reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_quick_restart_schedule_reports_a_restart_that_votes_at_once() {
    let _alone = FAILPOINTS.lock().await;
    const LEASE_MS: u64 = 2000;
    let mut spec = InProcessSpec::new(3, 9);
    spec.raft.election_timeout_max_ms = LEASE_MS;
    let mut cluster = InProcessCluster::start(spec).await;
    cluster.set_failpoint("restart-embargo-off", "return").await;
    // Caught here, not in a task of its own, so the cluster is still ours
    // to stop cleanly (a database left open at exit aborts the process).
    let run = AssertUnwindSafe(quick_restart_inside_the_old_leaders_lease(&mut cluster, LEASE_MS))
        .catch_unwind()
        .await;
    cluster.set_failpoint("restart-embargo-off", "off").await;
    cluster.shutdown().await;
    let panic = run.expect_err("the schedule passed with the embargo off");
    let message = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    assert!(
        message.contains("stale strong reads"),
        "the schedule failed for another reason: {message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_isolated_primary_cannot_ack_writes_or_serve_strong_reads() {
    let _alone = FAILPOINTS.lock().await;
    let mut spec = InProcessSpec::new(5, 4);
    spec.shard_manager = true;
    // A long grace period: this test is about fencing, not repair.
    spec.dead_after = Duration::from_secs(60);
    let cluster = InProcessCluster::start(spec).await;
    partitioned_primary_is_fenced(&cluster).await;
    cluster.shutdown().await;
}

/// The harness itself: a one-way cut from the leader to both followers
/// stops its writes from committing (its appends never arrive), healing
/// lets them through again, and a node restarted while cut off from every
/// peer comes back with exactly the data it had (nothing could have
/// reached it from the others).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_cuts_stop_replication_and_restarts_keep_data() {
    let _alone = FAILPOINTS.lock().await;
    let mut cluster = InProcessCluster::start(InProcessSpec::new(3, 1)).await;
    let client = cluster.client().await;
    client.put("k", "1").await.expect("write before the cut");
    let leader = cluster.leaders().await[&1];
    for peer in cluster.ids().into_iter().filter(|n| *n != leader) {
        cluster.filter.cut_one_way(NodeId(leader), NodeId(peer));
    }
    let mut raw = cluster.kv(leader);
    let put = shoal_proto::kv::PutRequest {
        header: common::schedules::header(1),
        key: common::schedules::key_ref(client.routes().place("default", b"k", None).unwrap().ushard, "k"),
        value: b"2".to_vec(),
        ..Default::default()
    };
    let cut_write = tokio::time::timeout(Duration::from_secs(2), raw.put(put)).await;
    assert!(
        !matches!(cut_write, Ok(Ok(_))),
        "a leader whose appends are cut acknowledged a write: {cut_write:?}"
    );
    cluster.filter.heal();
    client.put("k", "3").await.expect("write after the heal");
    cluster
        .wait_converged(&[(1, cluster.ids())], Duration::from_secs(30))
        .await
        .expect("every replica has the write");

    // Cut a follower off, note what it holds, restart it still cut off.
    let follower = cluster.ids().into_iter().find(|n| *n != leader).unwrap();
    cluster
        .filter
        .isolate(NodeId(follower), cluster.ids().into_iter().map(NodeId));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = cluster.digest(follower, 1).await.expect("digest before the restart");
    cluster.restart(follower).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let after = loop {
        match cluster.digest(follower, 1).await {
            Ok(digest) => break digest,
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("restarted node not serving yet: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the restarted node never served its replica: {e}"),
        }
    };
    assert_eq!(
        (after.applied_index, after.key_count, after.digest),
        (before.applied_index, before.key_count, before.digest),
        "a node restarted while cut off lost or changed data"
    );
    cluster.filter.heal();
    let read = client
        .get_with("k", ReadConsistency::Strong)
        .await
        .expect("strong read")
        .expect("value");
    assert_eq!(read.value, b"3");
    cluster.shutdown().await;
}
