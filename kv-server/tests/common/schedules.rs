//! Fault schedules written once and run on both harnesses: child processes
//! cut with failpoints and killed with kill -9 ([`ProcessFaults`]), and the
//! in-process cluster cut with its transport filter and restarted by a
//! clean stop ([`InProcessCluster`]). Each schedule states the promise it
//! attacks and asserts it the same way on both.

use super::in_process::InProcessCluster;
use kv_client::ShoalClient;
use kv_server::transport_filter::SHARD_MANAGER;
use local_cluster::{LocalCluster, ShardManagerAt};
use shoal_proto::kv::kv_client::KvClient;
use shoal_proto::kv::{GetRequest, KeyRef, PutRequest, RequestHeader};
use shoal_types::NodeId;
use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;
use tonic::transport::Channel;

/// A header naming `shard` of keyspace `default`, with no epoch.
pub fn header(shard: u64) -> Option<RequestHeader> {
    Some(RequestHeader {
        keyspace: "default".into(),
        shard_id: shard,
        epoch: 0,
        ..Default::default()
    })
}

pub fn key_ref(ushard: u32, key: &str) -> Option<KeyRef> {
    Some(KeyRef {
        ushard,
        key: key.as_bytes().to_vec(),
    })
}

/// A strong read straight to one node, bounded by `within`.
pub async fn strong_get(
    node: &mut KvClient<Channel>,
    shard: u64,
    ushard: u32,
    key: &str,
    within: Duration,
) -> Option<Vec<u8>> {
    let request = GetRequest {
        header: header(shard),
        key: key_ref(ushard, key),
        consistency: None,
    };
    match tokio::time::timeout(within, node.get(request)).await {
        Ok(Ok(answer)) => Some(answer.into_inner().value.map(|v| v.value).unwrap_or_default()),
        _ => None,
    }
}

/// What a schedule does to a cluster.
#[allow(async_fn_in_trait)]
pub trait FaultCluster {
    /// Node ids, from 1.
    fn ids(&self) -> Vec<u64>;
    /// A raw connection to node `id`'s client port.
    fn kv(&self, id: u64) -> KvClient<Channel>;
    /// The shard manager (panics without one).
    fn manager(&self) -> ShardManagerAt;
    /// A client over every node.
    async fn client(&self) -> ShoalClient;
    /// A client that learns the layout from the shard manager only, so it
    /// never adopts a cut-off node's stale view.
    async fn client_via_manager(&self) -> ShoalClient;
    async fn leaders(&self) -> HashMap<u64, u64>;
    /// Waits until every host of each `(shard, hosts)` has the same data.
    async fn converged(&self, groups: &[(u64, Vec<u64>)], patience: Duration) -> anyhow::Result<()>;
    /// Cuts Raft traffic between `a` and `b`, both ways.
    async fn cut(&self, a: u64, b: u64);
    /// Cuts `node`'s Raft traffic with every peer, both ways.
    async fn isolate(&self, node: u64);
    /// Cuts `node` from the shard manager (its heartbeats fail).
    async fn cut_from_manager(&self, node: u64);
    /// Removes every cut.
    async fn heal(&self);
    /// Node `id` goes down and comes back at once.
    async fn restart_at_once(&mut self, id: u64);
}

/// A [`LocalCluster`] of child processes, cut with the `raft-send`,
/// `raft-receive` and `sm-heartbeat` failpoints (docs/failpoints.md) and
/// restarted with kill -9.
pub struct ProcessFaults {
    pub cluster: LocalCluster,
    /// Peers each node's `raft-send` blocks, so cuts add up.
    blocked: Mutex<HashMap<u64, BTreeSet<u64>>>,
}

impl ProcessFaults {
    pub fn new(cluster: LocalCluster) -> ProcessFaults {
        ProcessFaults {
            cluster,
            blocked: Mutex::default(),
        }
    }

    async fn failpoint(&self, node: u64, name: &str, actions: &str) {
        self.cluster
            .set_failpoint(node, name, actions)
            .await
            .expect("kv-server must be built with --features failpoints (make test does)");
    }

    async fn block(&self, from: u64, to: u64) {
        let list = {
            let mut blocked = self.blocked.lock().unwrap();
            let peers = blocked.entry(from).or_default();
            peers.insert(to);
            peers.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
        };
        self.failpoint(from, "raft-send", &format!("return({list})")).await;
    }
}

impl FaultCluster for ProcessFaults {
    fn ids(&self) -> Vec<u64> {
        (1..=self.cluster.endpoints().len() as u64).collect()
    }

