//! Rebalancing as pure functions: given the usable nodes' loads and the
//! shards that may be touched, the next replica or primary to move so that
//! replica count, primary count and disk bytes per node end up within a
//! tolerance (docs/moves.md, "Rebalancing").
//!
//! A replica move is a [`ReplicaChange`] like a repair's (learner, catch
//! up, promote, remove), so it inherits repair's safety: one membership
//! change per shard at a time, the old replica hosting until Raft commits
//! the new membership. A primary move is a new epoch, as an operator's.
//!
//! **Every step strictly narrows the gap between the two nodes it touches
//! and never widens another measure past its tolerance**, so balancing
//! converges and cannot flap: replica counts first (the cheapest shard
//! moves), then disk bytes (the shard closest to half the gap, only where
//! counts stay in bounds), then primaries.

use crate::model::{ChangePhase, NodeId, ReplicaChange, ShardId, ShardRecord};
use shoal_config::manager::Rebalance;

/// A usable node (alive and active) as balancing sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeLoad {
    pub id: NodeId,
    pub region: String,
    pub replicas: usize,
    pub primaries: usize,
    /// Sum of the bytes of the shards it hosts.
    pub bytes: u64,
}

/// A shard that balancing may touch: every host usable, no membership
/// change or μshard move under way, Raft exactly the record and led by its
/// primary.
#[derive(Clone, Debug)]
pub struct SettledShard<'a> {
    pub record: &'a ShardRecord,
    pub bytes: u64,
    /// Voters whose log is close enough to the leader's to take over.
    pub caught_up: Vec<NodeId>,
    /// The keyspace's voter regions (empty = any) and preferred region.
    pub regions: &'a [String],
    pub preferred_region: &'a str,
}

/// The next balancing step, with the reason it is logged with.
#[derive(Clone, Debug, PartialEq)]
pub enum BalanceStep {
    Replica {
        shard: ShardId,
        change: ReplicaChange,
        bytes: u64,
        why: String,
    },
    Primary {
        shard: ShardId,
        to: NodeId,
        why: String,
    },
}

/// The nodes that will host `shard` once its membership change (if any)
/// is done: the one being added counts, the one being removed does not.
/// **Loads are counted by these**, so a replica on its way is not moved
/// twice (once off a donor that still looks full, once onto a receiver
/// that does not look full yet).
pub fn settled_hosts(shard: &ShardRecord) -> Vec<NodeId> {
    let mut hosts: Vec<NodeId> = shard.voters.iter().chain(&shard.learners).copied().collect();
    if let Some(change) = &shard.change {
        hosts.retain(|n| *n != change.removing);
        if !hosts.contains(&change.adding) {
            hosts.push(change.adding);
        }
    }
    hosts
}

fn spread(nodes: &[NodeLoad], measure: impl Fn(&NodeLoad) -> u64) -> u64 {
    let max = nodes.iter().map(&measure).max().unwrap_or(0);
    let min = nodes.iter().map(&measure).min().unwrap_or(0);
    max - min
}

/// How far apart disk bytes may be: the larger of the absolute floor and
/// the fraction of the mean.
fn bytes_tolerance(nodes: &[NodeLoad], policy: &Rebalance) -> u64 {
    let total: u64 = nodes.iter().map(|n| n.bytes).sum();
    let mean = total / nodes.len().max(1) as u64;
    let fraction = (mean as f64 * f64::from(policy.disk_tolerance_pct) / 100.0) as u64;
    fraction.max(policy.disk_min_bytes)
}

/// Whether all three measures are within their tolerances.
pub fn balanced(nodes: &[NodeLoad], policy: &Rebalance) -> bool {
    spread(nodes, |n| n.replicas as u64) <= u64::from(policy.replica_tolerance)
        && spread(nodes, |n| n.primaries as u64) <= u64::from(policy.primary_tolerance)
        && spread(nodes, |n| n.bytes) <= bytes_tolerance(nodes, policy)
}

/// Whether `to` may take `from`'s replica of `shard` without breaking the
/// keyspace's region rules: a learner stays in its region; a voter goes to
/// an allowed region and never leaves more voters in one region than the
/// donor's region had.
fn region_allows(shard: &SettledShard, from: &NodeLoad, to: &NodeLoad, nodes: &[NodeLoad]) -> bool {
    let voter = shard.record.voters.contains(&from.id);
    if !voter {
        return to.region == from.region;
    }
    if !shard.regions.is_empty() && !shard.regions.contains(&to.region) {
        return false;
    }
    let region_of = |id: &NodeId| nodes.iter().find(|n| n.id == *id).map(|n| n.region.as_str());
    let in_region = |region: &str| {
        shard
            .record
            .voters
            .iter()
            .filter(|v| region_of(v) == Some(region))
            .count()
    };
    to.region == from.region || in_region(&to.region) < in_region(&from.region)
}

