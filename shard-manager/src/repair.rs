//! Replica repair as a pure function: given one shard's record, what the
//! nodes look like, and what its Raft leader reports, the next step of
//! replacing a replica that must go (its node is dead past the grace
//! period, draining or removed).
//!
//! A replacement is one [`ReplicaChange`] walked through two phases:
//!
//! 1. **Catching up** — the new node is listed as a learner; the shard's
//!    leader adds it to Raft and streams it the log or a snapshot.
//! 2. **Promoting** — once its log is within [`CATCH_UP_SLACK`] entries of
//!    the leader's, the record names it in place of the old replica; the
//!    leader commits that membership (joint consensus for voters). The old
//!    replica keeps hosting until Raft has committed a membership without
//!    it, then the change is finished and the old node deletes its copy.
//!
//! The shard manager takes one step per shard per reconcile, and starts a
//! change only when Raft's membership equals the record: one membership
//! change at a time per shard.

use crate::model::{ChangePhase, NodeId, ReplicaChange, ShardRecord};
use crate::placement::Candidate;
use std::collections::{BTreeMap, BTreeSet};

/// A learner this close (in log entries) to the leader's last log index is
/// caught up: promoting it cannot stall commits for long.
pub const CATCH_UP_SLACK: u64 = 64;

/// What the shard's Raft leader reported about the group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaderView {
    pub node: NodeId,
    pub voters: BTreeSet<NodeId>,
    pub learners: BTreeSet<NodeId>,
    /// A voter change is half done (joint configuration).
    pub joint: bool,
    pub last_log_index: u64,
    /// How far each peer's log matches the leader's.
    pub matched_index: BTreeMap<NodeId, u64>,
}

impl LeaderView {
    /// Raft's membership is exactly what the record asks for.
    pub fn matches(&self, voters: &[NodeId], learners: &[NodeId]) -> bool {
        !self.joint
            && self.voters == voters.iter().copied().collect::<BTreeSet<_>>()
            && self.learners == learners.iter().copied().collect::<BTreeSet<_>>()
    }
}

/// How repair sees one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    pub region: String,
    /// Alive and active: may receive replicas.
    pub usable: bool,
    /// Dead past the grace period, or removed: its replicas are rebuilt.
    pub gone: bool,
    /// Draining: its replicas move, but it is still serving meanwhile.
    pub draining: bool,
}

/// The keyspace rules a replacement must honour.
#[derive(Clone, Debug, Default)]
pub struct KeyspaceRules {
    /// Regions voters may live in; empty = any.
    pub regions: Vec<String>,
}

/// The next step for one shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RepairStep {
    /// Begin replacing `removing` with `adding`.
    Start(ReplicaChange),
    /// The new replica caught up: it takes the old one's place.
    Promote,
    /// Raft committed the new membership: the change is over.
    Finish,
    /// The node being added can no longer take the replica.
    Abort,
}

/// Decides the next repair step for `shard`, if any.
pub fn next_step(
    shard: &ShardRecord,
    nodes: &BTreeMap<NodeId, NodeView>,
    leader: Option<&LeaderView>,
    candidates: &[Candidate],
    rules: &KeyspaceRules,
) -> Option<RepairStep> {
    let view = |id: NodeId| nodes.get(&id);
    match &shard.change {
        Some(change) if change.phase == ChangePhase::CatchingUp => {
            // Only a node that is gone or draining is given up on; one that
            // is merely late with a heartbeat (or not yet heard from since
            // a shard-manager restart) is waited for.
            if view(change.adding).is_none_or(|n| n.gone || n.draining) {
                return Some(RepairStep::Abort);
            }
            let leader = leader?;
            let matched = leader.matched_index.get(&change.adding).copied().unwrap_or(0);
            let caught_up = leader.learners.contains(&change.adding)
                && !leader.joint
                && matched + CATCH_UP_SLACK >= leader.last_log_index;
            caught_up.then_some(RepairStep::Promote)
        }
        Some(_) => {
            let leader = leader?;
            leader
                .matches(&shard.voters, &shard.learners)
                .then_some(RepairStep::Finish)
        }
        None => {
            let leader = leader?;
            // Only from a settled group: Raft must be exactly the record.
            if !leader.matches(&shard.voters, &shard.learners) {
                return None;
            }
            let (removing, voter) = replica_to_replace(shard, nodes, leader.node)?;
            let adding = choose_replacement(shard, removing, voter, nodes, candidates, rules)?;
            Some(RepairStep::Start(ReplicaChange {
                adding,
                removing,
                voter,
                phase: ChangePhase::CatchingUp,
            }))
        }
    }
}

