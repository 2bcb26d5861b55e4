//! Makes each shard's Raft membership what the shard manager's map asks
//! for. Only the shard's leader acts, one membership change at a time, and
//! never while a joint configuration is in flight; the shard manager
//! decides *what* the membership should be (see shard-manager's
//! `repair.rs`), this module only carries it out.

use crate::layout::ShardLayout;
use crate::shard::host::NodeHost;
use openraft::{BasicNode, ChangeMembers, ServerState};
use shoal_types::ShardId;
use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};

/// Raft's membership as the leader sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RaftMembership {
    pub voters: BTreeSet<u64>,
    pub learners: BTreeSet<u64>,
    pub joint: bool,
}

/// The one membership change that brings Raft closer to the map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipAction {
    /// A node the map lists that Raft does not have yet: it first joins as
    /// a learner (a voter must be a learner before it can be promoted).
    AddLearner(u64),
    /// Make these exactly the voters; removed voters leave the group.
    ReplaceVoters(BTreeSet<u64>),
    /// Learners the map no longer lists.
    RemoveLearners(BTreeSet<u64>),
}

/// Decides the next change, if any. A voter is only ever removed when the
/// map lists it as leaving: a leader whose map is a step behind the shard
/// manager's therefore cannot undo a promotion another leader already made.
pub fn next_action(raft: &RaftMembership, target: &ShardLayout) -> Option<MembershipAction> {
    if raft.joint {
        return None;
    }
    let voters: BTreeSet<u64> = target.replicas.iter().map(|n| n.0).collect();
    let learners: BTreeSet<u64> = target.learners.iter().map(|n| n.0).collect();
    let leaving: BTreeSet<u64> = target.leaving.iter().map(|n| n.0).collect();
    let members: BTreeSet<u64> = raft.voters.union(&raft.learners).copied().collect();
    if let Some(missing) = voters.iter().chain(&learners).find(|n| !members.contains(n)) {
        return Some(MembershipAction::AddLearner(*missing));
    }
    if raft.voters != voters {
        let all_removals_leaving = raft.voters.difference(&voters).all(|n| leaving.contains(n));
        return all_removals_leaving.then_some(MembershipAction::ReplaceVoters(voters));
    }
    let extra: BTreeSet<u64> = raft
        .learners
        .iter()
        .filter(|n| !learners.contains(n) && !voters.contains(n))
        .copied()
        .collect();
    (!extra.is_empty()).then_some(MembershipAction::RemoveLearners(extra))
}

/// Runs membership changes in the background, at most one per shard.
#[derive(Default)]
pub struct MembershipDriver {
    busy: Arc<Mutex<HashSet<ShardId>>>,
}

impl MembershipDriver {
    /// For every shard this node leads, starts the next change the map
    /// asks for (unless one is already running for that shard).
    pub fn drive(&self, host: &NodeHost) {
        let layout = host.layout();
        for replica in host.replicas() {
            let metrics = replica.metrics();
            if metrics.state != ServerState::Leader {
                continue;
            }
            let Some(target) = layout.shard(replica.id) else {
                continue;
            };
            let membership = metrics.membership_config.membership();
            let raft = RaftMembership {
                voters: membership.voter_ids().collect(),
                learners: membership.learner_ids().collect(),
                joint: membership.get_joint_config().len() > 1,
            };
            let Some(action) = next_action(&raft, target) else {
                continue;
            };
            let node_addr = |id: u64| {
                layout.node(shoal_types::NodeId(id)).map(|n| BasicNode {
                    addr: n.raft_addr.clone(),
                })
            };
            if let MembershipAction::AddLearner(id) = action {
                if node_addr(id).is_none() {
                    tracing::warn!(shard_id = %replica.id, node = id, "map lists a node it does not describe");
                    continue;
                }
            }
            if !self.lock().insert(replica.id) {
                continue;
            }
            let busy = self.busy.clone();
            let shard = replica.id;
            let node = action_node(&action).and_then(node_addr);
            tokio::spawn(async move {
                tracing::info!(shard_id = %shard, action = ?action, "changing raft membership");
                let result = match &action {
                    MembershipAction::AddLearner(id) => {
                        let node = node.expect("checked above");
                        replica.raft.add_learner(*id, node, false).await.map(|_| ())
                    }
                    MembershipAction::ReplaceVoters(voters) => replica
                        .raft
                        .change_membership(ChangeMembers::ReplaceAllVoters(voters.clone()), false)
                        .await
                        .map(|_| ()),
                    MembershipAction::RemoveLearners(learners) => replica
                        .raft
                        .change_membership(ChangeMembers::RemoveNodes(learners.clone()), false)
                        .await
                        .map(|_| ()),
                };
                if let Err(e) = result {
                    tracing::warn!(shard_id = %shard, action = ?action, error = %e, "membership change failed");
                }
                busy.lock().unwrap_or_else(|p| p.into_inner()).remove(&shard);
            });
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<ShardId>> {
        self.busy.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn action_node(action: &MembershipAction) -> Option<u64> {
    match action {
        MembershipAction::AddLearner(id) => Some(*id),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_types::{Epoch, NodeId};

    fn layout(voters: &[u64], learners: &[u64], leaving: &[u64]) -> ShardLayout {
        ShardLayout {
            id: ShardId(1),
            replicas: voters.iter().copied().map(NodeId).collect(),
            learners: learners.iter().copied().map(NodeId).collect(),
            leaving: leaving.iter().copied().map(NodeId).collect(),
            conf_ver: 2,
            primary: None,
            epoch: Epoch(1),
        }
    }

    fn raft(voters: &[u64], learners: &[u64]) -> RaftMembership {
        RaftMembership {
            voters: voters.iter().copied().collect(),
            learners: learners.iter().copied().collect(),
            joint: false,
        }
    }

    #[test]
    fn a_replacement_goes_learner_then_voters() {
        // Catching up: 4 is listed as a learner.
        let catching_up = layout(&[1, 2, 3], &[4], &[]);
        assert_eq!(
            next_action(&raft(&[1, 2, 3], &[]), &catching_up),
            Some(MembershipAction::AddLearner(4))
        );
        assert_eq!(next_action(&raft(&[1, 2, 3], &[4]), &catching_up), None);
        // Promoting: 4 replaces 3, which is leaving.
        let promoting = layout(&[1, 2, 4], &[], &[3]);
        assert_eq!(
            next_action(&raft(&[1, 2, 3], &[4]), &promoting),
            Some(MembershipAction::ReplaceVoters(BTreeSet::from([1, 2, 4])))
        );
        let mut joint = raft(&[1, 2, 3, 4], &[]);
        joint.joint = true;
        assert_eq!(next_action(&joint, &promoting), None);
        assert_eq!(next_action(&raft(&[1, 2, 4], &[]), &promoting), None);
    }

    #[test]
    fn a_stale_map_never_removes_a_voter_it_does_not_list_as_leaving() {
        // Raft already promoted 4; a leader still holding the catching-up
        // map must not put 3 back.
        let stale = layout(&[1, 2, 3], &[4], &[]);
        assert_eq!(
            next_action(&raft(&[1, 2, 4], &[]), &stale),
            Some(MembershipAction::AddLearner(3))
        );
        assert_eq!(next_action(&raft(&[1, 2, 4], &[3]), &stale), None);
    }

    #[test]
    fn an_aborted_learner_is_removed() {
        let settled = layout(&[1, 2, 3], &[], &[]);
        assert_eq!(
            next_action(&raft(&[1, 2, 3], &[5]), &settled),
            Some(MembershipAction::RemoveLearners(BTreeSet::from([5])))
        );
    }
}