/// Whether `shard` may give `from`'s replica to `to` at all.
fn movable(shard: &SettledShard, from: &NodeLoad, to: &NodeLoad, nodes: &[NodeLoad]) -> bool {
    let r = shard.record;
    r.is_hosted_on(from.id)
        && !r.is_hosted_on(to.id)
        // The primary leaves last: its leadership moves first (primaries).
        && r.primary != Some(from.id)
        && region_allows(shard, from, to, nodes)
}

fn replica_step(shard: &SettledShard, from: NodeId, to: NodeId, why: String) -> BalanceStep {
    BalanceStep::Replica {
        shard: shard.record.id,
        change: ReplicaChange {
            adding: to,
            removing: from,
            voter: shard.record.voters.contains(&from),
            phase: ChangePhase::CatchingUp,
        },
        bytes: shard.bytes,
        why,
    }
}

/// Replica counts and bytes after moving a shard of `bytes` from `from` to `to`.
fn after_move(nodes: &[NodeLoad], from: NodeId, to: NodeId, bytes: u64) -> Vec<NodeLoad> {
    nodes
        .iter()
        .map(|n| {
            let mut n = n.clone();
            if n.id == from {
                n.replicas -= 1;
                n.bytes = n.bytes.saturating_sub(bytes);
            } else if n.id == to {
                n.replicas += 1;
                n.bytes += bytes;
            }
            n
        })
        .collect()
}

/// Pairs of (donor, receiver), most loaded donor and least loaded receiver
/// first, by `measure`.
fn pairs(nodes: &[NodeLoad], measure: impl Fn(&NodeLoad) -> u64) -> Vec<(&NodeLoad, &NodeLoad)> {
    let mut by_load: Vec<&NodeLoad> = nodes.iter().collect();
    by_load.sort_by_key(|n| (measure(n), n.id));
    let mut out = Vec::new();
    for donor in by_load.iter().rev() {
        for receiver in &by_load {
            if measure(donor) > measure(receiver) {
                out.push((*donor, *receiver));
            }
        }
    }
    out
}

/// The next replica to move, if replica counts or disk bytes are out of
/// tolerance and some settled shard can narrow the gap.
pub fn next_replica_move(nodes: &[NodeLoad], shards: &[SettledShard], policy: &Rebalance) -> Option<BalanceStep> {
    if nodes.len() < 2 {
        return None;
    }
    let count_spread = spread(nodes, |n| n.replicas as u64);
    if count_spread > u64::from(policy.replica_tolerance) {
        for (donor, receiver) in pairs(nodes, |n| n.replicas as u64) {
            // Moving one replica narrows the pair's gap only if it is 2+.
            if donor.replicas < receiver.replicas + 2 {
                continue;
            }
            let cheapest = shards
                .iter()
                .filter(|s| movable(s, donor, receiver, nodes))
                .min_by_key(|s| (s.bytes, s.record.id));
            if let Some(shard) = cheapest {
                let why = format!(
                    "replicas: node {} holds {}, node {} holds {} (tolerance {})",
                    donor.id, donor.replicas, receiver.id, receiver.replicas, policy.replica_tolerance
                );
                return Some(replica_step(shard, donor.id, receiver.id, why));
            }
        }
        // Nothing can narrow the counts (regions, primaries): disk bytes
        // may still move, as long as counts get no wider.
    }
    let tolerance = bytes_tolerance(nodes, policy);
    if spread(nodes, |n| n.bytes) <= tolerance {
        return None;
    }
    let count_bound = count_spread.max(u64::from(policy.replica_tolerance));
    for (donor, receiver) in pairs(nodes, |n| n.bytes) {
        let gap = donor.bytes - receiver.bytes;
        if gap <= tolerance {
            continue;
        }
        // Only a move that keeps replica counts within bounds: then the
        // count rule never answers it, and each disk move strictly lowers
        // the sum of squared bytes per node, so disk moves cannot cycle.
        // (With counts all equal no single move qualifies: swaps are not
        // built.)
        let after = after_move(nodes, donor.id, receiver.id, 0);
        if spread(&after, |n| n.replicas as u64) > count_bound {
            continue;
        }
        // A shard under the gap narrows it; the one nearest half of it
        // narrows it most.
        let best = shards
            .iter()
            .filter(|s| s.bytes > 0 && s.bytes < gap && movable(s, donor, receiver, nodes))
            .min_by_key(|s| ((s.bytes as i128 - (gap / 2) as i128).unsigned_abs(), s.record.id));
        if let Some(shard) = best {
            let why = format!(
                "disk: node {} holds {} MiB, node {} holds {} MiB (tolerance {} MiB)",
                donor.id,
                donor.bytes >> 20,
                receiver.id,
                receiver.bytes >> 20,
                tolerance >> 20
            );
            return Some(replica_step(shard, donor.id, receiver.id, why));
        }
    }
    None
}