/// The replica to replace first: on a gone node before on a draining one,
/// voters before learners. A draining leader is left alone until its
/// leadership has moved (the primary is moved off draining nodes first).
fn replica_to_replace(
    shard: &ShardRecord,
    nodes: &BTreeMap<NodeId, NodeView>,
    leader: NodeId,
) -> Option<(NodeId, bool)> {
    let members = shard
        .voters
        .iter()
        .map(|id| (*id, true))
        .chain(shard.learners.iter().map(|id| (*id, false)));
    let mut best: Option<(u8, NodeId, bool)> = None;
    for (id, voter) in members {
        let Some(node) = nodes.get(&id) else {
            continue;
        };
        let urgency = match (node.gone, node.draining) {
            (true, _) => 0,
            (false, true) if id != leader => 1,
            _ => continue,
        };
        let rank = (urgency * 2 + u8::from(!voter), id, voter);
        if best.is_none_or(|b| (rank.0, rank.1) < (b.0, b.1)) {
            best = Some(rank);
        }
    }
    best.map(|(_, id, voter)| (id, voter))
}

/// A node for the new replica: usable, not already hosting the shard. A
/// voter goes where it best keeps the shard spread across regions (within
/// the keyspace's regions); a learner stays in the region it serves.
fn choose_replacement(
    shard: &ShardRecord,
    removing: NodeId,
    voter: bool,
    nodes: &BTreeMap<NodeId, NodeView>,
    candidates: &[Candidate],
    rules: &KeyspaceRules,
) -> Option<NodeId> {
    let hosts = shard.hosts();
    let region_of = |id: &NodeId| nodes.get(id).map(|n| n.region.as_str()).unwrap_or("");
    let removing_region = region_of(&removing).to_string();
    let remaining_voters: Vec<&str> = shard
        .voters
        .iter()
        .filter(|id| **id != removing)
        .map(region_of)
        .collect();
    candidates
        .iter()
        .filter(|c| !hosts.contains(&c.id))
        .filter(|c| {
            if voter {
                rules.regions.is_empty() || rules.regions.contains(&c.region)
            } else {
                c.region == removing_region
            }
        })
        .min_by_key(|c| {
            let same_region = remaining_voters.iter().filter(|r| **r == c.region).count();
            (if voter { same_region } else { 0 }, c.replicas, c.id)
        })
        .map(|c| c.id)
}

