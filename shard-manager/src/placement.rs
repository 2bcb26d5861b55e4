//! Placement decisions as pure functions: which nodes get a shard's
//! replicas, and which replica is its primary. No I/O, so every rule is unit
//! tested.
//!
//! Rules: never two replicas of a shard on one node; spread a shard's
//! replicas across regions as evenly as the allowed regions permit; prefer
//! the least loaded node; ties go to the lowest id, so placement is
//! deterministic.

use crate::model::NodeId;
use std::collections::HashMap;

/// A node as placement sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub id: NodeId,
    pub region: String,
    /// Replicas it already holds.
    pub replicas: usize,
    /// Primaries it already holds.
    pub primaries: usize,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlacementError {
    #[error("need {wanted} eligible nodes{}, have {available}", region_note(.regions))]
    NotEnoughNodes {
        wanted: usize,
        available: usize,
        regions: Vec<String>,
    },
}

fn region_note(regions: &[String]) -> String {
    if regions.is_empty() {
        String::new()
    } else {
        format!(" in regions {regions:?}")
    }
}

/// Picks `count` distinct nodes for one shard. `candidates` are the
/// eligible (alive, active) nodes; `regions` restricts them when non-empty.
/// The caller updates the candidates' loads between shards.
pub fn place_replicas(
    candidates: &[Candidate],
    count: usize,
    regions: &[String],
) -> Result<Vec<NodeId>, PlacementError> {
    let mut pool: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| regions.is_empty() || regions.contains(&c.region))
        .collect();
    if pool.len() < count {
        return Err(PlacementError::NotEnoughNodes {
            wanted: count,
            available: pool.len(),
            regions: regions.to_vec(),
        });
    }
    let mut chosen: Vec<&Candidate> = Vec::with_capacity(count);
    while chosen.len() < count {
        let per_region = |region: &str| chosen.iter().filter(|c| c.region == region).count();
        let (index, _) = pool
            .iter()
            .enumerate()
            .min_by_key(|(_, c)| (per_region(&c.region), c.replicas, c.id))
            .expect("pool is larger than what is chosen");
        chosen.push(pool.remove(index));
    }
    Ok(chosen.iter().map(|c| c.id).collect())
}

/// Picks the node for a shard's learner in `region`: not one of its
/// `voters`, least loaded, lowest id.
pub fn place_learner(candidates: &[Candidate], region: &str, voters: &[NodeId]) -> Result<NodeId, PlacementError> {
    candidates
        .iter()
        .filter(|c| c.region == region && !voters.contains(&c.id))
        .min_by_key(|c| (c.replicas, c.id))
        .map(|c| c.id)
        .ok_or_else(|| PlacementError::NotEnoughNodes {
            wanted: 1,
            available: 0,
            regions: vec![region.to_string()],
        })
}

/// Picks a shard's primary among `voters`: in the preferred region when one
/// is there, then the fewest primaries, then the lowest id. `eligible`
/// excludes voters that must not lead (dead, draining).
pub fn choose_primary(
    voters: &[NodeId],
    candidates: &HashMap<NodeId, Candidate>,
    preferred_region: &str,
) -> Option<NodeId> {
    voters
        .iter()
        .filter_map(|id| candidates.get(id))
        .min_by_key(|c| {
            (
                !preferred_region.is_empty() && c.region != preferred_region,
                c.primaries,
                c.id,
            )
        })
        .map(|c| c.id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn ids(raw: &[u64]) -> Vec<NodeId> {
        raw.iter().copied().map(NodeId).collect()
    }

    fn nodes(spec: &[(u64, &str)]) -> Vec<Candidate> {
        spec.iter()
            .map(|(id, r)| Candidate {
                id: NodeId(*id),
                region: r.to_string(),
                replicas: 0,
                primaries: 0,
            })
            .collect()
    }

    /// Places `shards` shards one after another, updating loads as the
    /// shard manager does.
    fn place_many(mut all: Vec<Candidate>, shards: usize, replicas: usize) -> (Vec<Vec<NodeId>>, Vec<Candidate>) {
        let mut placed = Vec::new();
        for _ in 0..shards {
            let chosen = place_replicas(&all, replicas, &[]).unwrap();
            for c in all.iter_mut().filter(|c| chosen.contains(&c.id)) {
                c.replicas += 1;
            }
            placed.push(chosen);
        }
        (placed, all)
    }

    #[test]
    fn never_two_replicas_on_one_node_and_both_regions_used() {
        let all = nodes(&[(1, "a"), (2, "a"), (3, "a"), (4, "b"), (5, "b")]);
        let (placed, after) = place_many(all, 10, 3);
        for replicas in &placed {
            assert_eq!(replicas.iter().collect::<HashSet<_>>().len(), 3, "{replicas:?}");
            let regions: HashSet<&str> = replicas.iter().map(|id| if id.0 <= 3 { "a" } else { "b" }).collect();
            assert_eq!(regions.len(), 2, "a shard spans both regions: {replicas:?}");
        }
        let loads: Vec<usize> = after.iter().map(|c| c.replicas).collect();
        assert!(
            loads.iter().max().unwrap() - loads.iter().min().unwrap() <= 2,
            "balanced: {loads:?}"
        );
    }

    #[test]
    fn region_restriction_and_shortage_are_reported() {
        let all = nodes(&[(1, "a"), (2, "b"), (3, "b")]);
        assert_eq!(place_replicas(&all, 2, &["b".into()]).unwrap(), ids(&[2, 3]));
        let err = place_replicas(&all, 3, &["b".into()]).unwrap_err();
        assert_eq!(
            err,
            PlacementError::NotEnoughNodes {
                wanted: 3,
                available: 2,
                regions: vec!["b".into()]
            }
        );
        assert!(err.to_string().contains("need 3 eligible nodes in regions"));
    }

    #[test]
    fn primaries_prefer_region_then_spread() {
        let mut all: HashMap<NodeId, Candidate> = nodes(&[(1, "a"), (2, "a"), (3, "b")])
            .into_iter()
            .map(|c| (c.id, c))
            .collect();
        assert_eq!(choose_primary(&ids(&[1, 2, 3]), &all, "b"), Some(NodeId(3)));
        let mut counts = HashMap::new();
        for _ in 0..6 {
            let p = choose_primary(&ids(&[1, 2, 3]), &all, "").unwrap();
            all.get_mut(&p).unwrap().primaries += 1;
            *counts.entry(p).or_insert(0) += 1;
        }
        assert_eq!(counts, HashMap::from([(NodeId(1), 2), (NodeId(2), 2), (NodeId(3), 2)]));
        // A voter missing from the candidates (dead) is never chosen.
        all.remove(&NodeId(1));
        assert_ne!(choose_primary(&ids(&[1, 2]), &all, ""), Some(NodeId(1)));
    }
}
