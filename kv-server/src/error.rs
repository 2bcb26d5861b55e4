//! The one error enum of the server's request path. Each variant maps to one
//! stable wire code in [`crate::rpc::status`].

use shoal_types::{Epoch, NodeId, ShardId};

#[derive(Debug, thiserror::Error)]
pub enum KvError {
    #[error("shard {shard} is not led by this node; leader: {leader:?}")]
    NotLeader { shard: ShardId, leader: Option<NodeId> },
    #[error("unknown keyspace {0:?}")]
    UnknownKeyspace(String),
    #[error("shard {0} is not hosted on this node")]
    UnknownShard(ShardId),
    #[error("ushard {ushard} of keyspace {keyspace:?} belongs to shard {owner}, not shard {shard} (map version {map_version})")]
    WrongShard {
        keyspace: String,
        ushard: u32,
        shard: ShardId,
        /// Who owns it, by the map of `map_version`.
        owner: ShardId,
        map_version: u64,
    },
    #[error("{0}")]
    MoveConflict(String),
    #[error("ushard {ushard} has moved from shard {shard} to shard {owner}")]
    UshardMoved {
        shard: ShardId,
        ushard: u32,
        owner: ShardId,
    },
    #[error("ushard {ushard} of keyspace {keyspace:?} is moving to another shard: nothing was written; retry shortly")]
    Moving { keyspace: String, ushard: u32 },
    #[error("shard {shard} is at epoch {current}; the request named epoch {requested}: refresh the shard map")]
    StaleEpoch {
        shard: ShardId,
        requested: Epoch,
        current: Epoch,
    },
    #[error("key is {len} bytes; the limit is {max}")]
    KeyTooLarge { len: usize, max: usize },
    #[error("value is {len} bytes; the limit is {max}")]
    ValueTooLarge { len: usize, max: usize },
    #[error("batch too large: {0}")]
    BatchTooLarge(String),
    #[error("key must not be empty")]
    EmptyKey,
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error(
        "leadership of shard {shard} changed before the write was known to commit; it may or may not have been applied"
    )]
    LeadershipLost { shard: ShardId, leader: Option<NodeId> },
    #[error("internal error: {0}")]
    Internal(String),
    #[error("stale replica: {0}")]
    StaleReplica(String),
    #[error("not a counter: {0}")]
    NotACounter(String),
    #[error("transaction snapshot at version {snapshot} is older than shard {shard}'s transaction window (floor {floor}): retry with fresh reads")]
    TxnTooOld { shard: ShardId, snapshot: u64, floor: u64 },
    #[error("shard {shard}'s primary changed since the transaction's snapshot (epoch {snapshot}, now {current}): retry with fresh reads")]
    EpochChanged {
        shard: ShardId,
        snapshot: u64,
        current: u64,
    },
    #[error("transaction too large: {0}")]
    TxnTooLarge(String),
    #[error("empty transaction: a commit must read or write something")]
    EmptyTxn,
    #[error("request {seq} of client {client:#x} is older than the client's oldest unanswered request: not applied again; whether its first attempt applied is unknown")]
    RequestExpired { client: u64, seq: u64 },
}

impl From<std::io::Error> for KvError {
    fn from(e: std::io::Error) -> Self {
        KvError::Internal(e.to_string())
    }
}

pub type KvResult<T> = Result<T, KvError>;
