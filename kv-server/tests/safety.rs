//! Attacks on the holes a code review found (issue 10): schedules that
//! compose faults (a cut plus a quick restart), reads racing writes and
//! replica removal, fast-ack writes across primary moves, a leader clock
//! jump. Each test states the promise it protects. Needs a kv-server built
//! with the `failpoints` feature (`make test`).

mod common;

use common::schedules::{header, key_ref, quick_restart_inside_the_old_leaders_lease, strong_get, ProcessFaults};
use common::{fast_raft, must_connect, must_start_spec, test_spec};
use kv_server::config::RaftTuning;
use local_cluster::probe::shard_hosts;
use local_cluster::LocalCluster;
use shoal_proto::kv::{GetRequest, PutRequest};
use std::time::Duration;
use tokio::time::Instant;

/// Lease = `election_timeout_max_ms`: long enough that a node restarted
/// right after the leader's last heartbeat can campaign inside it.
fn lease_raft(lease_ms: u64) -> RaftTuning {
    RaftTuning {
        election_timeout_max_ms: lease_ms,
        ..fast_raft()
    }
}

/// Promise: a node restarted inside a leader's lease cannot help elect a
/// second leader before that lease is over: see
/// [`common::schedules::quick_restart_inside_the_old_leaders_lease`] (issue
/// 10, hole 1). Here B is restarted with kill -9; `in_process.rs` runs the
/// same schedule in one process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quick_restart_cannot_elect_a_leader_inside_the_old_leaders_lease() {
    const LEASE_MS: u64 = 2000;
    let dir = tempfile::tempdir().unwrap();
    let mut spec = test_spec(&dir, 3, 9);
    spec.raft = lease_raft(LEASE_MS);
    let tc = must_start_spec(spec, dir).await;
    let mut faults = ProcessFaults::new(tc.cluster);
    quick_restart_inside_the_old_leaders_lease(&mut faults, LEASE_MS).await;
    faults.cluster.stop_all(Duration::from_secs(10));
}

/// Two keys that writers always change together in one atomic batch.
async fn must_put_pair(client: &kv_client::ShoalClient, pair: &[kv_client::Key; 2], value: &str) {
    client
        .batch(
            pair.iter()
                .map(|k| kv_client::Mutation::Put(k.clone(), value.as_bytes().to_vec()))
                .collect(),
        )
        .await
        .expect("batch write of the pair");
}