    fn kv(&self, id: u64) -> KvClient<Channel> {
        self.cluster.kv(id).unwrap()
    }

    fn manager(&self) -> ShardManagerAt {
        self.cluster.shard_manager().unwrap()
    }

    async fn client(&self) -> ShoalClient {
        super::must_connect(&self.cluster).await
    }

    async fn client_via_manager(&self) -> ShoalClient {
        super::must_connect_to(vec![self.manager().addr().to_string()]).await
    }

    async fn leaders(&self) -> HashMap<u64, u64> {
        self.cluster.leaders().await
    }

    async fn converged(&self, groups: &[(u64, Vec<u64>)], patience: Duration) -> anyhow::Result<()> {
        self.cluster.wait_converged(groups, patience).await
    }

    async fn cut(&self, a: u64, b: u64) {
        self.block(a, b).await;
        self.block(b, a).await;
    }

    async fn isolate(&self, node: u64) {
        self.failpoint(node, "raft-send", "return").await;
        self.failpoint(node, "raft-receive", "return").await;
    }

    async fn cut_from_manager(&self, node: u64) {
        self.failpoint(node, "sm-heartbeat", "return").await;
    }

    async fn heal(&self) {
        self.blocked.lock().unwrap().clear();
        for id in self.ids() {
            for name in ["raft-send", "raft-receive", "sm-heartbeat"] {
                // A node that is down has nothing to heal.
                let _ = self.cluster.set_failpoint(id, name, "off").await;
            }
        }
    }

    async fn restart_at_once(&mut self, id: u64) {
        self.cluster.kill(id).unwrap();
        self.cluster.start_node(id).unwrap();
    }
}

impl FaultCluster for InProcessCluster {
    fn ids(&self) -> Vec<u64> {
        InProcessCluster::ids(self)
    }

    fn kv(&self, id: u64) -> KvClient<Channel> {
        InProcessCluster::kv(self, id)
    }

    fn manager(&self) -> ShardManagerAt {
        self.shard_manager().clone()
    }

    async fn client(&self) -> ShoalClient {
        InProcessCluster::client(self).await
    }

    async fn client_via_manager(&self) -> ShoalClient {
        self.client_via_shard_manager().await
    }

    async fn leaders(&self) -> HashMap<u64, u64> {
        InProcessCluster::leaders(self).await
    }

    async fn converged(&self, groups: &[(u64, Vec<u64>)], patience: Duration) -> anyhow::Result<()> {
        self.wait_converged(groups, patience).await
    }

    async fn cut(&self, a: u64, b: u64) {
        self.filter.cut(NodeId(a), NodeId(b));
    }

    async fn isolate(&self, node: u64) {
        self.filter
            .isolate(NodeId(node), InProcessCluster::ids(self).into_iter().map(NodeId));
    }

    async fn cut_from_manager(&self, node: u64) {
        self.filter.cut(NodeId(node), SHARD_MANAGER);
    }

    async fn heal(&self) {
        self.filter.heal();
    }

    /// A clean stop and start: the in-process harness cannot kill -9, and
    /// what this schedule attacks (promises held in memory) is lost alike.
    async fn restart_at_once(&mut self, id: u64) {
        self.restart(id).await;
    }
}

