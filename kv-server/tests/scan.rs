//! Scans: prefix and range, forward and reverse, paginated by count and by
//! bytes across shards, with routing-key micro-shards mixed in.

mod common;

use common::{must_connect, must_start_cluster};
use kv_client::{Key, ScanOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scans_page_through_every_shard_in_order() {
    let tc = must_start_cluster(1, 3).await;
    let client = must_connect(&tc.cluster).await;
    let mut expected = Vec::new();
    for i in 0..300 {
        let key = format!("item/{i:04}");
        client.put(key.clone(), format!("v{i}")).await.unwrap();
        expected.push(key);
    }
    for i in 0..20 {
        client.put(format!("other/{i:02}"), "x").await.unwrap();
    }
    expected.sort();

    let keys = |entries: Vec<kv_client::Entry>| {
        entries
            .into_iter()
            .map(|e| String::from_utf8(e.key).unwrap())
            .collect::<Vec<_>>()
    };

    // Prefix, small pages.
    let options = ScanOptions {
        prefix: b"item/".to_vec(),
        limit: 7,
        ..Default::default()
    };
    let mut pages = 0;
    let mut cursor: Option<Vec<u8>> = None;
    let mut seen = Vec::new();
    loop {
        let page = client.scan_page(&options, cursor.as_deref()).await.unwrap();
        assert!(page.entries.len() <= 7);
        seen.extend(keys(page.entries));
        pages += 1;
        match page.cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, expected);
    assert!(pages >= 300 / 7);

    // Reverse.
    let reverse = ScanOptions {
        prefix: b"item/".to_vec(),
        reverse: true,
        limit: 50,
        ..Default::default()
    };
    let mut backwards = expected.clone();
    backwards.reverse();
    assert_eq!(keys(client.scan_all(&reverse, 1000).await.unwrap()), backwards);

    // Range [item/0100, item/0200).
    let range = ScanOptions {
        start: b"item/0100".to_vec(),
        end: b"item/0200".to_vec(),
        limit: 13,
        ..Default::default()
    };
    assert_eq!(
        keys(client.scan_all(&range, 1000).await.unwrap()),
        expected[100..200].to_vec()
    );

    // Byte-limited pages still return everything, at least one entry a page.
    let by_bytes = ScanOptions {
        prefix: b"item/".to_vec(),
        limit: 100,
        max_bytes: 1,
        ..Default::default()
    };
    assert_eq!(keys(client.scan_all(&by_bytes, 1000).await.unwrap()), expected);

    // One routing key's micro-shard, with a user key that also exists unrouted.
    client
        .put(Key::routed("tenant-9", "item/0005"), "routed")
        .await
        .unwrap();
    client.put(Key::routed("tenant-9", "zzz"), "routed").await.unwrap();
    let routed = ScanOptions {
        routing: Some(b"tenant-9".to_vec()),
        ..Default::default()
    };
    // The routing key's micro-shard holds the routed keys, plus whichever
    // unrouted keys hash into it; nothing from any other micro-shard.
    let tenant_ushard = shoal_proto::routing::ushard_for_key(b"tenant-9", 64);
    let routed_entries = client.scan_all(&routed, 100).await.unwrap();
    assert!(routed_entries.iter().all(|e| e.ushard == tenant_ushard));
    let routed_keys = keys(routed_entries);
    let hashed_in: Vec<&String> = expected
        .iter()
        .filter(|k| shoal_proto::routing::ushard_for_key(k.as_bytes(), 64) == tenant_ushard)
        .collect();
    assert_eq!(routed_keys.len(), hashed_in.len() + 2, "{routed_keys:?}");
    assert!(routed_keys.contains(&"zzz".to_string()));
    assert!(routed_keys.contains(&"item/0005".to_string()));
    // The unrouted scan sees both copies of item/0005.
    let all = keys(
        client
            .scan_all(
                &ScanOptions {
                    prefix: b"item/0005".to_vec(),
                    ..Default::default()
                },
                100,
            )
            .await
            .unwrap(),
    );
    assert_eq!(all, vec!["item/0005".to_string(), "item/0005".to_string()]);

    // Delete removes from scans.
    client.delete("item/0000").await.unwrap();
    let after = keys(
        client
            .scan_all(
                &ScanOptions {
                    prefix: b"item/000".to_vec(),
                    ..Default::default()
                },
                100,
            )
            .await
            .unwrap(),
    );
    assert!(!after.contains(&"item/0000".to_string()));
}
