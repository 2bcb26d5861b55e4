//! Every bad input gets its stable error code, and writes nothing.

mod common;

use ::kv_client::{ClientError, Key, Mutation, ScanOptions};
use common::{must_connect, must_start_cluster};
use local_cluster::probe::error_code;
use shoal_proto::kv::{
    batch_op, condition, BatchOp, BatchRequest, Condition, DeleteOp, GetRequest, KeyRef, PutOp, PutRequest,
    RequestHeader, ScanRequest, WriteOptions,
};
use std::time::Duration;

fn header(keyspace: &str, shard: u64) -> Option<RequestHeader> {
    Some(RequestHeader {
        keyspace: keyspace.into(),
        shard_id: shard,
        epoch: 0,
        ..Default::default()
    })
}

/// The shard and ushard the client would use for `key` in a 1-node,
/// 2-shard, 64-ushard cluster.
fn place(key: &[u8]) -> (u64, u32) {
    let ushard = shoal_proto::routing::ushard_for_key(key, 64);
    (
        shoal_proto::routing::shard_index_for_ushard(ushard, 2) as u64 + 1,
        ushard,
    )
}

fn put(keyspace: &str, shard: u64, ushard: u32, key: &[u8], value: Vec<u8>) -> PutRequest {
    PutRequest {
        header: header(keyspace, shard),
        key: Some(KeyRef {
            ushard,
            key: key.to_vec(),
        }),
        value,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_writes_get_stable_codes_and_write_nothing() {
    let tc = must_start_cluster(1, 2).await;
    let addr = tc.cluster.endpoints()[0].clone();
    let mut kv = local_cluster::probe::kv_at(&addr).unwrap();
    let (shard, ushard) = place(b"k");
    let other_shard = 3 - shard;

    let cases: Vec<(&str, PutRequest)> = vec![
        ("EMPTY_KEY", put("default", shard, ushard, b"", b"v".to_vec())),
        (
            "KEY_TOO_LARGE",
            put("default", shard, ushard, &vec![b'k'; 4097], b"v".to_vec()),
        ),
        (
            "VALUE_TOO_LARGE",
            put("default", shard, ushard, b"k", vec![0; 1024 * 1024 + 1]),
        ),
        ("UNKNOWN_KEYSPACE", put("nope", shard, ushard, b"k", b"v".to_vec())),
        ("UNKNOWN_SHARD", put("default", 99, ushard, b"k", b"v".to_vec())),
        ("WRONG_SHARD", put("default", other_shard, ushard, b"k", b"v".to_vec())),
        ("MALFORMED_REQUEST", put("default", shard, 64, b"k", b"v".to_vec())),
        (
            "MALFORMED_REQUEST",
            PutRequest {
                header: None,
                key: Some(KeyRef {
                    ushard,
                    key: b"k".to_vec(),
                }),
                value: vec![],
                ..Default::default()
            },
        ),
        (
            "MALFORMED_REQUEST",
            PutRequest {
                header: header("default", shard),
                key: None,
                value: vec![],
                ..Default::default()
            },
        ),
    ];
    for (expected, request) in cases {
        let status = kv.put(request).await.expect_err(expected);
        assert_eq!(error_code(&status), expected, "{status:?}");
        assert!(!status.message().is_empty());
        if expected == "WRONG_SHARD" {
            // The answer names the owner and the map it judged by, so a
            // client knows where to go and whether its map is older.
            let hint = |key| {
                status
                    .metadata()
                    .get(key)
                    .and_then(|v| v.to_str().ok())
                    .map(String::from)
            };
            assert_eq!(
                hint(shoal_proto::OWNER_HINT_METADATA),
                Some(shard.to_string()),
                "{status:?}"
            );
            assert_eq!(
                hint(shoal_proto::MAP_VERSION_METADATA),
                Some("1".to_string()),
                "{status:?}"
            );
        }
    }

    // A batch with one bad op writes none of its good ops.
    let (s1, u1) = place(b"good-1");
    let mut ops: Vec<BatchOp> = Vec::new();
    for key in ["good-1", "good-2", "good-3"] {
        let (s, u) = place(key.as_bytes());
        if s == s1 {
            ops.push(BatchOp {
                op: Some(batch_op::Op::Put(PutOp {
                    key: Some(KeyRef {
                        ushard: u,
                        key: key.into(),
                    }),
                    value: b"v".to_vec(),
                    ..Default::default()
                })),
            });
        }
    }
    ops.push(BatchOp {
        op: Some(batch_op::Op::Put(PutOp {
            key: Some(KeyRef {
                ushard: u1,
                key: vec![],
            }),
            value: vec![],
            ..Default::default()
        })),
    });
    let status = kv
        .batch(BatchRequest {
            header: header("default", s1),
            ops: ops.clone(),
            ..Default::default()
        })
        .await
        .expect_err("bad batch");
    assert_eq!(error_code(&status), "EMPTY_KEY");

    let too_many: Vec<BatchOp> = (0..1001)
        .map(|_| BatchOp {
            op: Some(batch_op::Op::Delete(DeleteOp {
                key: Some(KeyRef {
                    ushard: u1,
                    key: b"good-1".to_vec(),
                }),
                ..Default::default()
            })),
        })
        .collect();
    let status = kv
        .batch(BatchRequest {
            header: header("default", s1),
            ops: too_many,
            ..Default::default()
        })
        .await
        .expect_err("too many ops");
    assert_eq!(error_code(&status), "BATCH_TOO_LARGE");

    let too_big: Vec<BatchOp> = (0..5)
        .map(|i| BatchOp {
            op: Some(batch_op::Op::Put(PutOp {
                key: Some(KeyRef {
                    ushard: u1,
                    key: format!("big-{i}").into(),
                }),
                value: vec![0; 1024 * 1024],
                ..Default::default()
            })),
        })
        .collect();
    let status = kv
        .batch(BatchRequest {
            header: header("default", s1),
            ops: too_big,
            ..Default::default()
        })
        .await
        .expect_err("too many bytes");
    assert_eq!(error_code(&status), "BATCH_TOO_LARGE");

    let status = kv
        .batch(BatchRequest {
            header: header("default", s1),
            ops: vec![BatchOp { op: None }],
            ..Default::default()
        })
        .await
        .expect_err("empty op");
    assert_eq!(error_code(&status), "MALFORMED_REQUEST");

    let status = kv
        .scan(ScanRequest {
            header: header("default", shard),
            resume_after: vec![1],
            ..Default::default()
        })
        .await
        .expect_err("bad cursor");
    assert_eq!(error_code(&status), "MALFORMED_REQUEST");

    // Malformed conditions and write options.
    let bad_puts = [
        (
            PutRequest {
                condition: Some(Condition { check: None }),
                ..put("default", shard, ushard, b"k", b"v".to_vec())
            },
            "MALFORMED_REQUEST",
        ),
        (
            PutRequest {
                condition: Some(Condition {
                    check: Some(condition::Check::Value(vec![0; 2 << 20])),
                }),
                ..put("default", shard, ushard, b"k", b"v".to_vec())
            },
            "VALUE_TOO_LARGE",
        ),
        (
            PutRequest {
                ttl_ms: u64::MAX,
                ..put("default", shard, ushard, b"k", b"v".to_vec())
            },
            "MALFORMED_REQUEST",
        ),
        (
            PutRequest {
                options: Some(WriteOptions {
                    seq: 1,
                    ..Default::default()
                }),
                ..put("default", shard, ushard, b"k", b"v".to_vec())
            },
            "MALFORMED_REQUEST",
        ),
        (
            PutRequest {
                options: Some(WriteOptions {
                    client_id: 5,
                    seq: 3,
                    first_incomplete_seq: 4,
                    ..Default::default()
                }),
                ..put("default", shard, ushard, b"k", b"v".to_vec())
            },
            "MALFORMED_REQUEST",
        ),
    ];
    for (request, code) in bad_puts {
        let status = kv.put(request).await.expect_err("bad put");
        assert_eq!(error_code(&status), code, "{status:?}");
    }
    // A batch whose second op's condition fails applies none of its ops.
    let answer = kv
        .batch(BatchRequest {
            header: header("default", shard),
            ops: vec![
                BatchOp {
                    op: Some(batch_op::Op::Put(PutOp {
                        key: Some(KeyRef {
                            ushard,
                            key: b"k".to_vec(),
                        }),
                        value: b"v".to_vec(),
                        ..Default::default()
                    })),
                },
                BatchOp {
                    op: Some(batch_op::Op::Delete(DeleteOp {
                        key: Some(KeyRef {
                            ushard,
                            key: b"k".to_vec(),
                        }),
                        condition: Some(Condition {
                            check: Some(condition::Check::Version(999)),
                        }),
                    })),
                },
            ],
            ..Default::default()
        })
        .await
        .expect("a failed condition is an answer")
        .into_inner();
    assert!(answer.condition_failed && answer.failed_op == 1, "{answer:?}");
    assert_eq!(answer.current, None);

    // Nothing above was written: the keyspace is empty.
    let client = must_connect(&tc.cluster).await;
    let all = client.scan_all(&ScanOptions::default(), 100).await.expect("scan");
    assert!(all.is_empty(), "rejected requests wrote {all:?}");

    // The client refuses a cross-shard batch before sending anything.
    let mut keys = (0..100).map(|i| format!("x{i}")).collect::<Vec<_>>();
    keys.sort_by_key(|k| place(k.as_bytes()).0);
    let mutations = vec![
        Mutation::Put(Key::from(keys[0].clone()), b"v".to_vec()),
        Mutation::Put(Key::from(keys[99].clone()), b"v".to_vec()),
    ];
    assert_ne!(place(keys[0].as_bytes()).0, place(keys[99].as_bytes()).0);
    let err = client.batch(mutations).await.expect_err("cross-shard batch");
    assert!(matches!(err, ClientError::InvalidArgument(_)), "{err:?}");
    assert!(client.scan_all(&ScanOptions::default(), 100).await.unwrap().is_empty());

    // A valid batch after all that applies atomically with one version.
    let ack = client
        .batch(vec![
            Mutation::Put(Key::routed("user-1", "a"), b"1".to_vec()),
            Mutation::Put(Key::routed("user-1", "b"), b"2".to_vec()),
        ])
        .await
        .expect("routed batch");
    let a = client.get(Key::routed("user-1", "a")).await.unwrap().unwrap();
    let b = client.get(Key::routed("user-1", "b")).await.unwrap().unwrap();
    assert_eq!((a.version, b.version), (ack.version, ack.version));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_answers_not_leader_with_a_hint_and_writes_nothing() {
    let tc = must_start_cluster(3, 1).await;
    let leaders = tc.cluster.wait_for_leaders(Duration::from_secs(10)).await.unwrap();
    let leader = leaders[&1];
    let follower = (1..=3).find(|n| *n != leader).unwrap();
    let mut kv = tc.cluster.kv(follower).unwrap();
    let ushard = shoal_proto::routing::ushard_for_key(b"k", 64);

    let status = kv
        .put(put("default", 1, ushard, b"k", b"v".to_vec()))
        .await
        .expect_err("follower write");
    assert_eq!(error_code(&status), "NOT_LEADER");
    let hint = status
        .metadata()
        .get(shoal_proto::LEADER_HINT_METADATA)
        .expect("leader hint");
    assert_eq!(hint.to_str().unwrap(), leader.to_string());

    let status = kv
        .get(GetRequest {
            header: header("default", 1),
            key: Some(KeyRef {
                ushard,
                key: b"k".to_vec(),
            }),
            ..Default::default()
        })
        .await
        .expect_err("follower strong read");
    assert_eq!(error_code(&status), "NOT_LEADER");

    let client = must_connect(&tc.cluster).await;
    assert_eq!(client.get("k").await.unwrap(), None, "the refused write did not happen");
}
