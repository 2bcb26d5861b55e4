//! What tests and benchmarks ask of a running cluster beyond starting and
//! killing it: raw connections that bypass the client's routing, the error
//! code of a refusal, and whether replicas have converged.

use crate::{endpoint, LocalCluster};
use anyhow::bail;
use shoal_proto::admin::admin_client::AdminClient;
use shoal_proto::admin::{ReplicaStatusRequest, ReplicaStatusResponse, ShardDigestRequest, ShardDigestResponse};
use shoal_proto::kv::kv_client::KvClient;
use shoal_proto::sm::{ShardMap, ShardState};
use std::collections::HashMap;
use std::time::Duration;
use tonic::transport::Channel;

/// A connection to the kv-server client port at `addr`, bypassing the
/// client's routing and retries. It connects on first use (a node that is
/// down fails that request, not this call), gives up connecting after
/// 300 ms, and takes messages up to 64 MiB (the tests of the size limits
/// send bigger ones than the server accepts). Requests have no deadline of
/// their own: tests hold some on purpose, and bound them where they wait.
pub fn kv_at(addr: &str) -> anyhow::Result<KvClient<Channel>> {
    Ok(
        KvClient::new(endpoint(addr, Duration::from_millis(300))?.connect_lazy())
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20),
    )
}

/// The admin service at client address `addr`, connected (within 500 ms),
/// with a 2 s deadline per request.
pub async fn admin_at(addr: &str) -> anyhow::Result<AdminClient<Channel>> {
    let channel = endpoint(addr, Duration::from_millis(500))?
        .timeout(Duration::from_secs(2))
        .connect()
        .await?;
    Ok(AdminClient::new(channel))
}

/// Every replica the node at `addr` hosts, with its role.
pub async fn replica_status_at(addr: &str) -> anyhow::Result<ReplicaStatusResponse> {
    Ok(admin_at(addr)
        .await?
        .replica_status(ReplicaStatusRequest {})
        .await?
        .into_inner())
}

/// The digest of `shard`'s data on the node at `addr`.
pub async fn shard_digest_at(addr: &str, shard: u64) -> anyhow::Result<ShardDigestResponse> {
    Ok(admin_at(addr)
        .await?
        .shard_digest(ShardDigestRequest { shard_id: shard })
        .await?
        .into_inner())
}

/// Shard → node of the replica that says it is leader, over `nodes`
/// (id, client address); a node that does not answer counts for nothing.
pub async fn leaders_among(nodes: &[(u64, String)]) -> HashMap<u64, u64> {
    let mut leaders = HashMap::new();
    for (id, addr) in nodes {
        if let Ok(status) = replica_status_at(addr).await {
            for replica in status.replicas.iter().filter(|r| r.role == "leader") {
                leaders.insert(replica.shard_id, *id);
            }
        }
    }
    leaders
}

/// Waits until `shards` shards have a leader among `nodes`.
pub async fn wait_for_leaders_among(
    nodes: &[(u64, String)],
    shards: u64,
    timeout: Duration,
) -> anyhow::Result<HashMap<u64, u64>> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let leaders = leaders_among(nodes).await;
        if leaders.len() as u64 >= shards {
            return Ok(leaders);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "only {} of {shards} shards have a leader after {timeout:?}",
                leaders.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits up to `patience` until, for each `(shard, hosts)`, every host
/// (a node id, found in `addrs`) reports the same applied index, key count
/// and data digest; else says which shards still differ.
pub async fn wait_converged_at(
    addrs: &HashMap<u64, String>,
    groups: &[(u64, Vec<u64>)],
    patience: Duration,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        let mut diverged = Vec::new();
        for (shard, hosts) in groups {
            let mut digests = Vec::new();
            for node in hosts {
                let digest = match addrs.get(node) {
                    Some(addr) => shard_digest_at(addr, *shard).await,
                    None => Err(anyhow::anyhow!("no node {node}")),
                };
                match digest {
                    Ok(d) => digests.push((d.applied_index, d.key_count, d.digest)),
                    Err(e) => diverged.push(format!("shard {shard} node {node}: {e}")),
                }
            }
            if digests.windows(2).any(|w| w[0] != w[1]) {
                diverged.push(format!("shard {shard}: {digests:?}"));
            }
        }
        if diverged.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("replicas did not converge: {diverged:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

impl LocalCluster {
    /// [`kv_at`] node `id`'s client port.
    pub fn kv(&self, id: u64) -> anyhow::Result<KvClient<Channel>> {
        let addr = self.client_addr(id).ok_or_else(|| anyhow::anyhow!("no node {id}"))?;
        kv_at(addr)
    }

    /// [`wait_converged_at`] over this cluster's nodes.
    pub async fn wait_converged(&self, groups: &[(u64, Vec<u64>)], patience: Duration) -> anyhow::Result<()> {
        let addrs = self.nodes.iter().map(|n| (n.id, n.client_addr.clone())).collect();
        wait_converged_at(&addrs, groups, patience).await
    }
}

/// The `shoal-error` code a refusal carries ("" when it has none).
pub fn error_code(status: &tonic::Status) -> String {
    shoal_proto::status_meta::error_code(status)
        .unwrap_or_default()
        .to_string()
}

/// Every node a shard's record names: voters, learners, both ends of a change.
pub fn shard_hosts(shard: &ShardState) -> Vec<u64> {
    let mut hosts: Vec<u64> = shard.voters.iter().chain(&shard.learners).copied().collect();
    hosts.extend([shard.adding, shard.removing].into_iter().filter(|n| *n != 0));
    hosts
}

/// Every shard has `replicas` voters, no change in flight, and nothing on
/// node `gone`: a repair after losing it is complete.
pub fn fully_replicated_without(map: &ShardMap, gone: u64, replicas: usize) -> bool {
    map.shards
        .iter()
        .all(|s| s.voters.len() == replicas && s.change_phase.is_empty() && !shard_hosts(s).contains(&gone))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repair_is_complete_once_no_shard_names_the_lost_node() {
        let shard = |voters: Vec<u64>, learners: Vec<u64>, phase: &str| ShardState {
            voters,
            learners,
            change_phase: phase.into(),
            ..ShardState::default()
        };
        let map = |shards| ShardMap {
            shards,
            ..ShardMap::default()
        };
        assert!(fully_replicated_without(
            &map(vec![shard(vec![1, 2, 3], vec![], "")]),
            4,
            3
        ));
        assert!(!fully_replicated_without(
            &map(vec![shard(vec![1, 2, 4], vec![], "")]),
            4,
            3
        ));
        assert!(!fully_replicated_without(
            &map(vec![shard(vec![1, 2, 3], vec![4], "")]),
            4,
            3
        ));
        assert!(!fully_replicated_without(
            &map(vec![shard(vec![1, 2], vec![], "")]),
            4,
            3
        ));
        assert!(!fully_replicated_without(
            &map(vec![shard(vec![1, 2, 3], vec![], "adding")]),
            4,
            3
        ));
    }
}