/// Promise: a node restarted inside a leader's lease cannot help elect a
/// second leader before that lease is over (docs/consistency.md,
/// "Restarts"). Schedule (issue 10, hole 1): cut leader A from follower C
/// until C's lease on A has run out; then isolate A from every peer while
/// clients still reach it, and restart follower B at once. B remembers
/// nothing of its promise to A; if it campaigns, C votes for it and B takes
/// writes while A still serves lease reads of the old value. The cluster
/// has three nodes whose `election_timeout_max_ms` is `lease_ms`.
pub async fn quick_restart_inside_the_old_leaders_lease(cluster: &mut impl FaultCluster, lease_ms: u64) {
    let client = cluster.client().await;

    // A = the node leading the most shards; B, C = the other two.
    let mut led: HashMap<u64, Vec<u64>> = HashMap::new();
    for (shard, node) in cluster.leaders().await {
        led.entry(node).or_default().push(shard);
    }
    let (a, shards_of_a) = led.into_iter().max_by_key(|(_, s)| s.len()).unwrap();
    let (b, c) = {
        let others: Vec<u64> = cluster.ids().into_iter().filter(|n| *n != a).collect();
        (others[0], others[1])
    };
    // One key per shard A leads, written while all is well.
    let mut keys: HashMap<u64, (String, u32)> = HashMap::new();
    for i in 0.. {
        if keys.len() == shards_of_a.len() {
            break;
        }
        let key = format!("lease-{i}");
        let placement = client.routes().place("default", key.as_bytes(), None).unwrap();
        let shard = placement.shard.0;
        if shards_of_a.contains(&shard) && !keys.contains_key(&shard) {
            client.put(key.as_str(), "old").await.expect("write before the faults");
            keys.insert(shard, (key, placement.ushard));
        }
    }
    eprintln!("leader {a} of shards {shards_of_a:?}; B = {b}, C = {c}");

    // Cut A from C (both directions) until C's lease on A is over. With
    // Pre-Vote, C's attempts to campaign change no term.
    cluster.cut(a, c).await;
    tokio::time::sleep(Duration::from_millis(lease_ms + 300)).await;
    // Isolate A from every peer; restart B at once.
    cluster.isolate(a).await;
    let cut_at = Instant::now();
    cluster.restart_at_once(b).await;

    // Write "new" through whichever of B and C leads; once acknowledged,
    // A must not answer a strong read with "old".
    let mut to_a = cluster.kv(a);
    let mut others = [(b, cluster.kv(b)), (c, cluster.kv(c))];
    let mut pending: Vec<u64> = keys.keys().copied().collect();
    let mut stale = Vec::new();
    let deadline = cut_at + Duration::from_secs(20);
    while !pending.is_empty() && Instant::now() < deadline {
        for shard in pending.clone() {
            let (key, ushard) = keys[&shard].clone();
            for (node, peer) in others.iter_mut() {
                let put = PutRequest {
                    header: header(shard),
                    key: key_ref(ushard, &key),
                    value: b"new".to_vec(),
                    ..PutRequest::default()
                };
                let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(300), peer.put(put)).await else {
                    continue;
                };
                let acked = cut_at.elapsed();
                let read = strong_get(&mut to_a, shard, ushard, &key, Duration::from_millis(500)).await;
                eprintln!(
                    "shard {shard}: node {node} acknowledged \"new\" {acked:?} after the cut; A answered {:?}",
                    read.as_ref().map(|v| String::from_utf8_lossy(v).to_string())
                );
                if read.as_deref() == Some(b"old".as_slice()) {
                    stale.push((shard, *node, acked));
                }
                pending.retain(|s| *s != shard);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.heal().await;
    assert!(
        stale.is_empty(),
        "A served stale strong reads after a new leader acknowledged writes (shard, new leader, time after the cut): {stale:?}"
    );
    assert!(
        pending.is_empty(),
        "B and C never took writes for shards {pending:?} within 20 s"
    );
}

/// Promise: a primary cut off from its peers and from the shard manager
/// can neither acknowledge a write nor serve a strong read, while the new
/// primary serves both; after the partition heals, what the cut-off
/// primary was asked to write is gone and the replicas converge. The
/// cluster runs a shard manager with a long repair grace period (this is
/// about fencing, not repair).
pub async fn partitioned_primary_is_fenced(cluster: &impl FaultCluster) {
    let manager = cluster.manager();
    let before_map = super::align(&manager, || cluster.leaders()).await;
    let client = cluster.client_via_manager().await;
    let ack = client.put("fenced", "before").await.expect("first write");
    let before = before_map
        .shards
        .iter()
        .find(|s| s.shard_id == ack.shard)
        .unwrap()
        .clone();
    let old_primary = before.primary;
    let ushard = client.routes().place("default", b"fenced", None).unwrap().ushard;

    cluster.isolate(old_primary).await;
    cluster.cut_from_manager(old_primary).await;

    // A write sent straight to the cut-off primary is never acknowledged.
    let mut isolated = cluster.kv(old_primary);
    let stale_write = {
        let mut isolated = isolated.clone();
        let request = PutRequest {
            header: header(ack.shard),
            key: key_ref(ushard, "fenced"),
            value: b"stale".to_vec(),
            ..PutRequest::default()
        };
        tokio::spawn(async move { tokio::time::timeout(Duration::from_secs(8), isolated.put(request)).await })
    };

    // The shard manager names a new primary with a higher epoch...
    let after_map = super::wait_for_map(&manager, Duration::from_secs(30), "failover", |m| {
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
    let fresh = cluster.client_via_manager().await;
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
            key: key_ref(ushard, "fenced"),
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
    cluster.heal().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let read = fresh.get("fenced").await.expect("read after heal").expect("value");
    assert_eq!(read.value, b"after", "the cut-off primary's write must not surface");
    cluster
        .converged(&[(ack.shard, after.voters.clone())], Duration::from_secs(30))
        .await
        .expect("replicas converge after the heal");
}