/// Whether a primary may go from `donor` to `receiver`: within its region
/// (where its writers are is for the preferred region and locality to say,
/// not for counts), or into the keyspace's preferred region from outside.
fn primary_region_allows(shard: &SettledShard, donor: &NodeLoad, receiver: &NodeLoad) -> bool {
    receiver.region == donor.region
        || (!shard.preferred_region.is_empty()
            && receiver.region == shard.preferred_region
            && donor.region != shard.preferred_region)
}

/// The next primary to move, if primary counts are out of tolerance: a
/// settled shard led by the most loaded node hands its primary to a
/// caught-up voter with at least two fewer, in the same region (or into
/// the preferred one).
pub fn next_primary_move(nodes: &[NodeLoad], shards: &[SettledShard], policy: &Rebalance) -> Option<BalanceStep> {
    if spread(nodes, |n| n.primaries as u64) <= u64::from(policy.primary_tolerance) {
        return None;
    }
    for (donor, receiver) in pairs(nodes, |n| n.primaries as u64) {
        if donor.primaries < receiver.primaries + 2 {
            continue;
        }
        let shard = shards
            .iter()
            .filter(|s| s.record.primary == Some(donor.id))
            .filter(|s| s.record.voters.contains(&receiver.id) && s.caught_up.contains(&receiver.id))
            .filter(|s| primary_region_allows(s, donor, receiver))
            .min_by_key(|s| s.record.id);
        if let Some(shard) = shard {
            let why = format!(
                "primaries: node {} leads {}, node {} leads {} (tolerance {})",
                donor.id, donor.primaries, receiver.id, receiver.primaries, policy.primary_tolerance
            );
            return Some(BalanceStep::Primary {
                shard: shard.record.id,
                to: receiver.id,
                why,
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Epoch;

    fn policy() -> Rebalance {
        Rebalance {
            disk_min_bytes: 10 << 20,
            ..Rebalance::default()
        }
    }

    fn shard(id: u64, voters: &[u64], primary: u64) -> ShardRecord {
        ShardRecord {
            id: ShardId(id),
            keyspace: "k".into(),
            voters: voters.iter().copied().map(NodeId).collect(),
            learners: vec![],
            primary: Some(NodeId(primary)),
            epoch: Epoch(1),
            conf_ver: 1,
            change: None,
        }
    }

    fn settled(record: &ShardRecord, bytes: u64) -> SettledShard<'_> {
        SettledShard {
            record,
            bytes,
            caught_up: record.voters.clone(),
            regions: &[],
            preferred_region: "",
        }
    }

    /// Loads as the shard manager computes them from the records.
    fn loads(regions: &[(u64, &str)], shards: &[SettledShard]) -> Vec<NodeLoad> {
        regions
            .iter()
            .map(|(id, region)| {
                let id = NodeId(*id);
                let hosted = shards.iter().filter(|s| s.record.is_hosted_on(id));
                NodeLoad {
                    id,
                    region: region.to_string(),
                    replicas: hosted.clone().count(),
                    primaries: shards.iter().filter(|s| s.record.primary == Some(id)).count(),
                    bytes: hosted.map(|s| s.bytes).sum(),
                }
            })
            .collect()
    }

    /// Applies a step to the records, finishing it at once.
    fn apply(records: &mut [ShardRecord], step: &BalanceStep) {
        match step {
            BalanceStep::Replica { shard, change, .. } => {
                let r = records.iter_mut().find(|r| r.id == *shard).unwrap();
                let list = if change.voter { &mut r.voters } else { &mut r.learners };
                let slot = list.iter_mut().find(|n| **n == change.removing).unwrap();
                *slot = change.adding;
            }
            BalanceStep::Primary { shard, to, .. } => {
                records.iter_mut().find(|r| r.id == *shard).unwrap().primary = Some(*to);
            }
        }
    }

    /// Runs balancing to a fixed point; returns the steps taken and the
    /// final loads.
    fn run(
        records: &mut [ShardRecord],
        bytes: &[u64],
        nodes: &[(u64, &str)],
        policy: &Rebalance,
    ) -> (usize, Vec<NodeLoad>) {
        let mut steps = 0;
        loop {
            let snapshot = records.to_vec();
            let shards: Vec<SettledShard> = snapshot.iter().zip(bytes).map(|(r, b)| settled(r, *b)).collect();
            let view = loads(nodes, &shards);
            let step = next_replica_move(&view, &shards, policy).or_else(|| next_primary_move(&view, &shards, policy));
            match step {
                Some(step) => {
                    apply(records, &step);
                    steps += 1;
                    assert!(steps < 100, "balancing does not converge");
                }
                None => return (steps, view),
            }
        }
    }

    #[test]
    fn a_joining_node_receives_replicas_and_primaries_until_within_tolerance() {
        let mut records: Vec<ShardRecord> = (1..=6).map(|i| shard(i, &[1, 2, 3], 1 + (i % 3))).collect();
        let bytes = vec![1 << 20; 6];
        let nodes = [(1, "a"), (2, "a"), (3, "a"), (4, "a")];
        let (steps, view) = run(&mut records, &bytes, &nodes, &policy());
        assert!(balanced(&view, &policy()), "{view:?}");
        let joined = view.iter().find(|n| n.id == NodeId(4)).unwrap();
        assert_eq!(joined.replicas, 4, "18 replicas over 4 nodes: 5, 5, 4, 4");
        assert!(joined.primaries >= 1, "{view:?}");
        // 4 replica moves and at least one primary move, nothing wasted.
        assert!((5..=7).contains(&steps), "{steps} steps");
        for r in &records {
            let distinct: std::collections::BTreeSet<_> = r.voters.iter().collect();
            assert_eq!(distinct.len(), 3, "never two replicas on one node: {r:?}");
        }
    }

    #[test]
    fn a_replica_on_its_way_counts_where_it_is_going() {
        let mut s = shard(1, &[1, 2, 3], 1);
        s.change = Some(ReplicaChange {
            adding: NodeId(4),
            removing: NodeId(3),
            voter: true,
            phase: ChangePhase::CatchingUp,
        });
        assert_eq!(settled_hosts(&s), vec![NodeId(1), NodeId(2), NodeId(4)]);
        // Promoting: the record already names 4 in 3's place.
        s.voters = vec![NodeId(1), NodeId(2), NodeId(4)];
        s.change.as_mut().unwrap().phase = ChangePhase::Promoting;
        assert_eq!(settled_hosts(&s), vec![NodeId(1), NodeId(2), NodeId(4)]);
    }

    #[test]
    fn a_balanced_cluster_is_left_alone() {
        let records: Vec<ShardRecord> = (1..=3).map(|i| shard(i, &[1, 2, 3], i)).collect();
        let shards: Vec<SettledShard> = records.iter().map(|r| settled(r, 5 << 20)).collect();
        let view = loads(&[(1, "a"), (2, "a"), (3, "a")], &shards);
        assert!(balanced(&view, &policy()));
        assert_eq!(next_replica_move(&view, &shards, &policy()), None);
        assert_eq!(next_primary_move(&view, &shards, &policy()), None);
    }

    #[test]
    fn disk_bytes_balance_by_moving_the_shard_nearest_half_the_gap() {
        // Counts 3, 3, 2, 2 (within one); nodes 1 and 2 hold the big shards.
        let mut records = vec![
            shard(1, &[1, 2], 1),
            shard(2, &[1, 2], 2),
            shard(3, &[1, 3], 3),
            shard(4, &[2, 4], 4),
            shard(5, &[3, 4], 3),
        ];
        let bytes = [300 << 20, 200 << 20, 10 << 20, 10 << 20, 20 << 20];
        let nodes = [(1, "a"), (2, "a"), (3, "a"), (4, "a")];
        let shards: Vec<SettledShard> = records.iter().zip(&bytes).map(|(r, b)| settled(r, *b)).collect();
        let view = loads(&nodes, &shards);
        let Some(BalanceStep::Replica { shard, change, why, .. }) = next_replica_move(&view, &shards, &policy()) else {
            panic!("expected a replica move");
        };
        assert!(why.starts_with("disk:"), "{why}");
        // Node 2 (510 MiB, the highest id of the heaviest) gives shard 1
        // (300 MiB, led by node 1), nearest half of the 480 MiB gap, to
        // node 3 (30 MiB): counts become 3, 2, 3, 2.
        assert_eq!(
            (shard, change.removing, change.adding),
            (ShardId(1), NodeId(2), NodeId(3))
        );
        let before = spread(&view, |n| n.bytes);
        let (steps, view) = run(&mut records, &bytes, &nodes, &policy());
        assert!(spread(&view, |n| n.replicas as u64) <= 1, "{view:?}");
        assert!(spread(&view, |n| n.bytes) < before / 2, "{steps} steps: {view:?}");
    }

    #[test]
    fn with_counts_all_equal_disk_waits_rather_than_swap() {
        // Every node holds two replicas: any single move unbalances counts.
        let records = [
            shard(1, &[1, 2], 1),
            shard(2, &[3, 4], 3),
            shard(3, &[1, 2], 2),
            shard(4, &[3, 4], 4),
        ];
        let bytes = [400 << 20, 10 << 20, 300 << 20, 20 << 20];
        let shards: Vec<SettledShard> = records.iter().zip(&bytes).map(|(r, b)| settled(r, *b)).collect();
        let view = loads(&[(1, "a"), (2, "a"), (3, "a"), (4, "a")], &shards);
        assert_eq!(next_replica_move(&view, &shards, &policy()), None);
    }

    #[test]
    fn the_primary_replica_and_foreign_regions_are_never_moved() {
        // Node 1 holds every replica and leads them all; node 2 is in
        // another region than the keyspace allows.
        let records = [
            shard(1, &[1, 3, 4], 1),
            shard(2, &[1, 3, 4], 1),
            shard(3, &[1, 3, 4], 1),
        ];
        let allowed = vec!["a".to_string()];
        let shards: Vec<SettledShard> = records
            .iter()
            .map(|r| SettledShard {
                regions: &allowed,
                ..settled(r, 1 << 20)
            })
            .collect();
        let view = loads(&[(1, "a"), (2, "b"), (3, "a"), (4, "a")], &shards);
        assert_eq!(next_replica_move(&view, &shards, &policy()), None, "node 2 is region b");
        // Primaries spread among the region's voters instead.
        let Some(BalanceStep::Primary { to, .. }) = next_primary_move(&view, &shards, &policy()) else {
            panic!("expected a primary move");
        };
        assert!(matches!(to, NodeId(3) | NodeId(4)));
    }

    #[test]
    fn a_voter_does_not_crowd_one_region_and_a_learner_stays_in_its_own() {
        // Voters in a, a, b; node 5 (b) is empty. Moving the a-voter there
        // gives a, b, b: allowed. Moving a b-voter to node 6 (a) would give
        // a, a, a: refused.
        let record = shard(1, &[1, 2, 3], 1);
        let nodes = [(1, "a"), (2, "a"), (3, "b"), (5, "b"), (6, "a")];
        let s = settled(&record, 1 << 20);
        let view = loads(&nodes, std::slice::from_ref(&s));
        let node = |id| view.iter().find(|n| n.id == NodeId(id)).unwrap();
        assert!(region_allows(&s, node(2), node(5), &view));
        assert!(!region_allows(&s, node(3), node(6), &view));
        let mut with_learner = shard(2, &[1, 2, 3], 1);
        with_learner.learners = vec![NodeId(5)];
        let l = settled(&with_learner, 1 << 20);
        assert!(region_allows(&l, node(5), node(3), &view));
        assert!(!region_allows(&l, node(5), node(6), &view));
    }

    #[test]
    fn primaries_stay_in_the_preferred_region_and_go_only_to_caught_up_voters() {
        let records = [
            shard(1, &[1, 2, 3], 1),
            shard(2, &[1, 2, 3], 1),
            shard(3, &[1, 2, 3], 1),
        ];
        let shards: Vec<SettledShard> = records
            .iter()
            .map(|r| SettledShard {
                preferred_region: "a",
                caught_up: vec![NodeId(1), NodeId(3)],
                ..settled(r, 1 << 20)
            })
            .collect();
        // Node 2 (a) is behind; node 3 is in b: nothing may move.
        let view = loads(&[(1, "a"), (2, "a"), (3, "b")], &shards);
        assert_eq!(next_primary_move(&view, &shards, &policy()), None);
        // Without a preferred region, counts never carry a primary to
        // another region either.
        let anywhere: Vec<SettledShard> = records.iter().map(|r| settled(r, 1 << 20)).collect();
        let view = loads(&[(1, "a"), (2, "b"), (3, "b")], &anywhere);
        assert_eq!(next_primary_move(&view, &anywhere, &policy()), None);
        // From outside the preferred region into it is allowed.
        let into: Vec<SettledShard> = records
            .iter()
            .map(|r| SettledShard {
                preferred_region: "b",
                ..settled(r, 1 << 20)
            })
            .collect();
        assert!(matches!(
            next_primary_move(&view, &into, &policy()),
            Some(BalanceStep::Primary {
                to: NodeId(2) | NodeId(3),
                ..
            })
        ));
    }
}
