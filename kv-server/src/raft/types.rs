//! The openraft type configuration of a shard's Raft group and the commands
//! its log carries.

use crate::types::{KeyspaceId, UshardId, Version};
use serde::{Deserialize, Serialize};
use std::fmt;

openraft::declare_raft_types!(
    /// Type configuration shared by every shard's Raft group.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = u64,
        Node = openraft::BasicNode,
);

/// Snapshot payload: an open file in the format of [`crate::raft::snapshot`].
pub type SnapshotData = std::fs::File;

pub type Raft = openraft::Raft<TypeConfig, crate::raft::state_machine::ShardStateMachine>;
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
pub type Snapshot = openraft::alias::SnapshotOf<TypeConfig, SnapshotData>;
pub type RaftError<E = openraft::errors::Infallible> = openraft::errors::RaftError<TypeConfig, E>;
pub type RpcError = openraft::errors::RPCError<TypeConfig>;

/// One mutation inside a [`Command::Write`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteOp {
    Put {
        ushard: UshardId,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        ushard: UshardId,
        key: Vec<u8>,
    },
}

/// What a shard's Raft log carries. Validated before it is proposed, so
/// applying it cannot fail for reasons of input.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Applies every op atomically, all stamped with the entry's log index.
    Write { keyspace: KeyspaceId, ops: Vec<WriteOp> },
}

// Display is what openraft logs: never print user keys or values.
impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Write { keyspace, ops } => {
                write!(f, "Write(keyspace={keyspace}, ops={})", ops.len())
            }
        }
    }
}

/// Result of applying a [`Command`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResult {
    pub version: Version,
}

/// bincode with a clear error: used for every stored or transported openraft value.
pub fn encode<T: Serialize>(value: &T) -> std::io::Result<Vec<u8>> {
    bincode::serialize(value).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> std::io::Result<T> {
    bincode::deserialize(bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}
