//! μshard moves on a real cluster (three kv-server processes under a shard
//! manager): a μshard moves while it is written, and nothing acknowledged
//! is lost; versions, conditions on them and read-your-writes tokens from
//! the source hold at the destination; the source then names the new
//! owner; source and destination never both take writes, and the source
//! serves no read once the destination took a write; a shard-manager
//! kill or a destination-primary kill in each phase resumes; a split and a
//! merge keep every record and the merged shard retires; bad requests get
//! stable codes and change nothing.

mod common;

use common::{must_connect, must_start_spec, shard_manager_bin, test_spec, TestCluster};
use kv_client::{Condition, Key, PutOptions, ReadConsistency, ShoalClient, WriteResult};
use local_cluster::probe::error_code;
use shoal_proto::kv::kv_client::KvClient;
use shoal_proto::kv::{
    read_consistency, GetRequest, KeyRef, PutRequest, ReadConsistency as WireConsistency, RequestHeader,
};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::Channel;

const ROUTING: &str = "user-7";

/// Three nodes, a shard manager, the default keyspace of 2 shards (akkio).
async fn must_start() -> TestCluster {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = test_spec(&dir, 3, 2);
    spec.shard_manager = true;
    spec.shard_manager_bin = shard_manager_bin();
    must_start_spec(spec, dir).await
}

fn key(i: usize) -> Key {
    Key::routed(ROUTING, format!("k{i:04}"))
}

/// The moved μshard, its shard, and the other shard.
fn placement(client: &ShoalClient) -> (u32, u64, u64) {
    let at = client
        .routes()
        .place("default", b"k0000", Some(ROUTING.as_bytes()))
        .unwrap();
    let other = if at.shard.0 == 1 { 2 } else { 1 };
    (at.ushard, at.shard.0, other)
}

