//! Attacks on the per-request consistency promises (docs/consistency.md):
//! bounded staleness from a cut-off follower, read-your-writes through a
//! lagging follower, strong reads across primary changes, compare-and-set
//! races, counters under lost answers and kills, TTL expiry, fast-ack.
//! Needs a kv-server built with the `failpoints` feature (`make test`).

mod common;

use common::{must_connect, must_start_cluster, must_start_spec, must_start_tuned, test_spec};
use kv_client::{ClientConfig, ClientError, Condition, PutOptions, ReadConsistency, Session, ShoalClient, WriteResult};
use shoal_proto::kv::{read_consistency, GetRequest, KeyRef, ReadConsistency as WireConsistency, RequestHeader};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

fn get_request(shard: u64, ushard: u32, key: &str, mode: read_consistency::Mode) -> GetRequest {
    GetRequest {
        header: Some(RequestHeader {
            keyspace: "default".into(),
            shard_id: shard,
            epoch: 0,
            ..Default::default()
        }),
        key: Some(KeyRef {
            ushard,
            key: key.as_bytes().to_vec(),
        }),
        consistency: Some(WireConsistency { mode: Some(mode) }),
    }
}

fn error_code(status: &tonic::Status) -> String {
    shoal_proto::status_meta::error_code(status).unwrap_or("").to_string()
}

/// A follower of `shard`: a replica that is not its leader.
async fn a_follower(tc: &common::TestCluster, shard: u64) -> (u64, u64) {
    let leaders = tc.cluster.wait_for_leaders(Duration::from_secs(30)).await.unwrap();
    let leader = leaders[&shard];
    let follower = (1..=3).find(|n| *n != leader).unwrap();
    (leader, follower)
}

/// Writer acknowledgements: (time acknowledged, value), values increasing.
type AckLog = Arc<Mutex<Vec<(Instant, u64)>>>;

/// The largest value acknowledged before `t` (0 if none).
fn acked_before(acks: &AckLog, t: Instant) -> u64 {
    acks.lock()
        .unwrap()
        .iter()
        .filter(|(at, _)| *at < t)
        .map(|(_, v)| *v)
        .max()
        .unwrap_or(0)
}

fn spawn_counter_writer(
    client: Arc<ShoalClient>,
    key: &'static str,
    stop: Arc<AtomicBool>,
) -> (AckLog, tokio::task::JoinHandle<()>) {
    let acks: AckLog = Arc::new(Mutex::new(Vec::new()));
    let log = acks.clone();
    let handle = tokio::spawn(async move {
        let mut value = 0u64;
        while !stop.load(Ordering::Relaxed) {
            value += 1;
            if client.put(key, value.to_string()).await.is_ok() {
                log.lock().unwrap().push((Instant::now(), value));
            }
        }
    });
    (acks, handle)
}