/// Applies a step to a copy of the record (the caller commits it).
pub fn apply(shard: &ShardRecord, step: &RepairStep) -> ShardRecord {
    let mut next = shard.clone();
    next.conf_ver += 1;
    match step {
        RepairStep::Start(change) => next.change = Some(change.clone()),
        RepairStep::Promote => {
            let change = next.change.as_mut().expect("promote needs a change");
            let list = if change.voter {
                &mut next.voters
            } else {
                &mut next.learners
            };
            if let Some(slot) = list.iter_mut().find(|id| **id == change.removing) {
                *slot = change.adding;
            }
            change.phase = ChangePhase::Promoting;
        }
        RepairStep::Finish | RepairStep::Abort => next.change = None,
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Epoch, ShardId};

    fn ids(raw: &[u64]) -> Vec<NodeId> {
        raw.iter().copied().map(NodeId).collect()
    }

    fn node(region: &str) -> NodeView {
        NodeView {
            region: region.into(),
            usable: true,
            gone: false,
            draining: false,
        }
    }

    fn cluster() -> BTreeMap<NodeId, NodeView> {
        BTreeMap::from([
            (NodeId(1), node("a")),
            (NodeId(2), node("a")),
            (NodeId(3), node("b")),
            (NodeId(4), node("a")),
            (NodeId(5), node("b")),
        ])
    }

    fn candidates(nodes: &BTreeMap<NodeId, NodeView>) -> Vec<Candidate> {
        nodes
            .iter()
            .filter(|(_, n)| n.usable)
            .map(|(id, n)| Candidate {
                id: *id,
                region: n.region.clone(),
                replicas: 0,
                primaries: 0,
            })
            .collect()
    }

    fn shard() -> ShardRecord {
        ShardRecord {
            id: ShardId(7),
            keyspace: "k".into(),
            voters: ids(&[1, 2, 3]),
            learners: vec![],
            primary: Some(NodeId(1)),
            epoch: Epoch(1),
            conf_ver: 1,
            change: None,
        }
    }

    fn leader_of(shard: &ShardRecord) -> LeaderView {
        LeaderView {
            node: shard.primary.unwrap(),
            voters: shard.voters.iter().copied().collect(),
            learners: shard.learners.iter().copied().collect(),
            joint: false,
            last_log_index: 1000,
            matched_index: BTreeMap::new(),
        }
    }

    /// The next step with every usable node as a candidate and no region rules.
    fn decide(s: &ShardRecord, nodes: &BTreeMap<NodeId, NodeView>, leader: Option<&LeaderView>) -> Option<RepairStep> {
        next_step(s, nodes, leader, &candidates(nodes), &Default::default())
    }

    fn kill(nodes: &mut BTreeMap<NodeId, NodeView>, id: u64) {
        let n = nodes.get_mut(&NodeId(id)).unwrap();
        n.usable = false;
        n.gone = true;
    }

    #[test]
    fn healthy_shard_needs_nothing() {
        let nodes = cluster();
        let s = shard();
        assert_eq!(decide(&s, &nodes, Some(&leader_of(&s))), None);
    }

    #[test]
    fn dead_voter_is_replaced_in_its_region_through_both_phases() {
        let mut nodes = cluster();
        kill(&mut nodes, 3);
        let mut s = shard();
        let step = decide(&s, &nodes, Some(&leader_of(&s))).unwrap();
        // Voters left: 1 (a), 2 (a): region b keeps the shard spread.
        let expected = ReplicaChange {
            adding: NodeId(5),
            removing: NodeId(3),
            voter: true,
            phase: ChangePhase::CatchingUp,
        };
        assert_eq!(step, RepairStep::Start(expected));
        s = apply(&s, &step);
        assert_eq!(s.hosts(), ids(&[1, 2, 3, 5]));

        // Not a learner in Raft yet, then lagging: no promotion.
        let mut leader = leader_of(&shard());
        assert_eq!(decide(&s, &nodes, Some(&leader)), None);
        leader.learners.insert(NodeId(5));
        leader.matched_index.insert(NodeId(5), 1000 - CATCH_UP_SLACK - 1);
        assert_eq!(decide(&s, &nodes, Some(&leader)), None);
        leader.matched_index.insert(NodeId(5), 1000 - CATCH_UP_SLACK);
        let step = decide(&s, &nodes, Some(&leader)).unwrap();
        assert_eq!(step, RepairStep::Promote);
        s = apply(&s, &step);
        assert_eq!(s.voters, ids(&[1, 2, 5]));
        assert_eq!(
            s.hosts(),
            ids(&[1, 2, 3, 5]),
            "the old replica hosts until Raft commits"
        );

        // Joint, then uniform without 3: finished.
        leader.joint = true;
        assert_eq!(decide(&s, &nodes, Some(&leader)), None);
        leader.joint = false;
        leader.voters = BTreeSet::from([NodeId(1), NodeId(2), NodeId(5)]);
        leader.learners.clear();
        let step = decide(&s, &nodes, Some(&leader)).unwrap();
        assert_eq!(step, RepairStep::Finish);
        s = apply(&s, &step);
        assert_eq!(s.hosts(), ids(&[1, 2, 5]));
        assert_eq!(s.conf_ver, 4);
    }

    #[test]
    fn nothing_starts_while_raft_differs_from_the_record_or_without_a_leader() {
        let mut nodes = cluster();
        kill(&mut nodes, 3);
        let s = shard();
        assert_eq!(decide(&s, &nodes, None), None);
        let mut leader = leader_of(&s);
        leader.learners.insert(NodeId(4));
        assert_eq!(decide(&s, &nodes, Some(&leader)), None);
    }

    #[test]
    fn a_joining_node_that_dies_aborts_the_change() {
        let mut nodes = cluster();
        kill(&mut nodes, 3);
        let s = shard();
        let step = decide(&s, &nodes, Some(&leader_of(&s))).unwrap();
        let s = apply(&s, &step);
        kill(&mut nodes, 5);
        let step = decide(&s, &nodes, Some(&leader_of(&shard())));
        assert_eq!(step, Some(RepairStep::Abort));
        assert_eq!(apply(&s, &RepairStep::Abort).change, None);
    }

    #[test]
    fn draining_leader_waits_and_dead_goes_before_draining() {
        let mut nodes = cluster();
        nodes.get_mut(&NodeId(1)).unwrap().draining = true;
        let s = shard();
        // 1 is draining but leads: wait for the primary to move.
        assert_eq!(decide(&s, &nodes, Some(&leader_of(&s))), None);
        let mut moved = leader_of(&s);
        moved.node = NodeId(2);
        let Some(RepairStep::Start(change)) = decide(&s, &nodes, Some(&moved)) else {
            panic!("expected a start")
        };
        assert_eq!(change.removing, NodeId(1));
        kill(&mut nodes, 3);
        let Some(RepairStep::Start(change)) = decide(&s, &nodes, Some(&moved)) else {
            panic!("expected a start")
        };
        assert_eq!(
            change.removing,
            NodeId(3),
            "a dead replica is more urgent than a draining one"
        );
    }

    #[test]
    fn no_candidate_means_no_change_and_regions_are_honoured() {
        let mut nodes = cluster();
        kill(&mut nodes, 3);
        let s = shard();
        let rules = KeyspaceRules {
            regions: vec!["c".into()],
        };
        assert_eq!(
            next_step(&s, &nodes, Some(&leader_of(&s)), &candidates(&nodes), &rules),
            None
        );
        assert_eq!(
            next_step(&s, &nodes, Some(&leader_of(&s)), &[], &Default::default()),
            None
        );
    }

    #[test]
    fn a_learner_is_replaced_within_its_region() {
        let mut nodes = cluster();
        nodes.insert(NodeId(6), node("b"));
        let mut s = shard();
        s.learners = ids(&[5]);
        kill(&mut nodes, 5);
        let step = decide(&s, &nodes, Some(&leader_of(&s))).unwrap();
        let RepairStep::Start(change) = &step else {
            panic!("expected a start")
        };
        assert_eq!(
            (change.adding, change.removing, change.voter),
            (NodeId(6), NodeId(5), false)
        );
        let s = apply(&s, &step);
        let mut leader = leader_of(&shard());
        leader.learners = BTreeSet::from([NodeId(5), NodeId(6)]);
        leader.matched_index.insert(NodeId(6), 1000);
        let s = apply(&s, &decide(&s, &nodes, Some(&leader)).unwrap());
        assert_eq!((s.voters.clone(), s.learners.clone()), (ids(&[1, 2, 3]), ids(&[6])));
    }
}
