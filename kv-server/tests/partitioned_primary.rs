//! A primary cut off from its peers and from the shard manager — failpoints
//! `raft-send`, `raft-receive` and `sm-heartbeat` (docs/failpoints.md) —
//! can neither acknowledge a write nor serve a strong read, while the new
//! primary serves both; after the partition heals, what the cut-off primary
//! was asked to write is gone. Needs a kv-server built with the
//! `failpoints` feature (`make test` builds it so).

mod common;

use common::{must_align, must_start_two_region_cluster, must_wait_for_map};
use kv_client::{ClientConfig, ShoalClient};
use local_cluster::LocalCluster;
use shoal_proto::kv::{GetRequest, KeyRef, PutRequest, RequestHeader};
use std::time::Duration;

const ISOLATION: [&str; 3] = ["raft-send", "raft-receive", "sm-heartbeat"];

/// A client that learns the map from the shard manager only, so it never
/// adopts the cut-off node's stale view.
async fn must_connect_via_shard_manager(cluster: &LocalCluster) -> ShoalClient {
    let config = ClientConfig {
        endpoints: vec![cluster.shard_manager_addr().unwrap().to_string()],
        timeout: Duration::from_secs(20),
        ..ClientConfig::default()
    };
    ShoalClient::connect(config)
        .await
        .expect("connect via the shard manager")
}

fn header(shard: u64) -> Option<RequestHeader> {
    Some(RequestHeader {
        keyspace: "default".into(),
        shard_id: shard,
        epoch: 0,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_primary_cannot_ack_writes_or_serve_strong_reads() {
    // A long grace period: this test is about fencing, not repair.
    let mut tc = must_start_two_region_cluster(Duration::from_secs(60)).await;
    let before_map = must_align(&tc.cluster).await;
    let client = must_connect_via_shard_manager(&tc.cluster).await;
    let ack = client.put("fenced", "before").await.expect("first write");
    let before = before_map
        .shards
        .iter()
        .find(|s| s.shard_id == ack.shard)
        .unwrap()
        .clone();
    let old_primary = before.primary;
    let ushard = client.routes().place("default", b"fenced", None).unwrap().ushard;
    let key = || {
        Some(KeyRef {
            ushard,
            key: b"fenced".to_vec(),
        })
    };

    for failpoint in ISOLATION {
        tc.cluster
            .set_failpoint(old_primary, failpoint, "return")
            .await
            .expect("kv-server must be built with --features failpoints (make test does)");
    }

    // A write sent straight to the cut-off primary is never acknowledged.
    let mut isolated = tc.cluster.kv(old_primary).unwrap();
    let stale_write = {
        let mut isolated = isolated.clone();
        let request = PutRequest {
            header: header(ack.shard),
            key: key(),
            value: b"stale".to_vec(),
            ..PutRequest::default()
        };
        tokio::spawn(async move { tokio::time::timeout(Duration::from_secs(8), isolated.put(request)).await })
    };

    // The shard manager names a new primary with a higher epoch...
    let after_map = must_wait_for_map(&tc.cluster, Duration::from_secs(30), "failover", |m| {
        let s = m.shards.iter().find(|s| s.shard_id == ack.shard).unwrap();
        s.primary != old_primary && s.epoch > before.epoch
    })
    .await;
    let after = after_map.shards.iter().find(|s| s.shard_id == ack.shard).unwrap();
    eprintln!(
        "shard {}: primary {} (epoch {}) cut off; new primary {} (epoch {})",
        ack.shard, old_primary, before.epoch, after.primary, after.epoch
    );

    // ...which acknowledges writes and serves strong reads.
    let fresh = must_connect_via_shard_manager(&tc.cluster).await;
    let new_ack = fresh
        .put("fenced", "after")
        .await
        .expect("the new primary takes writes");
    assert_eq!(new_ack.shard, ack.shard);
    assert!(new_ack.version > ack.version, "{new_ack:?} after {ack:?}");
    let read = fresh.get("fenced").await.expect("strong read").expect("value");
    assert_eq!(read.value, b"after");

    // The cut-off primary must not answer a strong read: it could only
    // answer with the value it has, "before", which is stale.
    let strong_read = tokio::time::timeout(
        Duration::from_secs(5),
        isolated.get(GetRequest {
            header: header(ack.shard),
            key: key(),
            consistency: None,
        }),
    )
    .await;
    assert!(
        !matches!(strong_read, Ok(Ok(_))),
        "the cut-off primary served a strong read: {strong_read:?}"
    );
    let stale_write = stale_write.await.unwrap();
    assert!(
        !matches!(stale_write, Ok(Ok(_))),
        "the cut-off primary acknowledged a write: {stale_write:?}"
    );

    // Heal: the old primary rejoins as a follower and its unacknowledged
    // write never becomes visible.
    for failpoint in ISOLATION {
        tc.cluster.set_failpoint(old_primary, failpoint, "off").await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let read = fresh.get("fenced").await.expect("read after heal").expect("value");
    assert_eq!(read.value, b"after", "the cut-off primary's write must not surface");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let digests: Vec<_> = {
            let mut out = Vec::new();
            for node in &after.voters {
                out.push(tc.cluster.shard_digest(*node, ack.shard).await.ok().map(|d| d.digest));
            }
            out
        };
        if digests.iter().all(|d| d.is_some() && *d == digests[0]) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "replicas diverge: {digests:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tc.cluster.stop_all(Duration::from_secs(10));
}
