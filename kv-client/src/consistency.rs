//! What a request asks for beyond its key: how fresh a read must be, and
//! how a write is conditioned, timed out and acknowledged
//! (docs/consistency.md).

use crate::client::Versioned;
use shoal_proto::kv::{condition, read_consistency};
use std::time::Duration;

/// How fresh a read must be.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReadConsistency {
    /// Linearizable: served by the primary (the default).
    #[default]
    Strong,
    /// Never older than this: any replica that can prove it, preferring the
    /// client's region.
    Bounded(Duration),
    /// Sees every write up to this version of the shard (read-your-writes
    /// with an explicit token; [`crate::Session`] tracks tokens for you).
    AtLeast(u64),
}

impl ReadConsistency {
    /// Whether only the primary may answer.
    pub fn needs_primary(&self) -> bool {
        matches!(self, ReadConsistency::Strong)
    }

    pub(crate) fn to_wire(self) -> Option<shoal_proto::kv::ReadConsistency> {
        let mode = match self {
            ReadConsistency::Strong => return None,
            ReadConsistency::Bounded(bound) => read_consistency::Mode::MaxStalenessMs(bound.as_millis() as u64),
            ReadConsistency::AtLeast(version) => read_consistency::Mode::MinVersion(version),
        };
        Some(shoal_proto::kv::ReadConsistency { mode: Some(mode) })
    }
}

/// What the current state of a key must be for a write to apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Condition {
    /// The key does not exist (put-if-absent).
    Absent,
    /// The key exists (delete-if-present).
    Present,
    /// The key's version is this one (put/delete-if-version).
    Version(u64),
    /// The key's value is these bytes (put-if-value).
    Value(Vec<u8>),
}

impl Condition {
    pub(crate) fn to_wire(&self) -> shoal_proto::kv::Condition {
        let check = match self {
            Condition::Absent => condition::Check::Absent(true),
            Condition::Present => condition::Check::Present(true),
            Condition::Version(v) => condition::Check::Version(*v),
            Condition::Value(bytes) => condition::Check::Value(bytes.clone()),
        };
        shoal_proto::kv::Condition { check: Some(check) }
    }
}

/// Options of a put; `Default` is an unconditional quorum write forever.
#[derive(Clone, Debug, Default)]
pub struct PutOptions {
    pub condition: Option<Condition>,
    /// The key disappears this long after the write.
    pub ttl: Option<Duration>,
    /// Acknowledged once the primary accepted it, before a quorum has it:
    /// lost if the primary dies first. Not with a condition.
    pub fast_ack: bool,
}

/// How a conditional write turned out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteResult {
    Applied(crate::client::WriteAck),
    /// The condition did not hold; nothing was written. The key's current
    /// value (None: it does not exist).
    ConditionFailed {
        current: Option<Versioned>,
    },
}
