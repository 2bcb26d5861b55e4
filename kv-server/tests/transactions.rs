//! Optimistic transactions against real clusters (docs/transactions.md):
//! write skew refused, every replica deciding alike, the window, the
//! epoch rule, lost answers, moves, scope and bad input.

mod common;

use common::{must_connect, must_start_cluster, must_start_spec, must_start_tuned, shard_manager_bin, test_spec};
use kv_client::{ClientError, Committed, Key, ShoalClient, SnapshotReads, TxnOptions};
use shoal_proto::kv::{BatchOp, CommitRequest, Condition, ErrorCode, KeyRef, PutOp, RequestHeader, TxnRead};
use std::sync::Arc;
use std::time::Duration;

const ROUTING: &str = "acct";

fn key(name: &str) -> Key {
    Key::routed(ROUTING, name)
}

fn code_of(error: &ClientError) -> Option<ErrorCode> {
    error.code()
}

fn value_of(client_value: Option<Vec<u8>>) -> i64 {
    client_value
        .map(|v| String::from_utf8(v).unwrap().parse().unwrap())
        .unwrap_or(0)
}

/// Adds one to `x` in a transaction, retried until it commits.
async fn must_increment_x(client: &ShoalClient) -> Committed {
    let ((), committed) = client
        .run_transaction(TxnOptions::default(), |txn| {
            Box::pin(async move {
                txn.increment(key("x"), 1).await?;
                Ok(())
            })
        })
        .await
        .expect("the increment commits in the end");
    committed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_skew_is_refused_and_every_replica_reaches_the_same_decisions() {
    let tc = must_start_cluster(3, 1).await;
    let client = Arc::new(must_connect(&tc.cluster).await);
    client.put(key("x"), "1").await.unwrap();
    client.put(key("y"), "1").await.unwrap();

    // Two transactions each read both keys and write one of them (the
    // doctors-on-call pattern): one of them must abort.
    let strong = TxnOptions {
        snapshot: SnapshotReads::Strong,
        ..TxnOptions::default()
    };
    let mut first = client.transaction_with(strong.clone());
    let mut second = client.transaction_with(strong.clone());
    for txn in [&mut first, &mut second] {
        assert_eq!(txn.get(key("x")).await.unwrap(), Some(b"1".to_vec()));
        assert_eq!(txn.get(key("y")).await.unwrap(), Some(b"1".to_vec()));
    }
    first.put(key("x"), "0").await.unwrap();
    second.put(key("y"), "0").await.unwrap();
    first.commit().await.expect("the first commits");
    match second.commit().await {
        Err(ClientError::TxnConflict { keys }) => assert_eq!(keys, vec![b"x".to_vec()]),
        other => panic!("write skew was let through: {other:?}"),
    }
    let y = client.get(key("y")).await.unwrap().unwrap();
    assert_eq!(y.value, b"1", "the loser wrote nothing");

    // A read-only transaction that saw a torn state is told so.
    let mut reader = client.transaction_with(TxnOptions {
        read_only: true,
        ..strong.clone()
    });
    reader.get(key("x")).await.unwrap();
    client.put(key("x"), "5").await.unwrap();
    client.put(key("y"), "5").await.unwrap();
    assert_eq!(reader.get(key("y")).await.unwrap(), Some(b"5".to_vec()));
    let torn = reader.commit().await.expect_err("x changed after it was read");
    assert_eq!(code_of(&torn), Some(ErrorCode::TxnConflict), "{torn}");

    // A scanned range conflicts with a key inserted into it.
    let mut scanner = client.transaction_with(strong.clone());
    let seen = scanner.scan_prefix(ROUTING.as_bytes(), b"r/", 10).await.unwrap();
    assert!(seen.is_empty());
    client.put(key("r/new"), "1").await.unwrap();
    scanner.put(key("r/count"), "0").await.unwrap();
    match scanner.commit().await {
        Err(ClientError::TxnConflict { keys }) => assert_eq!(keys, vec![b"r/new".to_vec()]),
        other => panic!("a phantom was let through: {other:?}"),
    }

    // A scan cut short by its limit still fills it when the transaction's
    // own deletes hide what the server returned first.
    client.put(key("q/1"), "1").await.unwrap();
    client.put(key("q/2"), "2").await.unwrap();
    let mut queue = client.transaction_with(strong.clone());
    queue.delete(key("q/1")).await.unwrap();
    let head = queue.scan_prefix(ROUTING.as_bytes(), b"q/", 1).await.unwrap();
    assert_eq!(head, vec![(b"q/2".to_vec(), b"2".to_vec())]);
    queue.commit().await.unwrap();

    // Concurrent transfers between four accounts from follower snapshots:
    // the total never changes, and every replica applied the same outcomes.
    for account in ["a0", "a1", "a2", "a3"] {
        client.put(key(account), "100").await.unwrap();
    }
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let client = client.clone();
            tokio::spawn(async move {
                for i in 0..15 {
                    let (from, to) = (format!("a{}", (w + i) % 4), format!("a{}", (w + i + 1) % 4));
                    client
                        .run_transaction(TxnOptions::default(), |txn| {
                            let (from, to) = (from.clone(), to.clone());
                            Box::pin(async move {
                                let balance = value_of(txn.get(key(&from)).await?);
                                txn.put(key(&from), (balance - 1).to_string()).await?;
                                let other = value_of(txn.get(key(&to)).await?);
                                txn.put(key(&to), (other + 1).to_string()).await?;
                                Ok(())
                            })
                        })
                        .await
                        .expect("a transfer commits in the end");
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    let mut total = 0;
    for account in ["a0", "a1", "a2", "a3"] {
        total += value_of(client.get(key(account)).await.unwrap().map(|v| v.value));
    }
    assert_eq!(total, 400);
    tc.cluster
        .wait_converged(&[(1, vec![1, 2, 3])], Duration::from_secs(30))
        .await
        .expect("replicas hold the same data");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_older_than_the_window_is_refused_as_too_old_and_a_retry_commits() {
    let tc = must_start_tuned(3, 1, |raft| raft.txn_window_ms = 400).await;
    let client = must_connect(&tc.cluster).await;
    client.put(key("x"), "1").await.unwrap();
    let mut old = client.transaction_with(TxnOptions {
        snapshot: SnapshotReads::Strong,
        ..TxnOptions::default()
    });
    old.get(key("x")).await.unwrap();
    // Other writes move the shard on; the floor follows them a window later.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while tokio::time::Instant::now() < deadline {
        client.put(key("other"), "v").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    old.put(key("x"), "2").await.unwrap();
    let error = old.commit().await.expect_err("the snapshot left the window");
    assert_eq!(code_of(&error), Some(ErrorCode::TxnTooOld), "{error}");
    assert!(error.is_retryable());
    assert_eq!(client.get(key("x")).await.unwrap().unwrap().value, b"1");
    let committed = must_increment_x(&client).await;
    assert!(committed.version > 0);
    assert_eq!(client.get(key("x")).await.unwrap().unwrap().value, b"2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_answer_was_lost_is_retried_and_applied_once() {
    let tc = must_start_cluster(3, 1).await;
    let client = must_connect(&tc.cluster).await;
    for node in 1..=3 {
        tc.cluster
            .set_failpoint(node, "lose-write-answer", "1*return")
            .await
            .unwrap();
    }
    // The first answer is lost after the commit applied; the client retries
    // with the same request id and gets the first answer, not a conflict
    // with its own write.
    let mut txn = client.transaction();
    assert_eq!(txn.increment(key("n"), 1).await.unwrap(), 1);
    let committed = txn.commit().await.expect("the retry is answered as the first attempt");
    let stored = client.get(key("n")).await.unwrap().unwrap();
    assert_eq!(stored.value, b"1", "applied once");
    assert_eq!(stored.version, committed.version);
    for node in 1..=3 {
        tc.cluster
            .set_failpoint(node, "lose-write-answer", "off")
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epoch_changes_and_moves_during_a_transaction_fail_it_retryably_and_apply_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = test_spec(&dir, 3, 2);
    spec.shard_manager = true;
    spec.shard_manager_bin = shard_manager_bin();
    let tc = must_start_spec(spec, dir).await;
    common::must_align(&tc.cluster).await;
    let client = must_connect(&tc.cluster).await;
    let manager = tc.cluster.shard_manager().unwrap();
    client.put(key("x"), "1").await.unwrap();
    let at = client
        .routes()
        .place("default", b"x", Some(ROUTING.as_bytes()))
        .unwrap();

    // The primary moves between the read and the commit.
    let mut txn = client.transaction_with(TxnOptions {
        snapshot: SnapshotReads::Strong,
        ..TxnOptions::default()
    });
    txn.get(key("x")).await.unwrap();
    txn.put(key("x"), "2").await.unwrap();
    let map = manager.shard_map().await.unwrap();
    let shard = map.shards.iter().find(|s| s.shard_id == at.shard.0).unwrap();
    let next = shard.voters.iter().copied().find(|n| *n != shard.primary).unwrap();
    manager.move_primary(at.shard.0, next).await.unwrap();
    common::must_align(&tc.cluster).await;
    // The epoch rule is the primary's map's: wait until the new primary
    // has heard of the new epoch (its answers carry it).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        client.refresh().await.unwrap();
        let ack = client.put(key("probe"), "p").await.unwrap();
        if ack.epoch > shard.epoch {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new epoch never reached the primary"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let error = txn.commit().await.expect_err("the epoch changed");
    assert_eq!(code_of(&error), Some(ErrorCode::EpochChanged), "{error}");
    assert!(error.is_retryable());
    assert_eq!(client.get(key("x")).await.unwrap().unwrap().value, b"1");

    // The μshard moves to the other shard between the read and the commit.
    let mut txn = client.transaction_with(TxnOptions {
        snapshot: SnapshotReads::Strong,
        ..TxnOptions::default()
    });
    txn.get(key("x")).await.unwrap();
    txn.put(key("x"), "3").await.unwrap();
    let other = if at.shard.0 == 1 { 2 } else { 1 };
    let started = manager.move_ushard("default", at.ushard, other).await.expect("move");
    manager
        .wait_for_move(started.move_id, "done", Duration::from_secs(60))
        .await
        .expect("the move finishes");
    let error = txn.commit().await.expect_err("the μshard moved");
    assert!(error.is_retryable(), "{error}");
    assert!(
        matches!(
            code_of(&error),
            Some(ErrorCode::WrongShard | ErrorCode::Moving | ErrorCode::UnknownShard)
        ),
        "{error}"
    );
    assert_eq!(client.get(key("x")).await.unwrap().unwrap().value, b"1");
    let committed = must_increment_x(&client).await;
    assert_eq!(committed.shard, other, "committed where the μshard is now");
    assert_eq!(client.get(key("x")).await.unwrap().unwrap().value, b"2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_scope_and_bad_transactions_get_stable_codes_and_apply_nothing() {
    let tc = must_start_cluster(3, 2).await;
    let client = must_connect(&tc.cluster).await;
    let routes = client.routes();
    let shard_of = |name: &str| routes.place("default", name.as_bytes(), None).unwrap().shard;
    let a = "cross-a".to_string();
    let b = (0..)
        .map(|i| format!("cross-b{i}"))
        .find(|name| shard_of(name) != shard_of(&a))
        .unwrap();

    // Keys of two μshards of one shard commit together.
    let ushard_of = |name: &str| routes.place("default", name.as_bytes(), None).unwrap().ushard;
    let partner = (0..)
        .map(|i| format!("near-{i}"))
        .find(|name| shard_of(name) == shard_of(&a) && ushard_of(name) != ushard_of(&a))
        .unwrap();
    let mut txn = client.transaction();
    txn.put(a.as_str(), "1").await.unwrap();
    txn.put(partner.as_str(), "1").await.unwrap();
    txn.commit().await.expect("two μshards of one shard");
    assert_eq!(client.get(partner.as_str()).await.unwrap().unwrap().value, b"1");
    client.delete(a.as_str()).await.unwrap();

    // Two shards: refused at the key that crosses, before any commit.
    let mut txn = client.transaction();
    txn.put(a.as_str(), "1").await.unwrap();
    let crossed = txn.put(b.as_str(), "1").await.expect_err("another shard");
    assert_eq!(code_of(&crossed), Some(ErrorCode::CrossShardTxn), "{crossed}");
    assert!(!crossed.is_retryable());
    txn.abort();
    let after_abort = txn.commit().await.expect_err("aborted");
    assert_eq!(code_of(&after_abort), Some(ErrorCode::TxnFinished));
    assert_eq!(client.get(a.as_str()).await.unwrap(), None, "nothing applied");

    let mut read_only = client.transaction_with(TxnOptions {
        read_only: true,
        ..TxnOptions::default()
    });
    let write = read_only.put(key("k"), "v").await.expect_err("read-only");
    assert_eq!(code_of(&write), Some(ErrorCode::ReadOnlyTxn));
    let empty = client.transaction().commit().await.expect_err("empty");
    assert_eq!(code_of(&empty), Some(ErrorCode::EmptyTxn));

    let mut small = client.transaction_with(TxnOptions {
        max_keys: 2,
        ..TxnOptions::default()
    });
    for name in ["k1", "k2", "k3"] {
        small.put(key(name), "v").await.unwrap();
    }
    let large = small.commit().await.expect_err("over the key limit");
    assert_eq!(code_of(&large), Some(ErrorCode::TxnTooLarge), "{large}");
    let mut slow = client.transaction_with(TxnOptions {
        max_duration: Duration::from_millis(50),
        ..TxnOptions::default()
    });
    slow.put(key("k1"), "v").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let late = slow.commit().await.expect_err("over the duration limit");
    assert_eq!(code_of(&late), Some(ErrorCode::TxnTooOld), "{late}");
    let mut heavy = client.transaction_with(TxnOptions {
        max_bytes: 1_000,
        ..TxnOptions::default()
    });
    heavy.put(key("k1"), vec![b'v'; 1_001]).await.unwrap();
    let large = heavy.commit().await.expect_err("over the byte limit");
    assert_eq!(code_of(&large), Some(ErrorCode::TxnTooLarge), "{large}");
    let done = slow.commit().await.expect_err("finished");
    assert_eq!(code_of(&done), Some(ErrorCode::TxnFinished));
    assert_eq!(client.get(key("k1")).await.unwrap(), None, "nothing applied");

    // The server holds the same rules for a client that does not.
    let placed = routes.place("default", b"k1", Some(ROUTING.as_bytes())).unwrap();
    let leader = tc.cluster.leaders().await[&placed.shard.0];
    let mut kv = tc.cluster.kv(leader).unwrap();
    let header = Some(RequestHeader {
        keyspace: "default".into(),
        shard_id: placed.shard.0,
        ..RequestHeader::default()
    });
    let read = |i: usize| TxnRead {
        key: Some(KeyRef {
            ushard: placed.ushard,
            key: format!("r{i}").into_bytes(),
        }),
        version: 0,
    };
    let put = |condition: Option<Condition>| BatchOp {
        op: Some(shoal_proto::kv::batch_op::Op::Put(PutOp {
            key: Some(KeyRef {
                ushard: placed.ushard,
                key: b"k1".to_vec(),
            }),
            value: b"v".to_vec(),
            condition,
            ttl_ms: 0,
        })),
    };
    let refusal = |request: CommitRequest| {
        let mut kv = kv.clone();
        async move { local_cluster::probe::error_code(&kv.commit(request).await.expect_err("refused")) }
    };
    let base = CommitRequest {
        header: header.clone(),
        ..CommitRequest::default()
    };
    assert_eq!(refusal(base.clone()).await, "EMPTY_TXN");
    let too_many = CommitRequest {
        reads: (0..1001).map(read).collect(),
        writes: vec![put(None)],
        ..base.clone()
    };
    assert_eq!(refusal(too_many).await, "TXN_TOO_LARGE");
    let megabyte = |i: usize| BatchOp {
        op: Some(shoal_proto::kv::batch_op::Op::Put(PutOp {
            key: Some(KeyRef {
                ushard: placed.ushard,
                key: format!("big{i}").into_bytes(),
            }),
            value: vec![b'v'; 1 << 20],
            condition: None,
            ttl_ms: 0,
        })),
    };
    let too_big = CommitRequest {
        writes: (0..5).map(megabyte).collect(),
        ..base.clone()
    };
    assert_eq!(refusal(too_big).await, "TXN_TOO_LARGE");
    let conditioned = CommitRequest {
        writes: vec![put(Some(Condition {
            check: Some(shoal_proto::kv::condition::Check::Absent(true)),
        }))],
        ..base.clone()
    };
    assert_eq!(refusal(conditioned).await, "MALFORMED_REQUEST");
    // Blind writes: no snapshot, so no window to be inside.
    let fine = CommitRequest {
        writes: vec![put(None)],
        ..base
    };
    let answer = kv.commit(fine).await.expect("a well-formed commit").into_inner();
    assert!(!answer.conflict && answer.version > 0, "{answer:?}");
}
