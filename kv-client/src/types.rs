//! The client's public types: settings, keys, what reads and writes
//! return, batch mutations and scan options. No wire types here (`wire`
//! converts).

use crate::consistency::ReadConsistency;
use std::time::Duration;

/// Client settings; `Default` gives the documented defaults.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Addresses of the shard manager and/or kv-server client ports; the
    /// layout is fetched from all of them and the newest kept.
    pub endpoints: Vec<String>,
    pub keyspace: String,
    /// Overall deadline of one operation, retries included.
    pub timeout: Duration,
    /// First retry delay; doubles up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// How long one attempt at one replica may take before the client
    /// tries another, for reads and for writes it may retry (exactly-once).
    pub attempt_timeout: Duration,
    /// The client's region: reads any replica may serve go there first.
    pub region: Option<String>,
    /// Tag writes with (client id, seq) so that a write whose answer was
    /// lost is retried safely, applied once (docs/consistency.md).
    pub exactly_once: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            endpoints: vec!["127.0.0.1:7101".into()],
            keyspace: "default".into(),
            timeout: Duration::from_secs(10),
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(100),
            attempt_timeout: Duration::from_secs(2),
            region: None,
            exactly_once: true,
        }
    }
}

/// A key, optionally with the routing key that picks its micro-shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key {
    pub key: Vec<u8>,
    pub routing: Option<Vec<u8>>,
}

impl Key {
    /// Keys that share a routing key share a micro-shard, hence a shard.
    pub fn routed(routing: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Key {
        Key {
            key: key.into(),
            routing: Some(routing.into()),
        }
    }
}

impl<T: Into<Vec<u8>>> From<T> for Key {
    fn from(key: T) -> Key {
        Key {
            key: key.into(),
            routing: None,
        }
    }
}

/// A value as read, with the version of the write that produced it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned {
    pub value: Vec<u8>,
    pub version: u64,
    /// When the key expires (ms since the Unix epoch); 0 = never.
    pub expires_at_ms: u64,
}

/// One entry of a scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub version: u64,
    pub ushard: u32,
}

/// Where a write landed: its shard, the version it got, and the shard's
/// leadership epoch when it was acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteAck {
    pub shard: u64,
    pub version: u64,
    pub epoch: u64,
}

/// A batch operation.
#[derive(Clone, Debug)]
pub enum Mutation {
    Put(Key, Vec<u8>),
    Delete(Key),
}

/// What to scan. `Default` scans the whole keyspace forward.
#[derive(Clone, Debug, Default)]
pub struct ScanOptions {
    pub start: Vec<u8>,
    pub end: Vec<u8>,
    pub prefix: Vec<u8>,
    pub reverse: bool,
    /// Entries per page (0 = server default).
    pub limit: u32,
    /// Bytes per page per shard (0 = server default).
    pub max_bytes: u64,
    /// Scan only this routing key's micro-shard.
    pub routing: Option<Vec<u8>>,
    pub consistency: ReadConsistency,
}

/// One page of a scan; pass `cursor` back to continue.
#[derive(Clone, Debug, Default)]
pub struct ScanPage {
    pub entries: Vec<Entry>,
    pub cursor: Option<Vec<u8>>,
}

/// Entries per scan page when the caller gives no limit.
pub const DEFAULT_SCAN_PAGE: u32 = 100;

/// How a conditional write turned out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteResult {
    Applied(WriteAck),
    /// The condition did not hold; nothing was written. The key's current
    /// value (None: it does not exist).
    ConditionFailed {
        current: Option<Versioned>,
    },
}
