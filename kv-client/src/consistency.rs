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
    /// Parses `strong`, `bounded:DURATION` (`250ms`, `2s`, `1m`) or
    /// `ryw:VERSION`.
    pub fn parse(text: &str) -> Result<ReadConsistency, String> {
        match text.split_once(':') {
            None if text == "strong" => Ok(ReadConsistency::Strong),
            Some(("bounded", duration)) => parse_duration(duration).map(ReadConsistency::Bounded),
            Some(("ryw", version)) => version
                .parse()
                .map(ReadConsistency::AtLeast)
                .map_err(|_| format!("ryw:VERSION needs a version number, got {version:?}")),
            None if text == "ryw" => Err("ryw needs the version token a write printed: ryw:VERSION".into()),
            _ => Err(format!(
                "unknown consistency {text:?}: use strong, bounded:DURATION (e.g. bounded:500ms) or ryw:VERSION"
            )),
        }
    }

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

/// Parses a whole number with its unit: `250ms`, `2s`, `1m`, `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("bad duration {text:?}: a whole number with a unit, e.g. 250ms, 2s, 1m or 1h");
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| bad())?;
    let ms_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(bad()),
    };
    n.checked_mul(ms_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("duration {text:?} is too long"))
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
