//! Keyspace creation: names, placement of every shard's replicas and
//! primaries.

use super::{KeyspaceSpec, Manager, SmError, SmResult};
use crate::model::{Epoch, KeyspaceRecord, Liveness, NodeId, NodeIntent, ShardId, ShardRecord, UshardMap};
use crate::placement::{choose_primary, place_learner, place_replicas, Candidate};
use crate::store::{Change, DurableState};
use std::collections::HashMap;

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Where a keyspace's shards may go: what a new shard is placed by, at
/// creation and at a split alike.
pub(super) struct ShardPlacement<'a> {
    pub keyspace: &'a str,
    pub replicas: u32,
    pub regions: &'a [String],
    pub preferred_region: &'a str,
    pub learner_regions: &'a [String],
}

impl ShardPlacement<'_> {
    /// Places shard `id`: voters on the least loaded candidates (within the
    /// regions), a primary (preferring the region), a learner per learner
    /// region; `candidates` count what it took.
    pub fn place(&self, id: ShardId, candidates: &mut [Candidate]) -> SmResult<ShardRecord> {
        let voters = place_replicas(candidates, self.replicas as usize, self.regions)?;
        for c in candidates.iter_mut().filter(|c| voters.contains(&c.id)) {
            c.replicas += 1;
        }
        let by_id: HashMap<NodeId, Candidate> = candidates.iter().map(|c| (c.id, c.clone())).collect();
        let primary = choose_primary(&voters, &by_id, self.preferred_region);
        if let Some(c) = primary.and_then(|p| candidates.iter_mut().find(|c| c.id == p)) {
            c.primaries += 1;
        }
        let mut learners = Vec::new();
        for region in self.learner_regions {
            let learner = place_learner(candidates, region, &voters)?;
            if let Some(c) = candidates.iter_mut().find(|c| c.id == learner) {
                c.replicas += 1;
            }
            learners.push(learner);
        }
        Ok(ShardRecord {
            id,
            keyspace: self.keyspace.to_string(),
            voters,
            learners,
            primary,
            epoch: Epoch(1),
            conf_ver: 1,
            change: None,
        })
    }
}

impl Manager {
    /// Nodes that may receive new replicas: active and alive.
    pub(super) fn candidates(&self, state: &DurableState) -> Vec<Candidate> {
        state
            .nodes
            .values()
            .filter(|n| n.intent == NodeIntent::Active && self.liveness_of(n.id).0 == Liveness::Alive)
            .map(|n| Candidate {
                id: n.id,
                region: n.region.clone(),
                replicas: state.shards.values().filter(|s| s.is_hosted_on(n.id)).count(),
                primaries: state.shards.values().filter(|s| s.primary == Some(n.id)).count(),
            })
            .collect()
    }

    /// Creates a keyspace: its shards, their replicas and primaries, all in
    /// one durable change.
    pub fn create_keyspace(&self, spec: KeyspaceSpec) -> SmResult<KeyspaceRecord> {
        if !valid_name(&spec.name) {
            return Err(SmError::InvalidArgument(format!(
                "keyspace name {:?}: 1-64 characters of letters, digits, '-' and '_'",
                spec.name
            )));
        }
        if spec.replicas == 0 || spec.shards == 0 {
            return Err(SmError::InvalidArgument(
                "replicas and shards must be at least 1".into(),
            ));
        }
        if spec.ushards < spec.shards {
            return Err(SmError::InvalidArgument(format!(
                "ushards ({}) must be at least shards ({})",
                spec.ushards, spec.shards
            )));
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(bad) = spec.learner_regions.iter().find(|r| r.is_empty() || !seen.insert(*r)) {
            return Err(SmError::InvalidArgument(format!(
                "learner_regions: empty or repeated region {bad:?}"
            )));
        }
        let mut state = self.lock_state();
        if state.keyspaces.contains_key(&spec.name) {
            return Err(SmError::AlreadyExists(format!("keyspace {:?}", spec.name)));
        }
        let mut candidates = self.candidates(&state);
        let mut counters = state.counters.clone();
        let placement = ShardPlacement {
            keyspace: &spec.name,
            replicas: spec.replicas,
            regions: &spec.regions,
            preferred_region: &spec.preferred_region,
            learner_regions: &spec.learner_regions,
        };
        let mut shards = Vec::new();
        for _ in 0..spec.shards {
            let id = counters.next_shard_id;
            counters.next_shard_id = id.next();
            shards.push(placement.place(id, &mut candidates)?);
        }
        let shard_ids: Vec<_> = shards.iter().map(|s| s.id).collect();
        // Both mappings start from ranges; only akkio keyspaces later
        // scatter μshards.
        let map = UshardMap::ranges(spec.ushards, &shard_ids)
            .ok_or_else(|| SmError::InvalidArgument("no μshard map for these counts".into()))?;
        let keyspace = KeyspaceRecord {
            name: spec.name.clone(),
            id: counters.next_keyspace_id,
            replicas: spec.replicas,
            ushard_count: spec.ushards,
            shards: shard_ids,
            mapping: spec.mapping,
            home: Some(map.clone()),
            map: Some(map),
            regions: spec.regions,
            preferred_region: spec.preferred_region,
            learner_regions: spec.learner_regions,
            retiring: Vec::new(),
            retired: Vec::new(),
            pins: Default::default(),
        };
        counters.next_keyspace_id = counters.next_keyspace_id.next();
        counters.map_version += 1;
        let change = Change {
            keyspaces: vec![keyspace.clone()],
            shards: shards.clone(),
            counters: Some(counters.clone()),
            ..Default::default()
        };
        self.commit(&change)?;
        state.keyspaces.insert(keyspace.name.clone(), keyspace.clone());
        for shard in shards {
            state.shards.insert(shard.id, shard);
        }
        state.counters = counters;
        Ok(keyspace)
    }
}
