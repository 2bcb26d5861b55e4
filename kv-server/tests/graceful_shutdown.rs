//! SIGTERM stops a node cleanly (exit status 0, promptly), and the node
//! rejoins with its data after a restart.

mod common;

use common::{must_connect, must_start_cluster};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_a_node_cleanly_and_it_rejoins() {
    let mut tc = must_start_cluster(3, 2).await;
    let client = must_connect(&tc.cluster).await;
    for i in 0..200 {
        client.put(format!("k{i}"), format!("v{i}")).await.expect("put");
    }
    let status = tc.cluster.terminate(2, Duration::from_secs(15)).expect("terminate");
    let status = status.expect("node 2 exits by itself on SIGTERM, without kill -9");
    assert!(status.success(), "clean exit after SIGTERM, got {status}");

    // The other two keep serving.
    for i in 200..300 {
        client
            .put(format!("k{i}"), format!("v{i}"))
            .await
            .expect("put with one node stopped");
    }
    tc.cluster.start_node(2).expect("restart");
    tc.cluster
        .wait_for_leaders(Duration::from_secs(30))
        .await
        .expect("leaders");
    // Node 2 must hold every key once it has caught up: stop the others'
    // writes and compare digests.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    'wait: loop {
        for shard in 1..=2 {
            let a = tc.cluster.shard_digest(1, shard).await.ok();
            let b = tc.cluster.shard_digest(2, shard).await.ok();
            if a.is_none() || a != b {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "node 2 did not catch up on shard {shard}: {a:?} vs {b:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue 'wait;
            }
        }
        break;
    }
    for i in 0..300 {
        let v = client.get(format!("k{i}")).await.expect("get").expect("present");
        assert_eq!(v.value, format!("v{i}").into_bytes());
    }
    tc.cluster.stop_all(Duration::from_secs(10));
}