/// Promise: a multi-get of one shard reads one state, so it never sees half
/// of an atomic batch (hole 3). The leader is held between the two keys
/// (`read-between`) while a batch changes both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_get_never_sees_half_of_a_batch() {
    let mut tc = common::must_start_cluster(3, 1).await;
    let client = must_connect(&tc.cluster).await;
    let pair = [kv_client::Key::routed("pair", "a"), kv_client::Key::routed("pair", "b")];
    must_put_pair(&client, &pair, "v1").await;
    let leader = tc.cluster.wait_for_leaders(Duration::from_secs(30)).await.unwrap()[&1];
    tc.cluster
        .set_failpoint(leader, "read-between", "1*return(1500)")
        .await
        .unwrap();
    let reader = {
        let client = must_connect(&tc.cluster).await;
        let pair = pair.clone();
        tokio::spawn(async move {
            let read = client.multi_get(pair.to_vec()).await;
            (read, Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    must_put_pair(&client, &pair, "v2").await;
    let written_at = Instant::now();
    let (read, read_at) = reader.await.unwrap();
    let read = read.expect("multi-get");
    let values: Vec<_> = read.iter().map(|v| v.as_ref().map(|v| v.value.clone())).collect();
    tc.cluster.stop_all(Duration::from_secs(10));
    assert!(written_at < read_at, "the batch must land while the multi-get is held");
    assert_eq!(values[0], values[1], "a multi-get saw half of a batch: {values:?}");
}

/// Promise: a scan of one shard reads one state across its micro-shards
/// (hole 3): two keys in different micro-shards of one shard, changed
/// together by a batch while the scan is held between micro-shards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_never_sees_half_of_a_batch() {
    let mut tc = common::must_start_cluster(3, 1).await;
    let client = must_connect(&tc.cluster).await;
    // The scan visits micro-shards in order: one key in the first, one later.
    let routes = client.routes();
    let routing_in = |want: &dyn Fn(u32) -> bool| {
        (0..)
            .map(|i| format!("r{i}"))
            .find(|r| want(routes.place("default", b"x", Some(r.as_bytes())).unwrap().ushard))
            .unwrap()
    };
    let first = routing_in(&|u| u == 0);
    let later = routing_in(&|u| u > 1);
    let pair = [
        kv_client::Key::routed(first.as_str(), "scan/a"),
        kv_client::Key::routed(later.as_str(), "scan/b"),
    ];
    must_put_pair(&client, &pair, "v1").await;
    let leader = tc.cluster.wait_for_leaders(Duration::from_secs(30)).await.unwrap()[&1];
    tc.cluster
        .set_failpoint(leader, "read-between", "1*return(1500)")
        .await
        .unwrap();
    let scan = {
        let mut node = tc.cluster.kv(leader).unwrap();
        tokio::spawn(async move {
            let page = node
                .scan(shoal_proto::kv::ScanRequest {
                    header: header(1),
                    prefix: b"scan/".to_vec(),
                    ..Default::default()
                })
                .await;
            (page, Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    must_put_pair(&client, &pair, "v2").await;
    let written_at = Instant::now();
    let (page, scanned_at) = scan.await.unwrap();
    let page = page.expect("scan").into_inner();
    assert!(written_at < scanned_at, "the batch must land while the scan is held");
    let values: Vec<_> = page
        .entries
        .iter()
        .map(|e| {
            (
                String::from_utf8_lossy(&e.key).to_string(),
                String::from_utf8_lossy(&e.value).to_string(),
            )
        })
        .collect();
    tc.cluster.stop_all(Duration::from_secs(10));
    assert_eq!(values.len(), 2, "{values:?}");
    assert_eq!(values[0].1, values[1].1, "a scan saw half of a batch: {values:?}");
}

/// Promise: a replica that is being removed never answers "absent" with a
/// valid token (hole 4). A read on a follower passes its barrier, is held
/// (`read-before`), and the node is drained meanwhile, so the shard
/// manager moves the replica away and the node deletes its data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_racing_replica_removal_fails_retryably() {
    let mut tc = common::must_start_two_region_cluster(Duration::from_secs(60)).await;
    let map = common::must_align(&tc.cluster).await;
    let client = must_connect(&tc.cluster).await;
    let ack = client.put("removed", "present").await.expect("write");
    let shard = map.shards.iter().find(|s| s.shard_id == ack.shard).unwrap().clone();
    let follower = *shard.voters.iter().find(|n| **n != shard.primary).unwrap();
    let ushard = client.routes().place("default", b"removed", None).unwrap().ushard;
    // Held until well after the drain has deleted the replica.
    tc.cluster
        .set_failpoint(follower, "read-before", "1*return(20000)")
        .await
        .unwrap();
    let read = {
        let mut node = tc.cluster.kv(follower).unwrap();
        let request = GetRequest {
            header: header(ack.shard),
            key: key_ref(ushard, "removed"),
            consistency: Some(shoal_proto::kv::ReadConsistency {
                mode: Some(shoal_proto::kv::read_consistency::Mode::MinVersion(ack.version)),
            }),
        };
        tokio::spawn(async move { tokio::time::timeout(Duration::from_secs(40), node.get(request)).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    tc.cluster.drain_node(follower).await.unwrap();
    common::must_wait_for_map(&tc.cluster, Duration::from_secs(30), "replica moved off", |m| {
        let s = m.shards.iter().find(|s| s.shard_id == ack.shard).unwrap();
        !shard_hosts(s).contains(&follower)
    })
    .await;
    let answer = read.await.unwrap().expect("the held read answers within 40 s");
    tc.cluster.stop_all(Duration::from_secs(10));
    match answer {
        Ok(found) => {
            let found = found.into_inner();
            assert_eq!(
                found.value.map(|v| v.value),
                Some(b"present".to_vec()),
                "a replica being removed answered (token {}) without the key",
                found.applied_version
            );
        }
        Err(status) => {
            let code = shoal_proto::status_meta::error_code(&status).unwrap_or("").to_string();
            assert!(
                ["UNKNOWN_SHARD", "WRONG_SHARD", "STALE_REPLICA", "NOT_LEADER"].contains(&code.as_str()),
                "a retryable refusal was expected, got {code:?}: {status}"
            );
        }
    }
}

/// Promise: a fast-ack write is acknowledged only once the primary has it
/// in its log, so moving the primary (no crash) loses none (hole 6).
/// Writers fast-ack unique keys to one shard while its primary moves four
/// times; every acknowledged key must then be readable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_ack_writes_survive_primary_moves() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let mut tc = common::must_start_two_region_cluster(Duration::from_secs(60)).await;
    let map = common::must_align(&tc.cluster).await;
    let client = Arc::new(must_connect(&tc.cluster).await);
    let target = map.shards[0].clone();
    let keys_of_shard: Vec<String> = (0..)
        .map(|i| format!("ff-{i}"))
        .filter(|k| client.routes().place("default", k.as_bytes(), None).unwrap().shard.0 == target.shard_id)
        .take(100_000)
        .collect();
    let keys = Arc::new(keys_of_shard);
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let options = kv_client::PutOptions {
        fast_ack: true,
        ..Default::default()
    };
    let mut writers = Vec::new();
    for w in 0..8usize {
        let (client, keys, stop, acked, options) = (
            client.clone(),
            keys.clone(),
            stop.clone(),
            acked.clone(),
            options.clone(),
        );
        writers.push(tokio::spawn(async move {
            let mut i = w;
            while !stop.load(Ordering::Relaxed) && i < keys.len() {
                if client.put_with(keys[i].as_str(), "v", &options).await.is_ok() {
                    acked.lock().unwrap().push(keys[i].clone());
                }
                i += 8;
            }
        }));
    }
    let mut primary = target.primary;
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let next = *target.voters.iter().find(|n| **n != primary).unwrap();
        tc.cluster
            .move_primary(target.shard_id, next)
            .await
            .expect("move primary");
        primary = next;
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let mut lost = Vec::new();
    for key in &acked {
        if client.get(key.as_str()).await.expect("strong read back").is_none() {
            lost.push(key.clone());
        }
    }
    tc.cluster.stop_all(Duration::from_secs(10));
    eprintln!("{} fast-ack writes acknowledged, {} lost", acked.len(), lost.len());
    assert!(acked.len() > 100, "too few writes acknowledged: {}", acked.len());
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged fast-ack writes lost: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(10)]
    );
}

/// Promise: one node's clock jumping far ahead cannot move a shard's apply
/// clock with it (hole 5): otherwise a live TTL key counts as expired for
/// every later condition, for good. The leader's clock jumps +1 h, it is
/// asked to write, its clock comes back, and a put-if-absent on a key that
/// lives for another 30 minutes must fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaders_clock_jump_does_not_expire_live_keys() {
    let mut tc = common::must_start_cluster(3, 1).await;
    let client = must_connect(&tc.cluster).await;
    let live = kv_client::PutOptions {
        ttl: Some(Duration::from_secs(1800)),
        ..Default::default()
    };
    client.put_with("lives", "30 minutes", &live).await.expect("ttl write");
    let leader = tc.cluster.wait_for_leaders(Duration::from_secs(30)).await.unwrap()[&1];
    tc.cluster.set_node_clock(leader, 3_600_000).await.unwrap();
    let jumped = {
        let mut node = tc.cluster.kv(leader).unwrap();
        let ushard = client.routes().place("default", b"other", None).unwrap().ushard;
        let put = PutRequest {
            header: header(1),
            key: key_ref(ushard, "other"),
            value: b"from a clock an hour ahead".to_vec(),
            ..PutRequest::default()
        };
        tokio::time::timeout(Duration::from_secs(3), node.put(put)).await
    };
    eprintln!("write through the leader an hour ahead: {jumped:?}");

    tc.cluster.set_node_clock(leader, 0).await.unwrap();
    let if_absent = kv_client::PutOptions {
        condition: Some(kv_client::Condition::Absent),
        ..Default::default()
    };
    let outcome = client
        .put_with("lives", "taken over", &if_absent)
        .await
        .expect("conditional write");
    tc.cluster.stop_all(Duration::from_secs(10));
    assert!(
        matches!(outcome, kv_client::WriteResult::ConditionFailed { .. }),
        "put-if-absent took over a key that lives for another 30 minutes: {outcome:?}"
    );
}

/// Sends `signal` (e.g. "STOP", "CONT") to node `id`'s process.
fn must_signal(cluster: &LocalCluster, id: u64, signal: &str) {
    let pid = cluster.pid(id).expect("node is running");
    let status = std::process::Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid}");
}

/// Promise: a leader that restarts after a power loss never serves a strong
/// read that misses a write a quorum acknowledged (hole 7). With
/// `lose_unsynced_writes`, a kill -9 loses what was not fsynced: the
/// leader's applied state and committed index fall back, its log does not.
/// It restarts while its followers are paused, is asked a strong read, and
/// the followers resume: restoring its old leadership, it would confirm it
/// with them and answer from its stale committed index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_back_from_power_loss_serves_no_stale_strong_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = test_spec(&dir, 3, 1);
    spec.faults.lose_unsynced_writes = true;
    let mut tc = must_start_spec(spec, dir).await;
    let client = must_connect(&tc.cluster).await;
    let ushard = client.routes().place("default", b"power", None).unwrap().ushard;
    let mut stale = Vec::new();
    for round in 0..3 {
        let leader = tc.cluster.wait_for_leaders(Duration::from_secs(30)).await.unwrap()[&1];
        let followers: Vec<u64> = (1..=3).filter(|n| *n != leader).collect();
        client.put("power", format!("old-{round}")).await.expect("first write");
        let acked = format!("new-{round}");
        client.put("power", acked.as_str()).await.expect("acknowledged write");
        for f in &followers {
            must_signal(&tc.cluster, *f, "STOP");
        }
        tc.cluster.kill(leader).unwrap();
        tc.cluster.start_node(leader).unwrap();
        let mut node = tc.cluster.kv(leader).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while tc.cluster.replica_status(leader).await.is_err() {
            assert!(Instant::now() < deadline, "node {leader} did not come back");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let read =
            tokio::spawn(async move { strong_get(&mut node, 1, ushard, "power", Duration::from_secs(10)).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        for f in &followers {
            must_signal(&tc.cluster, *f, "CONT");
        }
        let answer = read.await.unwrap();
        eprintln!(
            "round {round}: node {leader} back from power loss answered {:?}",
            answer.as_ref().map(|v| String::from_utf8_lossy(v).to_string())
        );
        if let Some(value) = answer {
            if value != acked.as_bytes() {
                stale.push((round, String::from_utf8_lossy(&value).to_string()));
            }
        }
    }
    tc.cluster.stop_all(Duration::from_secs(10));
    assert!(
        stale.is_empty(),
        "strong reads missed acknowledged writes after a power loss: {stale:?}"
    );
}

fn real_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Sleeps until this machine's real clock reads `at_ms`.
async fn sleep_until_real(at_ms: u64) {
    let now = real_ms();
    if at_ms > now {
        tokio::time::sleep(Duration::from_millis(at_ms - now)).await;
    }
}

/// Puts `key` with a 1 s TTL and returns its expiry on the writing
/// leader's clock.
async fn must_put_expiring(client: &kv_client::ShoalClient, key: &str) -> u64 {
    let ttl = kv_client::PutOptions {
        ttl: Some(Duration::from_secs(1)),
        ..Default::default()
    };
    client.put_with(key, "expires", &ttl).await.expect("ttl write");
    client.get(key).await.expect("read back").expect("live").expires_at_ms
}

/// Promise: a key's expiry is judged by one clock, so a condition and a
/// strong read on the same shard never disagree about whether it is there
/// (hole 2). Both schedules keep the leader's clock inside the 250 ms
/// offset budget; the test machine's clock is the real time.
///  1. Leader 200 ms fast. Once the key has expired by the leader's clock,
///     `delete --if-present` reports it absent; the clock comes back to real
///     time (still before the expiry) and a strong read must not show the
///     key again.
///  2. Leader on time. Once the key has expired, a strong read reports it
///     absent; the leader's clock goes 200 ms slow (back before the expiry)
///     and `put --if-absent` must not find the key there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_condition_and_a_strong_read_judge_expiry_alike() {
    let mut tc = common::must_start_cluster(3, 1).await;
    let client = must_connect(&tc.cluster).await;
    let leader = tc.cluster.wait_for_leaders(Duration::from_secs(30)).await.unwrap()[&1];
    let mut broken = Vec::new();

    tc.cluster.set_node_clock(leader, 200).await.unwrap();
    // Heartbeat replies carry the new clock to the leader's peer samples.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let expires = must_put_expiring(&client, "fast-clock").await;
    sleep_until_real(expires - 200 + 20).await;
    let deleted = client
        .delete_with("fast-clock", Some(kv_client::Condition::Present))
        .await
        .expect("delete-if-present");
    tc.cluster.set_node_clock(leader, 0).await.unwrap();
    let read = client.get("fast-clock").await.expect("strong read");
    let read_at = real_ms();
    eprintln!("schedule 1: delete-if-present {deleted:?}; then strong read {read:?} at {read_at}, expiry {expires}");
    assert!(read_at < expires, "schedule 1 ran too slowly to test anything");
    if matches!(deleted, kv_client::WriteResult::ConditionFailed { .. }) && read.is_some() {
        broken.push("delete-if-present saw the key absent, a later strong read saw it live");
    }

    tokio::time::sleep(Duration::from_millis(500)).await;
    let expires = must_put_expiring(&client, "slow-clock").await;
    sleep_until_real(expires + 20).await;
    let read = client.get("slow-clock").await.expect("strong read");
    tc.cluster.set_node_clock(leader, -200).await.unwrap();
    let if_absent = kv_client::PutOptions {
        condition: Some(kv_client::Condition::Absent),
        ..Default::default()
    };
    let put = client
        .put_with("slow-clock", "taken over", &if_absent)
        .await
        .expect("put-if-absent");
    let put_at = real_ms();
    eprintln!("schedule 2: strong read {read:?}; then put-if-absent {put:?} at {put_at}, expiry {expires}");
    assert!(put_at < expires + 200, "schedule 2 ran too slowly to test anything");
    if read.is_none() && matches!(put, kv_client::WriteResult::ConditionFailed { .. }) {
        broken.push("a strong read saw the key absent, a later put-if-absent found it live");
    }
    tc.cluster.stop_all(Duration::from_secs(10));
    assert!(broken.is_empty(), "expiry judged on two clocks: {broken:?}");
}

/// Promise: a write a quorum acknowledged survives a node losing its data
/// directory (hole 8, amnesia). Schedule: follower C is cut off; "acked" is
/// written through leader A and follower B; B and A are killed, B's data
/// directory is wiped and B starts again with the same node id; C is
/// healed. If B, remembering nothing, votes for C, C leads without
/// "acked" and a strong read returns the older value. Then A comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_lost_its_data_does_not_elect_a_leader_without_acknowledged_writes() {
    let mut tc = common::must_start_cluster(3, 1).await;
    let client = must_connect(&tc.cluster).await;
    let a = tc.cluster.wait_for_leaders(Duration::from_secs(30)).await.unwrap()[&1];
    let (b, c) = match a {
        1 => (2, 3),
        2 => (1, 3),
        _ => (1, 2),
    };
    let ushard = client.routes().place("default", b"amnesia", None).unwrap().ushard;
    client.put("amnesia", "before").await.expect("first write");
    for failpoint in ["raft-send", "raft-receive"] {
        tc.cluster.set_failpoint(c, failpoint, "return").await.unwrap();
    }
    client.put("amnesia", "acked").await.expect("write through A and B");
    tc.cluster.kill(b).unwrap();
    tc.cluster.kill(a).unwrap();
    let b_dir = tc.cluster.data_dir().join(format!("node-{b}"));
    std::fs::remove_dir_all(&b_dir).unwrap();
    std::fs::create_dir_all(&b_dir).unwrap();
    tc.cluster.start_node(b).unwrap();
    for failpoint in ["raft-send", "raft-receive"] {
        tc.cluster.set_failpoint(c, failpoint, "off").await.unwrap();
    }
    eprintln!("A = {a} and B = {b} down, B wiped and restarted, C = {c} healed");

    // Long enough for B's restart embargo and several of C's elections.
    let mut answers = Vec::new();
    let mut nodes = [(b, tc.cluster.kv(b).unwrap()), (c, tc.cluster.kv(c).unwrap())];
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        for (node, peer) in nodes.iter_mut() {
            if let Some(value) = strong_get(peer, 1, ushard, "amnesia", Duration::from_millis(300)).await {
                answers.push((*node, String::from_utf8_lossy(&value).to_string()));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("with A down, strong reads answered {answers:?}");
    tc.cluster.start_node(a).unwrap();
    let read = first_strong_read(&client, "amnesia", Duration::from_secs(20)).await;
    eprintln!("with A back: {read:?}");
    tc.cluster.stop_all(Duration::from_secs(10));
    let stale: Vec<_> = answers.iter().filter(|(_, v)| v != "acked").collect();
    assert!(stale.is_empty(), "strong reads lost an acknowledged write: {stale:?}");
    assert_eq!(
        read.as_deref(),
        Ok("acked"),
        "the shard came back with the acknowledged write"
    );
}

/// Promise: a bounded read is never older than its bound, even on a
/// follower whose clock is far behind the leader's (beyond the offset
/// budget): such a follower cannot measure the age of its state, so it
/// refuses. The follower's clock is set 10 s back, it is cut off from the
/// leader, a newer value is written, and 2 s later it is asked for a read
/// at most 1 s old.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_with_a_clock_far_behind_serves_no_stale_bounded_read() {
    let mut tc = common::must_start_cluster(3, 1).await;
    let client = must_connect(&tc.cluster).await;
    let leader = tc.cluster.wait_for_leaders(Duration::from_secs(30)).await.unwrap()[&1];
    let follower = (1..=3).find(|n| *n != leader).unwrap();
    let ushard = client.routes().place("default", b"bounded", None).unwrap().ushard;
    client.put("bounded", "old").await.expect("first write");
    tc.cluster.set_node_clock(follower, -10_000).await.unwrap();
    // Stamps keep arriving for a while: the follower is current, its clock is not.
    tokio::time::sleep(Duration::from_millis(500)).await;
    tc.cluster
        .set_failpoint(follower, "raft-receive", "return")
        .await
        .unwrap();
    client.put("bounded", "new").await.expect("write the follower misses");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut node = tc.cluster.kv(follower).unwrap();
    let request = GetRequest {
        header: header(1),
        key: key_ref(ushard, "bounded"),
        consistency: Some(shoal_proto::kv::ReadConsistency {
            mode: Some(shoal_proto::kv::read_consistency::Mode::MaxStalenessMs(1_000)),
        }),
    };
    let answer = tokio::time::timeout(Duration::from_secs(5), node.get(request)).await;
    let _ = tc.cluster.set_failpoint(follower, "raft-receive", "off").await;
    tc.cluster.stop_all(Duration::from_secs(10));
    let served = match answer {
        Ok(Ok(reply)) => reply
            .into_inner()
            .value
            .map(|v| String::from_utf8_lossy(&v.value).to_string()),
        other => {
            eprintln!("the follower refused: {other:?}");
            return;
        }
    };
    panic!("a follower 2 s behind the leader, clock 10 s slow, served a read at most 1 s old: {served:?}");
}

/// Promise: a data directory serves one node id for its whole life (hole 8,
/// the other half: a directory reused under another id). Nodes 2 and 3
/// swap data directories: each would vote with the other's promises. Both
/// must refuse to start, and start again on their own directories with
/// every acknowledged write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_started_under_another_node_id_is_refused() {
    let mut tc = common::must_start_cluster(3, 1).await;
    let client = must_connect(&tc.cluster).await;
    client.put("owned", "v1").await.expect("a write on the whole cluster");
    tc.cluster.kill(2).unwrap();
    tc.cluster.kill(3).unwrap();
    let data_dir = tc.cluster.data_dir().to_path_buf();
    let dir = |id: u64| data_dir.join(format!("node-{id}"));
    let swap = |a: &std::path::Path, b: &std::path::Path| {
        let aside = a.with_extension("aside");
        std::fs::rename(a, &aside).unwrap();
        std::fs::rename(b, a).unwrap();
        std::fs::rename(&aside, b).unwrap();
    };
    swap(&dir(2), &dir(3));
    tc.cluster.start_node(2).unwrap();
    tc.cluster.start_node(3).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut exited = Vec::new();
    while exited.len() < 2 && Instant::now() < deadline {
        exited.extend(tc.cluster.reap_exited());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let logs: Vec<String> = [2, 3]
        .iter()
        .map(|id| std::fs::read_to_string(tc.cluster.log_path(*id).unwrap()).unwrap_or_default())
        .collect();
    eprintln!("exited: {exited:?}");
    assert_eq!(
        exited.len(),
        2,
        "both nodes must refuse a directory of another node: {exited:?}"
    );
    assert!(exited.iter().all(|(_, status)| !status.success()), "{exited:?}");
    assert!(
        logs[0].contains("belongs to node 3, not node 2"),
        "node 2's log: {}",
        logs[0]
    );
    assert!(
        logs[1].contains("belongs to node 2, not node 3"),
        "node 3's log: {}",
        logs[1]
    );

    swap(&dir(2), &dir(3));
    tc.cluster.start_node(2).unwrap();
    tc.cluster.start_node(3).unwrap();
    tc.cluster.kill(1).unwrap();
    let read = first_strong_read(&client, "owned", Duration::from_secs(30)).await;
    tc.cluster.stop_all(Duration::from_secs(10));
    assert_eq!(read.as_deref(), Ok("v1"), "nodes 2 and 3 came back on their own data");
}

/// The value of the first strong read of `key` that finds it, within
/// `patience` (the cluster is coming back).
async fn first_strong_read(
    client: &kv_client::ShoalClient,
    key: &str,
    patience: Duration,
) -> Result<String, tokio::time::error::Elapsed> {
    tokio::time::timeout(patience, async {
        loop {
            if let Ok(Some(found)) = client.get(key).await {
                return String::from_utf8_lossy(&found.value).to_string();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
}
