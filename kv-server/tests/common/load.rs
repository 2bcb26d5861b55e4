//! Client load for the membership tests: numbered keys written until told
//! to stop, and a read-back that every acknowledged one survived.

use kv_client::ShoalClient;
use local_cluster::LocalCluster;
use shoal_proto::sm::ShardMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Writes distinct keys `key/{from}..` until stopped; returns what was
/// acknowledged and every error seen.
pub fn spawn_writer(
    client: Arc<ShoalClient>,
    stop: Arc<AtomicBool>,
    from: u32,
) -> tokio::task::JoinHandle<(Vec<u32>, Vec<String>)> {
    tokio::spawn(async move {
        let mut acked = Vec::new();
        let mut errors = Vec::new();
        let mut i = from;
        while !stop.load(Ordering::Relaxed) {
            match client.put(format!("key/{i}"), format!("v{i}")).await {
                Ok(_) => acked.push(i),
                Err(e) => errors.push(format!("put key/{i}: {e}")),
            }
            i += 1;
        }
        (acked, errors)
    })
}

/// A client, after writing `key/0..n`.
pub async fn must_load(cluster: &LocalCluster, n: u32) -> Arc<ShoalClient> {
    let client = Arc::new(super::must_connect(cluster).await);
    for i in 0..n {
        client
            .put(format!("key/{i}"), format!("v{i}"))
            .await
            .expect("initial write");
    }
    client
}

/// Panics unless every `key/i` reads back as written.
pub async fn must_read_back(client: &ShoalClient, keys: impl IntoIterator<Item = u32>) {
    for i in keys {
        let v = client
            .get(format!("key/{i}"))
            .await
            .unwrap_or_else(|e| panic!("get key/{i}: {e}"))
            .unwrap_or_else(|| panic!("acknowledged key/{i} lost"));
        assert_eq!(v.value, format!("v{i}").into_bytes());
    }
}

/// Each shard with the voters that must hold it.
pub fn voters_of(map: &ShardMap) -> Vec<(u64, Vec<u64>)> {
    map.shards.iter().map(|s| (s.shard_id, s.voters.clone())).collect()
}