/// Writers putting fresh keys of the moving μshard until told to stop;
/// what each acknowledged, by key.
fn start_writers(
    client: Arc<ShoalClient>,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<BTreeMap<String, String>>> {
    (0..4)
        .map(|w| {
            let (client, stop) = (client.clone(), stop.clone());
            tokio::spawn(async move {
                let mut acked = BTreeMap::new();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let name = format!("w{w}-{i:05}");
                    let value = format!("v{i}");
                    if client
                        .put(Key::routed(ROUTING, name.clone()), value.clone())
                        .await
                        .is_ok()
                    {
                        acked.insert(name, value);
                    }
                    i += 1;
                }
                acked
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ushard_moves_while_written_and_keeps_every_write_version_and_token() {
    let tc = must_start().await;
    let client = Arc::new(must_connect(&tc.cluster).await);
    let manager = tc.cluster.shard_manager().unwrap();
    let (ushard, source, dest) = placement(&client);

    for i in 0..200 {
        client.put(key(i), format!("v{i}")).await.expect("put");
    }
    let before = client.get(key(0)).await.unwrap().expect("k0000");
    let ack = client.put(key(1), "token").await.unwrap();
    assert_eq!(ack.shard, source);

    let stop = Arc::new(AtomicBool::new(false));
    let writers = start_writers(client.clone(), stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = manager.move_ushard("default", ushard, dest).await.expect("move");
    assert_eq!((started.from_shard, started.to_shard), (source, dest));
    let done = manager
        .wait_for_move(started.move_id, "done", Duration::from_secs(60))
        .await
        .expect("the move finishes");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = BTreeMap::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    assert!(acked.len() > 20, "writes went on during the move: {}", acked.len());
    eprintln!("move {done:?}; {} writes acknowledged around it", acked.len());

    // The client follows the μshard to its new shard; nothing acknowledged
    // is missing, and records kept their versions.
    client.refresh().await.unwrap();
    assert_eq!(placement(&client).1, dest, "the map names the destination");
    for (name, value) in &acked {
        let got = client.get(Key::routed(ROUTING, name.clone())).await.unwrap();
        assert_eq!(got.map(|v| v.value), Some(value.clone().into_bytes()), "{name}");
    }
    for i in 2..200 {
        let got = client.get(key(i)).await.unwrap().expect("copied");
        assert_eq!(got.value, format!("v{i}").into_bytes());
    }
    let after = client.get(key(0)).await.unwrap().unwrap();
    assert_eq!(after.version, before.version, "a moved record keeps its version");

    // A token from a write at the source is honoured at once by the
    // destination's replicas (their versions are above it).
    let read = client
        .get_with(key(1), ReadConsistency::AtLeast(ack.version))
        .await
        .expect("a ryw read with the source's token");
    assert_eq!(read.map(|v| v.value), Some(b"token".to_vec()));

    // put-if-version with the version read at the source applies once.
    let cas = PutOptions {
        condition: Some(Condition::Version(before.version)),
        ..Default::default()
    };
    match client.put_with(key(0), "next", &cas).await.unwrap() {
        WriteResult::Applied(a) => {
            assert_eq!(a.shard, dest);
            assert!(a.version > before.version, "versions only grow");
            assert!(a.version > ack.version, "above every version of the source");
        }
        other => panic!("nothing wrote k0000 in between: {other:?}"),
    }
    assert!(
        matches!(
            client.put_with(key(0), "again", &cas).await.unwrap(),
            WriteResult::ConditionFailed { .. }
        ),
        "a write came in between"
    );

    // The source names the new owner.
    let mut kv = local_cluster::probe::kv_at(&tc.cluster.endpoints()[0]).unwrap();
    let status = kv
        .put(PutRequest {
            header: Some(RequestHeader {
                keyspace: "default".into(),
                shard_id: source,
                epoch: 0,
                ..Default::default()
            }),
            key: Some(KeyRef {
                ushard,
                key: b"k0000".to_vec(),
            }),
            value: b"stale".to_vec(),
            ..Default::default()
        })
        .await
        .expect_err("the source no longer owns it");
    assert_eq!(error_code(&status), "WRONG_SHARD", "{status:?}");
    let owner = status.metadata().get(shoal_proto::OWNER_HINT_METADATA).unwrap();
    assert_eq!(owner.to_str().unwrap(), dest.to_string());
}

/// Sends one request straight to each node in turn, bypassing the client's
/// routing; true once a node answers it with success (within 2 s).
async fn any_node_takes<F, Fut>(addrs: &[String], call: F) -> bool
where
    F: Fn(KvClient<Channel>) -> Fut,
    Fut: std::future::Future<Output = Result<(), tonic::Status>>,
{
    for addr in addrs {
        let kv = local_cluster::probe::kv_at(addr).unwrap();
        if let Ok(Ok(())) = tokio::time::timeout(Duration::from_secs(2), call(kv)).await {
            return true;
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_and_destination_never_both_take_writes_for_the_ushard() {
    let tc = must_start().await;
    let client = must_connect(&tc.cluster).await;
    let manager = tc.cluster.shard_manager().unwrap();
    let (ushard, source, dest) = placement(&client);
    client.put(key(0), "x").await.unwrap();
    let addrs = tc.cluster.endpoints();
    // Each round writes straight to every node for the source shard, then
    // for the destination shard, bypassing the client's routing: once the
    // destination took one, the source must never take another.
    let header = |shard: u64| {
        Some(RequestHeader {
            keyspace: "default".into(),
            shard_id: shard,
            epoch: 0,
            ..Default::default()
        })
    };
    let probe = |i: usize| {
        Some(KeyRef {
            ushard,
            key: format!("probe-{i}").into_bytes(),
        })
    };
    let attempt = |shard: u64, i: usize| {
        any_node_takes(&addrs, move |mut kv| async move {
            let put = PutRequest {
                header: header(shard),
                key: probe(i),
                value: b"p".to_vec(),
                ..Default::default()
            };
            kv.put(put).await.map(drop)
        })
    };
    // A strong read straight to every node for the source shard: once the
    // destination took a write, the source must not answer at all (its
    // answer would miss that write).
    let source_reads = |i: usize| {
        any_node_takes(&addrs, move |mut kv| async move {
            let get = GetRequest {
                header: header(source),
                key: probe(i),
                consistency: Some(WireConsistency {
                    mode: Some(read_consistency::Mode::Strong(true)),
                }),
            };
            kv.get(get).await.map(drop)
        })
    };
    let started = manager.move_ushard("default", ushard, dest).await.expect("move");
    let (mut source_took, mut dest_took) = (0, 0);
    let mut dest_first = None;
    for i in 0..400 {
        if attempt(source, i).await {
            source_took += 1;
            assert!(
                dest_first.is_none(),
                "round {i}: the source took a write after the destination did (round {dest_first:?})"
            );
        }
        if attempt(dest, i).await {
            dest_took += 1;
            dest_first.get_or_insert(i);
            assert!(
                !source_reads(i).await,
                "round {i}: the source served a strong read that misses the destination's write"
            );
        }
        if dest_took > 20 {
            break;
        }
    }
    eprintln!("source took {source_took}, destination {dest_took}, from round {dest_first:?}");
    assert!(dest_took > 0, "the destination took over");
    manager
        .wait_for_move(started.move_id, "done", Duration::from_secs(60))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_manager_kill_or_a_destination_primary_kill_in_each_phase_resumes_the_move() {
    let mut tc = must_start().await;
    let client = must_connect(&tc.cluster).await;
    for i in 0..100 {
        client.put(key(i), format!("v{i}")).await.unwrap();
    }
    // Each run waits 1.5 s between its phases; three kills of the shard
    // manager land in three different phases, then a kill of the
    // destination's primary.
    for node in 1..=3 {
        tc.cluster
            .set_failpoint(node, "move-between-steps", "return(1500)")
            .await
            .unwrap();
    }
    for round in 0..2 {
        let routes = must_connect(&tc.cluster).await;
        let at = routes
            .routes()
            .place("default", b"k0000", Some(ROUTING.as_bytes()))
            .unwrap();
        let ushard = at.ushard;
        let dest = if at.shard.0 == 1 { 2 } else { 1 };
        let manager = tc.cluster.shard_manager().unwrap();
        let started = manager.move_ushard("default", ushard, dest).await.expect("move");
        if round == 0 {
            for delay in [700u64, 1500, 1500] {
                tokio::time::sleep(Duration::from_millis(delay)).await;
                tc.cluster.kill_shard_manager().unwrap();
                tokio::time::sleep(Duration::from_millis(300)).await;
                tc.cluster.start_shard_manager().unwrap();
            }
        } else {
            tokio::time::sleep(Duration::from_millis(1000)).await;
            let leaders = tc.cluster.leaders().await;
            let victim = leaders[&dest];
            tc.cluster.kill(victim).unwrap();
            tokio::time::sleep(Duration::from_secs(2)).await;
            tc.cluster.restart(victim).unwrap();
            tc.cluster
                .set_failpoint(victim, "move-between-steps", "return(1500)")
                .await
                .ok();
        }
        let manager = tc.cluster.shard_manager().unwrap();
        let done = manager
            .wait_for_move(started.move_id, "done", Duration::from_secs(90))
            .await
            .expect("the move resumes and finishes");
        eprintln!("round {round}: {done:?}");
        let client = must_connect(&tc.cluster).await;
        for i in 0..100 {
            let got = client.get(key(i)).await.unwrap();
            assert_eq!(
                got.map(|v| v.value),
                Some(format!("v{i}").into_bytes()),
                "round {round}, k{i}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_moves_get_stable_codes_and_change_nothing() {
    let tc = must_start().await;
    let client = must_connect(&tc.cluster).await;
    let manager = tc.cluster.shard_manager().unwrap();
    let (ushard, source, dest) = placement(&client);
    tc.cluster
        .create_keyspace(shoal_proto::sm::CreateKeyspaceRequest {
            name: "compact".into(),
            replicas: 3,
            shards: 1,
            ushards: 4,
            ..Default::default()
        })
        .await
        .unwrap();
    let map = manager.shard_map().await.unwrap();
    let compact_shard = map.keyspaces.iter().find(|k| k.name == "compact").unwrap().shard_ids[0];
    let version = map.version;
    let code = |status: tonic::Status| {
        status
            .metadata()
            .get(shoal_proto::ERROR_CODE_METADATA)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_else(|| format!("no code: {status:?}"))
    };
    let cases = [
        ("nope", ushard, dest, "UNKNOWN_KEYSPACE"),
        ("default", 64, dest, "USHARD_OUT_OF_RANGE"),
        ("default", ushard, 99, "UNKNOWN_SHARD"),
        ("default", ushard, source, "ALREADY_OWNER"),
        ("default", ushard, compact_shard, "OTHER_KEYSPACE"),
        ("compact", 0, compact_shard, "COMPACT_MAPPING"),
    ];
    for (keyspace, u, to, expected) in cases {
        let status = manager.move_ushard(keyspace, u, to).await.expect_err(expected);
        assert_eq!(code(status), expected, "{keyspace} {u} → {to}");
    }
    assert_eq!(manager.shard_map().await.unwrap().version, version, "nothing changed");
    assert!(manager.shard_map().await.unwrap().moves.is_empty());

    // A second move of a moving μshard is refused; an operator's move in a
    // compact keyspace too.
    tc.cluster
        .set_failpoint(1, "move-between-steps", "return(2000)")
        .await
        .unwrap();
    tc.cluster
        .set_failpoint(2, "move-between-steps", "return(2000)")
        .await
        .unwrap();
    tc.cluster
        .set_failpoint(3, "move-between-steps", "return(2000)")
        .await
        .unwrap();
    let first = manager.move_ushard("default", ushard, dest).await.unwrap();
    let again = manager.move_ushard("default", ushard, dest).await.expect_err("moving");
    assert_eq!(code(again), "ALREADY_MOVING");
    // It can be aborted while it copies; the source keeps the μshard.
    let aborted = manager.abort_move(first.move_id).await.unwrap();
    assert_eq!(aborted.phase, "aborting");
    manager
        .wait_for_move(first.move_id, "aborted", Duration::from_secs(30))
        .await
        .unwrap();
    client.put(key(0), "still at the source").await.unwrap();
    let ack = client.put(key(0), "still").await.unwrap();
    assert_eq!(ack.shard, source);
    let late = manager.abort_move(first.move_id).await.unwrap();
    assert_eq!(late.phase, "aborted", "aborting twice changes nothing");
}

/// Waits until every move in `moves` is done.
async fn wait_all_done(manager: &local_cluster::ShardManagerAt, moves: &[shoal_proto::sm::MoveState]) {
    for m in moves {
        manager
            .wait_for_move(m.move_id, "done", Duration::from_secs(120))
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_then_a_merge_keep_every_record_and_the_merged_shard_retires() {
    let tc = must_start().await;
    let client = must_connect(&tc.cluster).await;
    for i in 0..200 {
        client.put(format!("s{i:03}"), format!("v{i}")).await.unwrap();
    }
    let manager = tc.cluster.shard_manager().unwrap();
    let ushards_of = |map: &shoal_proto::sm::ShardMap, shard: u64| {
        let ks = map.keyspaces.iter().find(|k| k.name == "default").unwrap();
        let map = kv_server::rpc::ushard_map_wire::map_from_runs("default", ks.ushard_count, &ks.ushard_runs)
            .unwrap()
            .unwrap();
        map.ushards_of(shoal_types::ShardId(shard)).len()
    };
    let before = manager.shard_map().await.unwrap();
    let owned = ushards_of(&before, 1);

    let split = manager.split_shard(1).await.expect("split");
    let new_shard = split.new_shard_id;
    assert_eq!(split.moves.len(), owned - owned / 2, "the upper half moves");
    assert!(split.moves.iter().all(|m| m.to_shard == new_shard && m.from_shard == 1));
    wait_all_done(&manager, &split.moves).await;
    let after = manager.shard_map().await.unwrap();
    assert_eq!(ushards_of(&after, 1), owned / 2);
    assert_eq!(ushards_of(&after, new_shard), owned - owned / 2);
    let client = must_connect(&tc.cluster).await;
    for i in 0..200 {
        let got = client.get(format!("s{i:03}")).await.unwrap();
        assert_eq!(
            got.map(|v| v.value),
            Some(format!("v{i}").into_bytes()),
            "after split, s{i:03}"
        );
    }

    // Merge the new shard, then shard 1 (whose μshards the home map names),
    // into shard 2; read through the client connected before the merges
    // (its map names retired shards).
    let stale = client;
    for (gone, merged) in [(new_shard, owned - owned / 2), (1, owned / 2)] {
        let merge = manager.merge_shard(gone, 2).await.expect("merge");
        assert_eq!(merge.moves.len(), merged);
        wait_all_done(&manager, &merge.moves).await;
        must_retire(&tc, &manager, gone).await;
        for i in 0..200 {
            let got = stale.get(format!("s{i:03}")).await.unwrap();
            assert_eq!(
                got.map(|v| v.value),
                Some(format!("v{i}").into_bytes()),
                "after merging {gone}, s{i:03}"
            );
        }
        stale.put(format!("after-merging-{gone}"), "ok").await.unwrap();
    }
    let map = manager.shard_map().await.unwrap();
    let ks = map.keyspaces.iter().find(|k| k.name == "default").unwrap();
    assert_eq!(ks.retired_shard_ids, vec![new_shard, 1]);
    assert_eq!(ushards_of(&map, 2), before.keyspaces[0].ushard_count as usize);
}

/// Waits until `shard` is out of the map and off every node.
async fn must_retire(tc: &TestCluster, manager: &local_cluster::ShardManagerAt, shard: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let map = manager.shard_map().await.unwrap();
        let listed = map.shards.iter().any(|s| s.shard_id == shard);
        let mut hosted = false;
        for addr in tc.cluster.endpoints() {
            let status = local_cluster::probe::replica_status_at(&addr).await.unwrap();
            hosted |= status.replicas.iter().any(|r| r.shard_id == shard);
        }
        let ks = map.keyspaces.iter().find(|k| k.name == "default").unwrap();
        if !listed && !hosted && !ks.shard_ids.contains(&shard) && ks.retired_shard_ids.contains(&shard) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "shard {shard} still listed {listed} or hosted {hosted}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_splits_and_merges_get_stable_codes_and_change_nothing() {
    let tc = must_start().await;
    let manager = tc.cluster.shard_manager().unwrap();
    tc.cluster
        .create_keyspace(shoal_proto::sm::CreateKeyspaceRequest {
            name: "tiny".into(),
            replicas: 3,
            shards: 2,
            ushards: 2,
            mapping: shoal_proto::admin::UshardMapping::Akkio as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    let map = manager.shard_map().await.unwrap();
    let tiny = map
        .keyspaces
        .iter()
        .find(|k| k.name == "tiny")
        .unwrap()
        .shard_ids
        .clone();
    let version = map.version;
    let split = |shard: u64| {
        let manager = manager.clone();
        async move { error_code(&manager.split_shard(shard).await.expect_err("refused")) }
    };
    let merge = |shard: u64, into: u64| {
        let manager = manager.clone();
        async move { error_code(&manager.merge_shard(shard, into).await.expect_err("refused")) }
    };
    assert_eq!(split(99).await, "UNKNOWN_SHARD");
    assert_eq!(split(tiny[0]).await, "TOO_FEW_USHARDS");
    assert_eq!(merge(99, 1).await, "UNKNOWN_SHARD");
    assert_eq!(merge(1, 99).await, "UNKNOWN_SHARD");
    assert_eq!(merge(1, 1).await, "SAME_SHARD");
    assert_eq!(merge(1, tiny[0]).await, "OTHER_KEYSPACE");
    let after = manager.shard_map().await.unwrap();
    assert_eq!(after.version, version, "nothing changed");
    assert!(after.moves.is_empty());

    // While a merge runs, its shards take part in nothing else.
    for node in 1..=3 {
        tc.cluster
            .set_failpoint(node, "move-between-steps", "return(1500)")
            .await
            .unwrap();
    }
    let merging = manager.merge_shard(tiny[0], tiny[1]).await.expect("merge");
    assert_eq!(merging.moves.len(), 1);
    assert_eq!(split(tiny[1]).await, "SHARD_BUSY");
    assert_eq!(merge(tiny[1], tiny[0]).await, "SHARD_BUSY");
    let status = manager.move_ushard("tiny", 1, tiny[0]).await.expect_err("retiring");
    assert_eq!(error_code(&status), "SHARD_RETIRING");
    wait_all_done(&manager, &merging.moves).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_of_a_compact_keyspace_that_stays_busy_splits_by_itself_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = test_spec(&dir, 3, 2);
    spec.shard_manager = true;
    spec.shard_manager_bin = shard_manager_bin();
    spec.splits = shoal_config::manager::SplitTriggers {
        max_shard_bytes: 0,
        max_shard_ops_per_sec: 30.0,
        load_windows: 2,
        window_ms: 1_000,
        cooldown_ms: 600_000,
    };
    let tc = must_start_spec(spec, dir).await;
    tc.cluster
        .create_keyspace(shoal_proto::sm::CreateKeyspaceRequest {
            name: "busy".into(),
            replicas: 3,
            shards: 1,
            ushards: 8,
            ..Default::default()
        })
        .await
        .unwrap();
    let manager = tc.cluster.shard_manager().unwrap();
    let shards_of_busy = |map: &shoal_proto::sm::ShardMap| {
        map.keyspaces
            .iter()
            .find(|k| k.name == "busy")
            .map(|k| k.shard_ids.clone())
            .unwrap_or_default()
    };
    let config = kv_client::ClientConfig {
        endpoints: tc.cluster.endpoints(),
        keyspace: "busy".into(),
        ..Default::default()
    };
    // The new keyspace reaches the nodes and gets a leader shortly.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let client = loop {
        let client = ShoalClient::connect(config.clone()).await.unwrap();
        if client.put("b0", "x").await.is_ok() {
            break client;
        }
        assert!(tokio::time::Instant::now() < deadline, "keyspace busy never served");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Writes until the split's moves are done, then three windows more:
    // the cooldown keeps both halves from splitting again.
    let started = tokio::time::Instant::now();
    let mut split_done_at = None;
    let mut i = 0u64;
    loop {
        i += 1;
        if let Err(e) = client.put(format!("b{}", i % 500), "x").await {
            // Seen once in CI under load (a put to the splitting shard
            // unavailable for the whole deadline): keep what the nodes said.
            common::print_node_logs(&tc.cluster, 3, 60);
            panic!("put {i} failed: {e}");
        }
        if !i.is_multiple_of(50) {
            continue;
        }
        let map = manager.shard_map().await.unwrap();
        let shards = shards_of_busy(&map);
        assert!(shards.len() <= 2, "split once, not again: {shards:?}");
        let settled = shards.len() == 2
            && map
                .moves
                .iter()
                .filter(|m| m.keyspace == "busy")
                .all(|m| m.phase == "done");
        if settled && split_done_at.is_none() {
            let reasons: Vec<&str> = map.moves.iter().map(|m| m.reason.as_str()).collect();
            assert!(reasons.iter().all(|r| r.contains("ops/s over 30")), "{reasons:?}");
            // The primary counted every write per μshard: the cut is by
            // load, one contiguous upper range, never all or none.
            assert!(reasons.iter().all(|r| r.contains("by load")), "{reasons:?}");
            assert!((1..8).contains(&reasons.len()), "{reasons:?}");
            split_done_at = Some(tokio::time::Instant::now());
        }
        if split_done_at.is_some_and(|t| t.elapsed() > Duration::from_secs(3)) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no split within 60 s: {map:?}"
        );
    }
    let map = manager.shard_map().await.unwrap();
    assert_eq!(shards_of_busy(&map).len(), 2);
    for k in 0..500u64.min(i) {
        assert!(client.get(format!("b{k}")).await.unwrap().is_some(), "b{k}");
    }
}
