//! Five kv-server processes in two regions under a shard manager: nodes
//! register and get their ids from it, host exactly the replicas it places,
//! pick up a keyspace created later, and keep serving reads and writes while
//! the shard manager is down; its restart loses nothing.

mod common;

use common::{must_align, must_connect, must_start_two_region_cluster};
use kv_client::{ClientConfig, ShoalClient};
use shoal_proto::sm::CreateKeyspaceRequest;
use shoal_types::{Epoch, ShardId};
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

/// Shard → the nodes hosting a replica of it, as the nodes report.
async fn hosted(cluster: &local_cluster::LocalCluster, nodes: u64) -> HashMap<u64, BTreeSet<u64>> {
    let mut out: HashMap<u64, BTreeSet<u64>> = HashMap::new();
    for node in 1..=nodes {
        let status = cluster.replica_status(node).await.expect("replica status");
        assert_eq!(status.node_id, node, "node ids follow registration order");
        for replica in status.replicas {
            out.entry(replica.shard_id).or_default().insert(node);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_host_what_the_shard_manager_places_and_survive_its_outage() {
    let mut tc = must_start_two_region_cluster(Duration::from_secs(10)).await;
    tc.cluster
        .wait_for_leaders(Duration::from_secs(60))
        .await
        .expect("leaders");

    // Every shard's replicas are exactly the voters the shard manager chose,
    // three distinct nodes spanning both regions.
    let map = tc.cluster.shard_map().await.unwrap();
    let hosts = hosted(&tc.cluster, 5).await;
    for shard in &map.shards {
        let voters: BTreeSet<u64> = shard.voters.iter().copied().collect();
        assert_eq!(voters.len(), 3);
        assert!(
            voters.iter().any(|v| *v <= 3) && voters.iter().any(|v| *v > 3),
            "both regions: {shard:?}"
        );
        assert_eq!(hosts.get(&shard.shard_id), Some(&voters), "shard {}", shard.shard_id);
    }

    let client = must_connect(&tc.cluster).await;
    for i in 0..200 {
        client.put(format!("k{i}"), format!("v{i}")).await.expect("put");
    }

    // A keyspace created now reaches the nodes through their heartbeats, and
    // a client that connected before it existed finds it by refreshing.
    let config = ClientConfig {
        endpoints: tc.cluster.endpoints(),
        keyspace: "users".into(),
        timeout: Duration::from_secs(20),
        ..ClientConfig::default()
    };
    let users = ShoalClient::connect(config).await.expect("connect");
    assert!(users.routes().keyspace("users").is_err(), "not created yet");
    tc.cluster
        .create_keyspace(CreateKeyspaceRequest {
            name: "users".into(),
            replicas: 3,
            shards: 2,
            ushards: 16,
            // Voters in east, a read learner in west.
            regions: vec!["east".into()],
            preferred_region: String::new(),
            learner_regions: vec!["west".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    tc.cluster
        .wait_for_leaders(Duration::from_secs(30))
        .await
        .expect("leaders");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while let Err(e) = users.put("alice", "1").await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "keyspace users never reached the client: {e}"
        );
        assert!(e.is_retryable(), "{e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(users.get("alice").await.unwrap().unwrap().value, b"1");
    assert_eq!(client.get("alice").await.unwrap(), None, "keyspaces are separate");

    // Each shard of `users` has a learner in west: a node that is not a
    // voter hosts it as a Raft learner and receives every write.
    let map = tc.cluster.shard_map().await.unwrap();
    for shard in map.shards.iter().filter(|s| s.keyspace == "users") {
        let learner = *shard.learners.first().expect("a learner");
        assert!(learner > 3 && !shard.voters.contains(&learner), "{shard:?}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let status = tc.cluster.replica_status(learner).await.unwrap();
            let role = status
                .replicas
                .iter()
                .find(|r| r.shard_id == shard.shard_id)
                .map(|r| r.role.clone());
            let theirs = tc.cluster.shard_digest(learner, shard.shard_id).await.ok();
            let primary = tc.cluster.shard_digest(shard.primary, shard.shard_id).await.ok();
            let same = theirs.is_some()
                && theirs.as_ref().map(|d| (d.applied_index, d.digest))
                    == primary.as_ref().map(|d| (d.applied_index, d.digest));
            if role.as_deref() == Some("learner") && same {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "learner {learner} of shard {}: role {role:?}, digest {theirs:?} vs {primary:?}",
                shard.shard_id
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // Moving a primary: new epoch, Raft leadership follows, and writes keep
    // succeeding throughout.
    let aligned = must_align(&tc.cluster).await;
    let moved = &aligned.shards[0];
    let target = *moved.voters.iter().find(|v| **v != moved.primary).unwrap();
    let writer = {
        let client = std::sync::Arc::new(must_connect(&tc.cluster).await);
        tokio::spawn(async move {
            for i in 0..300 {
                client
                    .put(format!("during-move/{i}"), "x")
                    .await
                    .expect("no failed request during a primary move");
            }
        })
    };
    tc.cluster.move_primary(moved.shard_id, target).await.unwrap();
    let after_move = must_align(&tc.cluster).await;
    let s = after_move.shards.iter().find(|s| s.shard_id == moved.shard_id).unwrap();
    assert_eq!((s.primary, s.epoch), (target, moved.epoch + 1));
    writer.await.unwrap();
    // `client` connected before the move, so it names the old epoch. Once
    // the nodes hold the new map (one heartbeat), they refuse it with
    // STALE_EPOCH and the client fetches the map again, transparently.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(client.routes().epoch(ShardId(moved.shard_id)), Epoch(moved.epoch));
    let on_moved = (0..)
        .map(|i| format!("moved/{i}"))
        .find(|k| client.routes().place("default", k.as_bytes(), None).unwrap().shard == ShardId(moved.shard_id))
        .unwrap();
    client.put(on_moved, "x").await.expect("put with a stale epoch");
    assert_eq!(
        client.routes().epoch(ShardId(moved.shard_id)),
        Epoch(moved.epoch + 1),
        "the client refreshed its map"
    );
    let not_voter = (1..=5).find(|n| !moved.voters.contains(n)).unwrap();
    let err = tc.cluster.move_primary(moved.shard_id, not_voter).await.unwrap_err();
    assert!(format!("{err:#}").contains("not a voter"), "{err:#}");

    // The shard manager goes away (kill -9): reads and writes go on.
    let before = tc.cluster.shard_map().await.unwrap();
    tc.cluster.kill_shard_manager().unwrap();
    for i in 200..300 {
        client
            .put(format!("k{i}"), format!("v{i}"))
            .await
            .expect("put while the shard manager is down");
    }
    for i in 0..300 {
        assert_eq!(
            client.get(format!("k{i}")).await.unwrap().unwrap().value,
            format!("v{i}").into_bytes()
        );
    }

    // Back: the same map, and the nodes are alive in it again.
    tc.cluster.start_shard_manager().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(after) = tc.cluster.shard_map().await {
            assert_eq!(after.keyspaces, before.keyspaces);
            // The same records; `max_lag` is a live measurement, not state.
            assert_eq!(without_lag(&after.shards), without_lag(&before.shards));
            if after.nodes.iter().all(|n| n.liveness == "alive") {
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nodes did not heartbeat the restarted shard manager"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tc.cluster.stop_all(Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_primary_is_replaced_with_a_higher_epoch_and_nothing_acknowledged_is_lost() {
    let mut tc = must_start_two_region_cluster(Duration::from_secs(10)).await;

    // Raft leadership follows the primaries the shard manager balanced.
    let before = must_align(&tc.cluster).await;
    let victim = before.shards[0].primary;
    let victim_shards: Vec<(u64, u64)> = before
        .shards
        .iter()
        .filter(|s| s.primary == victim)
        .map(|s| (s.shard_id, s.epoch))
        .collect();

    let client = std::sync::Arc::new(must_connect(&tc.cluster).await);
    let writer = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut indeterminate = 0;
            let mut epochs: HashMap<u64, u64> = HashMap::new();
            for i in 0..1500u32 {
                match client.put(format!("key/{i}"), format!("v{i}")).await {
                    Ok(ack) => {
                        // Epochs a client sees never go backwards per shard.
                        let seen = epochs.entry(ack.shard).or_default();
                        assert!(ack.epoch >= *seen, "epoch went back on shard {}", ack.shard);
                        *seen = ack.epoch;
                        acked.push(i);
                    }
                    Err(e) if e.is_indeterminate() => indeterminate += 1,
                    Err(e) => panic!("write {i} failed: {e}"),
                }
            }
            (acked, indeterminate, epochs)
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let killed_at = std::time::Instant::now();
    tc.cluster.kill(victim).expect("kill -9 the primary");

    // The shard manager replaces the primary of every shard it held.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let after = loop {
        let map = tc.cluster.shard_map().await.expect("map");
        let done = victim_shards.iter().all(|(id, epoch)| {
            let s = map.shards.iter().find(|s| s.shard_id == *id).unwrap();
            s.primary != victim && s.epoch > *epoch
        });
        if done {
            break map;
        }
        assert!(tokio::time::Instant::now() < deadline, "no failover: {map:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!(
        "failover of {} shards recorded {:?} after kill -9",
        victim_shards.len(),
        killed_at.elapsed()
    );
    for s in &after.shards {
        assert!(s.voters.contains(&s.primary), "new primary is a voter: {s:?}");
    }

    let (acked, indeterminate, epochs) = writer.await.expect("writer");
    eprintln!(
        "{} acked, {indeterminate} indeterminate, epochs seen {epochs:?}",
        acked.len()
    );
    assert!(acked.len() > 1000);
    for i in acked {
        let v = client
            .get(format!("key/{i}"))
            .await
            .expect("get")
            .expect("acknowledged write survives");
        assert_eq!(v.value, format!("v{i}").into_bytes());
    }
    // Writes now carry the new epochs.
    let ack = client.put("after", "x").await.unwrap();
    let shard = after.shards.iter().find(|s| s.shard_id == ack.shard).unwrap();
    assert_eq!(ack.epoch, shard.epoch);
    tc.cluster.stop_all(Duration::from_secs(10));
}

/// Shard records with the observed replica lag blanked out.
fn without_lag(shards: &[shoal_proto::sm::ShardState]) -> Vec<shoal_proto::sm::ShardState> {
    shards
        .iter()
        .map(|s| shoal_proto::sm::ShardState {
            max_lag: 0,
            ..s.clone()
        })
        .collect()
}
