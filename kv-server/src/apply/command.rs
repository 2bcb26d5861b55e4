//! The replicated command format: what one entry of a shard's log asks
//! for (writes with conditions, counters, TTLs and exactly-once ids; clock
//! ticks; membership-free), and what applying it answered. Changing it
//! changes the log format: every variant stays decodable.

use crate::keys::ValueRecord;
use serde::{Deserialize, Serialize};
use shoal_types::{KeyspaceId, UshardId, Version};
use std::fmt;

/// One mutation inside a [`Command::Write`], the log format before
/// conditions existed. Still decoded: logs and snapshots may hold it.
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

/// What the current state of a key must be for a write to apply. An
/// expired key counts as absent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Condition {
    Absent,
    Present,
    Version(u64),
    Value(Vec<u8>),
}

/// One mutation inside a [`Command::Mutate`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MutateOp {
    Put {
        ushard: UshardId,
        key: Vec<u8>,
        value: Vec<u8>,
        /// Absolute wall-clock expiry (ms), 0 = never; computed by the
        /// proposer so every replica stores the same record.
        expires_at_ms: u64,
        condition: Option<Condition>,
    },
    Delete {
        ushard: UshardId,
        key: Vec<u8>,
        condition: Option<Condition>,
    },
    /// Adds `delta` to a decimal i64 value (missing = 0); keeps the key's expiry.
    Increment { ushard: UshardId, key: Vec<u8>, delta: i64 },
}

impl Command {
    /// Whether the command carries its proposer's wall clock (which moves
    /// the shard's apply clock).
    pub fn is_timed(&self) -> bool {
        matches!(
            self,
            Command::Mutate { .. } | Command::ForgetIdleClients { .. } | Command::Tick { .. }
        )
    }

    /// The fast-ack ticket this entry carries on its leader (0: none).
    pub fn accept_ticket(&self) -> u64 {
        match self {
            Command::Mutate { accept_ticket, .. } => *accept_ticket,
            _ => 0,
        }
    }
}

impl MutateOp {
    pub fn condition(&self) -> Option<&Condition> {
        match self {
            MutateOp::Put { condition, .. } | MutateOp::Delete { condition, .. } => condition.as_ref(),
            MutateOp::Increment { .. } => None,
        }
    }
}

/// Names a client request so that its retries apply once (exactly-once).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestId {
    pub client: u64,
    pub seq: u64,
    /// Every seq of `client` below this one has been answered: the shard
    /// forgets their results.
    pub first_incomplete: u64,
}

/// What a shard's Raft log carries. Validated before it is proposed, so
/// applying it cannot fail for reasons of input (a failed condition or a
/// non-counter value is an outcome, decided alike on every replica).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Applies every op atomically, all stamped with the entry's log index.
    /// Only decoded now; new writes are [`Command::Mutate`].
    Write { keyspace: KeyspaceId, ops: Vec<WriteOp> },
    /// Checks every op's condition against the state before the command;
    /// if all hold, applies every op atomically, stamped with the entry's
    /// log index. `now_ms` is the proposer's wall clock: the apply clock
    /// (which judges expiry) is the largest `now_ms` applied so far, so
    /// every replica decides expiry alike.
    Mutate {
        keyspace: KeyspaceId,
        ops: Vec<MutateOp>,
        now_ms: u64,
        request: Option<RequestId>,
        /// Leader-local, never encoded (followers and the stored log see
        /// 0): a fast-ack proposal's ticket, reported by the leader's log
        /// store when it appends the entry (see [`crate::raft::acceptance`]).
        #[serde(skip)]
        accept_ticket: u64,
    },
    /// Forgets the exactly-once record of every client no request touched
    /// for `idle_ms` on the apply clock (advanced to `now_ms` first).
    ForgetIdleClients { idle_ms: u64, now_ms: u64 },
    /// Advances the apply clock to `now_ms` and changes nothing else: the
    /// leader brings the clock up to its own before a strong read that the
    /// clock's lag would change, and on a shard no write has stamped for a
    /// while (see [`crate::shard::view`], "one clock judges expiry").
    Tick { now_ms: u64 },
}

// Display is what openraft logs: never print user keys or values.
impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Write { keyspace, ops } => {
                write!(f, "Write(keyspace={keyspace}, ops={})", ops.len())
            }
            Command::Mutate {
                keyspace, ops, request, ..
            } => {
                write!(f, "Mutate(keyspace={keyspace}, ops={}, request={request:?})", ops.len())
            }
            Command::ForgetIdleClients { idle_ms, .. } => write!(f, "ForgetIdleClients(idle_ms={idle_ms})"),
            Command::Tick { .. } => write!(f, "Tick"),
        }
    }
}

/// How an applied command turned out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Every op was applied.
    #[default]
    Applied,
    /// Op `op`'s condition did not hold; nothing was written. `current` is
    /// that key's live record (None: absent).
    ConditionFailed { op: u32, current: Option<ValueRecord> },
    /// The increment was applied; the counter's new value.
    Counter(i64),
    /// The increment was refused: the value is not a decimal i64, or the sum
    /// overflows. Nothing was written.
    NotACounter(String),
    /// The request's seq is below its client's watermark and its result is
    /// forgotten: a late duplicate of a request the client gave up on. Not
    /// applied (again); its first attempt's outcome is unknown.
    Expired,
}

/// Result of applying a [`Command`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResult {
    pub version: Version,
    pub outcome: Outcome,
}
