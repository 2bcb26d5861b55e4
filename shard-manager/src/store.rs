//! The shard manager's durable state in RocksDB. The only module of this
//! crate that names RocksDB.
//!
//! What is durable, and why: node records (ids are never reused, addresses
//! and intent must survive restarts), keyspaces, shards with their voters,
//! primary and epoch (an epoch must never go backwards, or a deposed
//! primary could be re-fenced with an old number), μshard moves (a
//! restarted shard manager resumes or aborts each from its phase), and the
//! id counters.
//! Not durable: heartbeat times — after a restart every node is "dead"
//! until it heartbeats again, which errs on the side of not trusting it.
//!
//! Every change is one synced write batch: a crash leaves the old state or
//! the new one.

use crate::model::{KeyspaceId, KeyspaceRecord, MoveRecord, NodeId, NodeRecord, ShardId, ShardRecord};
use rocksdb::{Options, WriteBatch, WriteOptions, DB};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

const NODE: &str = "node/";
const KEYSPACE: &str = "keyspace/";
const SHARD: &str = "shard/";
const MOVE: &str = "move/";
const COUNTERS: &str = "meta/counters";

/// Id allocators and the shard map version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub next_node_id: NodeId,
    pub next_shard_id: ShardId,
    pub next_keyspace_id: KeyspaceId,
    pub map_version: u64,
    #[serde(default = "first_move_id")]
    pub next_move_id: u64,
}

fn first_move_id() -> u64 {
    1
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            next_node_id: NodeId(1),
            next_shard_id: ShardId(1),
            next_keyspace_id: KeyspaceId(1),
            map_version: 0,
            next_move_id: first_move_id(),
        }
    }
}

/// Everything durable, as loaded at start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DurableState {
    pub nodes: BTreeMap<NodeId, NodeRecord>,
    pub keyspaces: BTreeMap<String, KeyspaceRecord>,
    pub shards: BTreeMap<ShardId, ShardRecord>,
    pub moves: BTreeMap<u64, MoveRecord>,
    pub counters: Counters,
}

/// One atomic change.
#[derive(Debug, Default)]
pub struct Change {
    pub nodes: Vec<NodeRecord>,
    pub keyspaces: Vec<KeyspaceRecord>,
    pub shards: Vec<ShardRecord>,
    pub moves: Vec<MoveRecord>,
    pub counters: Option<Counters>,
    /// Shard records to delete (retired shards).
    pub removed_shards: Vec<ShardId>,
}

pub struct MetaStore {
    db: DB,
}

fn node_key(id: NodeId) -> String {
    format!("{NODE}{id:020}")
}

fn shard_key(id: ShardId) -> String {
    format!("{SHARD}{id:020}")
}

fn move_key(id: u64) -> String {
    format!("{MOVE}{id:020}")
}

fn to_json<T: Serialize>(value: &T) -> anyhow::Result<Vec<u8>> {
    Ok(serde_json::to_vec(value)?)
}

impl MetaStore {
    pub fn open(path: &Path) -> anyhow::Result<(MetaStore, DurableState)> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        let db = DB::open(&opts, path)?;
        let store = MetaStore { db };
        let state = store.load()?;
        Ok((store, state))
    }

    fn scan<T: DeserializeOwned>(&self, prefix: &str) -> anyhow::Result<Vec<T>> {
        let mut out = Vec::new();
        for item in self.db.prefix_iterator(prefix.as_bytes()) {
            let (key, value) = item?;
            if !key.starts_with(prefix.as_bytes()) {
                break;
            }
            out.push(serde_json::from_slice(&value)?);
        }
        Ok(out)
    }

    fn load(&self) -> anyhow::Result<DurableState> {
        let counters = match self.db.get(COUNTERS)? {
            Some(bytes) => serde_json::from_slice(&bytes)?,
            None => Counters::default(),
        };
        Ok(DurableState {
            nodes: self.scan::<NodeRecord>(NODE)?.into_iter().map(|n| (n.id, n)).collect(),
            keyspaces: self
                .scan::<KeyspaceRecord>(KEYSPACE)?
                .into_iter()
                .map(|k| (k.name.clone(), k))
                .collect(),
            shards: self
                .scan::<ShardRecord>(SHARD)?
                .into_iter()
                .map(|s| (s.id, s))
                .collect(),
            moves: self.scan::<MoveRecord>(MOVE)?.into_iter().map(|m| (m.id, m)).collect(),
            counters,
        })
    }

    /// Applies `change` atomically and durably (fsync before returning).
    pub fn commit(&self, change: &Change) -> anyhow::Result<()> {
        let mut batch = WriteBatch::default();
        for node in &change.nodes {
            batch.put(node_key(node.id), to_json(node)?);
        }
        for keyspace in &change.keyspaces {
            batch.put(format!("{KEYSPACE}{}", keyspace.name), to_json(keyspace)?);
        }
        for shard in &change.shards {
            batch.put(shard_key(shard.id), to_json(shard)?);
        }
        for record in &change.moves {
            batch.put(move_key(record.id), to_json(record)?);
        }
        for id in &change.removed_shards {
            batch.delete(shard_key(*id));
        }
        if let Some(counters) = &change.counters {
            batch.put(COUNTERS, to_json(counters)?);
        }
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.db.write_opt(batch, &opts)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ChangePhase, Epoch, NodeIntent, ReplicaChange};

    #[test]
    fn a_shard_record_from_before_membership_changes_loads_with_defaults() {
        let old = r#"{"id":1,"keyspace":"k","voters":[1,2,3],"learners":[],"primary":1,"epoch":2}"#;
        let shard: ShardRecord = serde_json::from_str(old).unwrap();
        assert_eq!((shard.conf_ver, shard.change), (1, None));
    }

    #[test]
    fn committed_state_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let node = NodeRecord {
            id: NodeId(7),
            client_addr: "127.0.0.1:1".into(),
            raft_addr: "127.0.0.1:2".into(),
            region: "eu".into(),
            labels: BTreeMap::from([("rack".into(), "r1".into())]),
            intent: NodeIntent::Active,
        };
        let shard = ShardRecord {
            id: ShardId(3),
            keyspace: "ks".into(),
            voters: vec![NodeId(7)],
            learners: vec![],
            primary: Some(NodeId(7)),
            epoch: Epoch(4),
            conf_ver: 3,
            change: Some(ReplicaChange {
                adding: NodeId(9),
                removing: NodeId(7),
                voter: true,
                phase: ChangePhase::CatchingUp,
            }),
        };
        let counters = Counters {
            next_node_id: NodeId(8),
            next_shard_id: ShardId(4),
            next_keyspace_id: KeyspaceId(2),
            map_version: 9,
            next_move_id: 3,
        };
        {
            let (store, state) = MetaStore::open(dir.path()).unwrap();
            assert_eq!(state, DurableState::default());
            store
                .commit(&Change {
                    nodes: vec![node.clone()],
                    shards: vec![shard.clone()],
                    counters: Some(counters.clone()),
                    ..Default::default()
                })
                .unwrap();
        }
        let (_, state) = MetaStore::open(dir.path()).unwrap();
        assert_eq!(state.nodes[&NodeId(7)], node);
        assert_eq!(state.shards[&ShardId(3)], shard);
        assert_eq!(state.counters, counters);
    }
}