fn value_of(bytes: &[u8]) -> u64 {
    std::str::from_utf8(bytes).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_reads_are_never_older_than_their_bound_even_from_a_cut_off_follower() {
    let tc = must_start_cluster(3, 1).await;
    let client = Arc::new(must_connect(&tc.cluster).await);
    let placement = client.routes().place("default", b"bounded", None).unwrap();
    let (_, follower) = a_follower(&tc, placement.shard.0).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (acks, writer) = spawn_counter_writer(client.clone(), "bounded", stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;

    let bound = Duration::from_millis(1_000);
    let mut node = tc.cluster.kv(follower).unwrap();
    let mode = read_consistency::Mode::MaxStalenessMs(bound.as_millis() as u64);
    let (mut served, mut refused, mut served_while_cut) = (0, 0, 0);
    let start = Instant::now();
    let mut cut_at = None;
    while start.elapsed() < Duration::from_secs(6) {
        if cut_at.is_none() && start.elapsed() > Duration::from_secs(2) {
            // The follower hears nothing from the leader from now on.
            tc.cluster
                .set_failpoint(follower, "raft-receive", "return")
                .await
                .unwrap();
            cut_at = Some(Instant::now());
        }
        let invoked = Instant::now();
        match node
            .get(get_request(placement.shard.0, placement.ushard, "bounded", mode))
            .await
        {
            Ok(response) => {
                let seen = response.into_inner().value.map(|v| value_of(&v.value)).unwrap_or(0);
                let floor = invoked.checked_sub(bound).map(|t| acked_before(&acks, t)).unwrap_or(0);
                assert!(
                    seen >= floor,
                    "bounded read saw {seen}, but {floor} was acknowledged more than {bound:?} before the read"
                );
                served += 1;
                if cut_at.is_some() {
                    served_while_cut += 1;
                }
            }
            Err(status) => {
                assert_eq!(error_code(&status), "STALE_REPLICA", "{status:?}");
                refused += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Through the client, the same read goes to a replica that can serve it.
    let through_client = client
        .get_with("bounded", ReadConsistency::Bounded(bound))
        .await
        .expect("a bounded read through the client");
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    tc.cluster.set_failpoint(follower, "raft-receive", "off").await.unwrap();
    assert!(through_client.is_some());
    assert!(
        served > 20,
        "the follower served bounded reads while connected: {served}"
    );
    assert!(
        refused > 20,
        "the cut-off follower refused once past its bound: {refused}"
    );
    // It may serve only for about one bound after the cut.
    assert!(served_while_cut < served, "{served_while_cut} of {served}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_your_writes_sees_the_own_write_through_a_lagging_follower() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = test_spec(&dir, 3, 1);
    spec.regions = ["a", "b", "c"].map(String::from).to_vec();
    let tc = must_start_spec(spec, dir).await;
    let probe = must_connect(&tc.cluster).await;
    let placement = probe.routes().place("default", b"ryw", None).unwrap();
    let (_, follower) = a_follower(&tc, placement.shard.0).await;
    let region = ["a", "b", "c"][(follower - 1) as usize];
    tc.cluster
        .set_failpoint(follower, "raft-receive", "return")
        .await
        .unwrap();

    // A session in the lagging follower's region: its reads go there first.
    let config = ClientConfig {
        endpoints: tc.cluster.endpoints(),
        region: Some(region.to_string()),
        ..ClientConfig::default()
    };
    let session = Session::new(Arc::new(ShoalClient::connect(config).await.unwrap()));
    for i in 0..20 {
        let ack = session.put("ryw", format!("v{i}")).await.unwrap();
        // Asked directly, the lagging follower refuses rather than answer stale.
        let mut node = tc.cluster.kv(follower).unwrap();
        let refusal = node
            .get(get_request(
                placement.shard.0,
                placement.ushard,
                "ryw",
                read_consistency::Mode::MinVersion(ack.version),
            ))
            .await
            .expect_err("a follower that lags must not serve the token");
        assert_eq!(error_code(&refusal), "STALE_REPLICA");
        let seen = session.get("ryw").await.unwrap().expect("own write visible");
        assert_eq!(seen.value, format!("v{i}").into_bytes());
        assert!(seen.version >= ack.version);
    }
    tc.cluster.set_failpoint(follower, "raft-receive", "off").await.unwrap();
    // Healed, the follower catches up and serves the token itself.
    let token = session.token(placement.shard.0);
    let mut node = tc.cluster.kv(follower).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let request = get_request(
            placement.shard.0,
            placement.ushard,
            "ryw",
            read_consistency::Mode::MinVersion(token),
        );
        if let Ok(response) = node.get(request).await {
            assert_eq!(response.into_inner().value.unwrap().value, b"v19");
            break;
        }
        assert!(Instant::now() < deadline, "the healed follower never caught up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strong_reads_see_every_acknowledged_write_across_primary_changes() {
    let mut tc = common::must_start_two_region_cluster(Duration::from_secs(60)).await;
    let client = Arc::new(must_connect(&tc.cluster).await);
    let placement = client.routes().place("default", b"strong", None).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (acks, writer) = spawn_counter_writer(client.clone(), "strong", stop.clone());
    // A reader through the client, checking every read against the acks.
    let reader = {
        let (client, acks, stop) = (client.clone(), acks.clone(), stop.clone());
        tokio::spawn(async move {
            let mut reads = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let invoked = Instant::now();
                if let Ok(Some(v)) = client.get("strong").await {
                    let floor = acked_before(&acks, invoked);
                    let seen = value_of(&v.value);
                    assert!(seen >= floor, "strong read saw {seen} after {floor} was acknowledged");
                    reads += 1;
                }
            }
            reads
        })
    };
    // Move the primary twice, then kill its node.
    let mut moves = 0;
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let map = tc.cluster.shard_map().await.unwrap();
        let shard = map.shards.iter().find(|s| s.shard_id == placement.shard.0).unwrap();
        let to = *shard.voters.iter().find(|v| **v != shard.primary).unwrap();
        if tc.cluster.move_primary(placement.shard.0, to).await.is_ok() {
            moves += 1;
        }
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let leaders = tc.cluster.leaders().await;
    let killed = leaders[&placement.shard.0];
    tc.cluster.kill(killed).unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    let reads = reader.await.unwrap();
    // After everything: the last acknowledged write is what a strong read sees.
    let last = acks.lock().unwrap().last().map(|(_, v)| *v).unwrap();
    let seen = value_of(&client.get("strong").await.unwrap().unwrap().value);
    assert!(seen >= last, "final strong read {seen} < last acknowledged {last}");
    assert!(moves >= 1 && reads > 50, "moves {moves}, reads {reads}");
    tc.cluster.restart(killed).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_compare_and_set_has_exactly_one_winner_per_version() {
    let tc = must_start_cluster(3, 2).await;
    let clients: Vec<Arc<ShoalClient>> = {
        let mut v = Vec::new();
        for _ in 0..6 {
            v.push(Arc::new(must_connect(&tc.cluster).await));
        }
        v
    };
    // put-if-absent: one of six racing creators wins.
    let creators = clients.iter().enumerate().map(|(i, c)| {
        let c = c.clone();
        async move {
            let options = PutOptions {
                condition: Some(Condition::Absent),
                ..PutOptions::default()
            };
            c.put_with("cas", format!("{i}:0"), &options).await.unwrap()
        }
    });
    let created = futures::future::join_all(creators).await;
    let winners: Vec<_> = created
        .iter()
        .filter(|r| matches!(r, WriteResult::Applied(_)))
        .collect();
    assert_eq!(winners.len(), 1, "{created:?}");

    // Read-then-put-if-version loops: every success names the version it replaced.
    let successes = Arc::new(Mutex::new(Vec::new()));
    let tasks = clients.iter().enumerate().map(|(i, c)| {
        let (c, successes) = (c.clone(), successes.clone());
        async move {
            let mut failed = 0;
            for round in 1..=25 {
                let current = c.get("cas").await.unwrap().unwrap();
                let options = PutOptions {
                    condition: Some(Condition::Version(current.version)),
                    ..PutOptions::default()
                };
                match c.put_with("cas", format!("{i}:{round}"), &options).await.unwrap() {
                    WriteResult::Applied(ack) => successes.lock().unwrap().push((current.version, ack.version)),
                    WriteResult::ConditionFailed { current: now } => {
                        let now = now.expect("the key exists");
                        assert_ne!(now.version, current.version, "refused although the version matched");
                        failed += 1;
                    }
                }
            }
            failed
        }
    });
    let failures: u64 = futures::future::join_all(tasks).await.into_iter().sum();
    let mut successes = successes.lock().unwrap().clone();
    successes.sort();
    let mut replaced: Vec<u64> = successes.iter().map(|(from, _)| *from).collect();
    replaced.dedup();
    assert_eq!(
        replaced.len(),
        successes.len(),
        "two winners replaced one version: {successes:?}"
    );
    // The winners form one chain from the created version to the final one.
    let created_version = match winners[0] {
        WriteResult::Applied(ack) => ack.version,
        _ => unreachable!(),
    };
    let mut at = created_version;
    for (from, to) in &successes {
        assert_eq!(
            *from, at,
            "a winner replaced a version that was not current: {successes:?}"
        );
        at = *to;
    }
    let last = clients[0].get("cas").await.unwrap().unwrap();
    assert_eq!(last.version, at);
    assert!(failures > 0, "six racing clients never collided");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counter_increments_sum_exactly_under_lost_answers_and_a_primary_kill() {
    let mut tc = must_start_cluster(3, 1).await;
    let strict = Arc::new(must_connect(&tc.cluster).await);
    // Control: without exactly-once, a lost answer is indeterminate.
    let config = ClientConfig {
        endpoints: tc.cluster.endpoints(),
        exactly_once: false,
        ..ClientConfig::default()
    };
    let loose = ShoalClient::connect(config).await.unwrap();
    for node in 1..=3 {
        tc.cluster
            .set_failpoint(node, "lose-write-answer", "return")
            .await
            .unwrap();
    }
    let lost = loose.increment("control", 1).await.expect_err("the answer is lost");
    assert!(matches!(lost, ClientError::Indeterminate(_)), "{lost:?}");
    // From now on every third answer is lost (the write is applied).
    for node in 1..=3 {
        tc.cluster
            .set_failpoint(node, "lose-write-answer", "33%return")
            .await
            .unwrap();
    }
    let acked = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (client, acked) = (strict.clone(), acked.clone());
            tokio::spawn(async move {
                let mut unknown = 0u64;
                for _ in 0..60 {
                    match client.increment("counter", 1).await {
                        Ok(_) => {
                            acked.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) if e.is_indeterminate() => unknown += 1,
                        Err(e) => panic!("increment failed: {e}"),
                    }
                }
                unknown
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let placement = strict.routes().place("default", b"counter", None).unwrap();
    let leader = tc.cluster.leaders().await[&placement.shard.0];
    tc.cluster.kill(leader).unwrap();
    let mut unknown = 0;
    for worker in workers {
        unknown += worker.await.unwrap();
    }
    tc.cluster.restart(leader).unwrap();
    for node in (1..=3).filter(|n| *n != leader) {
        tc.cluster
            .set_failpoint(node, "lose-write-answer", "off")
            .await
            .unwrap();
    }
    let total = value_of(&strict.get("counter").await.unwrap().unwrap().value);
    let acked = acked.load(Ordering::Relaxed);
    assert!(
        acked <= total && total <= acked + unknown,
        "counter {total}, acknowledged {acked}, indeterminate {unknown}"
    );
    assert_eq!(unknown, 0, "every increment was answered within the deadline");
    assert_eq!(total, 240);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_keys_vanish_at_expiry_and_fast_ack_writes_become_visible() {
    let tc = must_start_cluster(3, 1).await;
    let client = must_connect(&tc.cluster).await;
    let ttl = PutOptions {
        ttl: Some(Duration::from_millis(1_500)),
        ..PutOptions::default()
    };
    client.put_with("ephemeral", "here", &ttl).await.unwrap();
    let read = client.get("ephemeral").await.unwrap().expect("visible before expiry");
    assert!(read.expires_at_ms > 0);
    let absent = PutOptions {
        condition: Some(Condition::Absent),
        ..PutOptions::default()
    };
    assert!(matches!(
        client.put_with("ephemeral", "again", &absent).await.unwrap(),
        WriteResult::ConditionFailed { .. }
    ));
    tokio::time::sleep(Duration::from_millis(1_700)).await;
    assert_eq!(
        client.get("ephemeral").await.unwrap(),
        None,
        "expired keys are invisible"
    );
    // A follower judges expiry by the apply clock it has applied: the
    // strong read above ticked it, and a bounded read may be served from a
    // state up to its staleness old, so it sees the key go soon after.
    let bounded = ReadConsistency::Bounded(Duration::from_secs(5));
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.get_with("ephemeral", bounded).await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "a bounded read kept showing an expired key");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let scan = client.scan_all(&kv_client::ScanOptions::default(), 100).await.unwrap();
    assert!(scan.iter().all(|e| e.key != b"ephemeral"), "{scan:?}");
    assert!(matches!(
        client.put_with("ephemeral", "again", &absent).await.unwrap(),
        WriteResult::Applied(_)
    ));

    // Fast-ack: acknowledged without a version, then visible.
    let fast = PutOptions {
        fast_ack: true,
        ..PutOptions::default()
    };
    match client.put_with("quick", "fast", &fast).await.unwrap() {
        WriteResult::Applied(ack) => assert_eq!(ack.version, 0),
        other => panic!("{other:?}"),
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while client.get("quick").await.unwrap().is_none() {
        assert!(Instant::now() < deadline, "a fast-acked write never appeared");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Fast-ack with a condition is refused: its answer needs the applied state.
    let bad = PutOptions {
        fast_ack: true,
        condition: Some(Condition::Absent),
        ..PutOptions::default()
    };
    let refused = client.put_with("quick", "2", &bad).await.unwrap_err();
    assert_eq!(
        refused.code(),
        Some(shoal_proto::kv::ErrorCode::MalformedRequest),
        "{refused}"
    );
    // A counter refuses a value that is not an integer, and changes nothing.
    let not_counter = client.increment("quick", 1).await.unwrap_err();
    assert_eq!(not_counter.code(), Some(shoal_proto::kv::ErrorCode::NotACounter));
    assert_eq!(client.get("quick").await.unwrap().unwrap().value, b"fast");
}

/// Key counts of the shard's replicas, once all three have applied the same index.
async fn settled_key_counts(tc: &common::TestCluster, shard: u64) -> Option<u64> {
    let mut seen = Vec::new();
    for node in 1..=3 {
        let digest = tc.cluster.shard_digest(node, shard).await.ok()?;
        seen.push((digest.applied_index, digest.key_count, digest.digest));
    }
    seen.dedup();
    (seen.len() == 1).then(|| seen[0].1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_clients_exactly_once_records_are_forgotten_on_every_replica() {
    let tc = must_start_tuned(3, 1, |raft| {
        raft.idle_client_expiry_ms = 1500;
        raft.idle_client_sweep_ms = 200;
    })
    .await;
    let client = must_connect(&tc.cluster).await;
    let ack = client.put("k", "v").await.unwrap();
    // One user key, the apply clock, and this client's record.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut with_record = false;
    loop {
        match settled_key_counts(&tc, ack.shard).await {
            Some(3) => with_record = true,
            Some(2) if with_record => break,
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "the idle client's record was never forgotten on every replica (seen it: {with_record})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The data itself is untouched.
    assert_eq!(client.get("k").await.unwrap().unwrap().value, b"v");
}
