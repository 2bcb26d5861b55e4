//! One shard replica hosted on this node: its Raft handle, and the read and
//! write operations the RPC layer calls.

use crate::engine::{Direction, SharedEngine, Visit};
use crate::error::{KvError, KvResult};
use crate::keys::{self, ValueRecord, CF_DATA};
use crate::raft::types::{Command, CommandResult, Raft, RaftError, TypeConfig};
use crate::shard::freshness::Freshness;
use crate::types::{KeyspaceId, NodeId, ShardId, UshardId};
use openraft::errors::{ClientWriteError, LinearizableReadError, RaftError as OpenraftError};
use openraft::ReadPolicy;
use std::sync::Arc;

pub struct ShardReplica {
    pub id: ShardId,
    pub raft: Raft,
    engine: SharedEngine,
    /// Client requests this replica has served (for load reports).
    served: std::sync::atomic::AtomicU64,
    freshness: Arc<Freshness>,
}

/// What a read asks of the replica that serves it (docs/consistency.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMode {
    /// Linearizable: only the leader, under its lease or after ReadIndex.
    Strong,
    /// Any replica whose state is provably at most this many ms old.
    Bounded { max_staleness_ms: u64 },
    /// Any replica that has applied at least this version.
    AtLeast { version: u64 },
}

/// How much one micro-shard's scan may collect.
#[derive(Clone, Copy, Debug)]
pub struct ScanBudget {
    pub limit: usize,
    pub max_bytes: u64,
}

/// What one micro-shard's scan collected.
#[derive(Clone, Debug, Default)]
pub struct UshardScan {
    pub items: Vec<ScanItem>,
    /// True when no entry in range remains past `items`.
    pub exhausted: bool,
}

/// One entry returned by a scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanItem {
    pub ushard: UshardId,
    pub key: Vec<u8>,
    pub record: ValueRecord,
}

impl ShardReplica {
    pub fn new(id: ShardId, raft: Raft, engine: SharedEngine, freshness: Arc<Freshness>) -> ShardReplica {
        ShardReplica {
            id,
            raft,
            engine,
            served: Default::default(),
            freshness,
        }
    }

    pub fn freshness(&self) -> &Freshness {
        &self.freshness
    }

    /// This replica's applied version (a read-your-writes token for what
    /// it serves now).
    pub fn applied(&self) -> u64 {
        self.freshness.applied()
    }

    /// Counts one client request served here.
    pub fn count_served(&self) {
        self.served.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Client requests served here since the replica opened.
    pub fn served(&self) -> u64 {
        self.served.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Roughly how many bytes this shard's data takes on disk.
    pub fn approximate_bytes(&self) -> u64 {
        let (start, end) = keys::shard_range(self.id);
        self.engine.approximate_bytes(CF_DATA, &start, &end).unwrap_or(0)
    }

    /// Proposes `command` and waits until it is committed and applied.
    pub async fn propose(&self, command: Command) -> KvResult<CommandResult> {
        // Checked first so that NOT_LEADER always means "not proposed": the
        // client may then retry elsewhere without risking a double apply.
        if let Err(forward) = self.raft.as_leader() {
            return Err(KvError::NotLeader {
                shard: self.id,
                leader: forward.leader_id.map(NodeId),
            });
        }
        match self.raft.client_write(command).await {
            Ok(response) => Ok(response.data),
            Err(OpenraftError::APIError(ClientWriteError::ForwardToLeader(f))) => Err(KvError::NotLeader {
                shard: self.id,
                leader: f.leader_id.map(NodeId),
            }),
            Err(OpenraftError::APIError(ClientWriteError::LogEntryDiscarded(f))) => Err(KvError::LeadershipLost {
                shard: self.id,
                leader: f.leader_id.map(NodeId),
            }),
            Err(OpenraftError::APIError(e)) => Err(KvError::Internal(e.to_string())),
            // The core stopped (shutdown, storage failure) after the proposal
            // may have been appended: the outcome is unknown.
            Err(OpenraftError::Fatal(e)) => Err(KvError::LeadershipLost {
                shard: self.id,
                leader: None,
            })
            .inspect_err(|_| {
                tracing::warn!(shard_id = %self.id, error = %e, "raft stopped during a write");
            }),
        }
    }

    /// Hands `command` to Raft for replication and returns without waiting
    /// for a quorum (fast-ack). The write is lost if this node stops
    /// leading before a quorum has it.
    pub async fn propose_fast(&self, command: Command) -> KvResult<()> {
        if let Err(forward) = self.raft.as_leader() {
            return Err(KvError::NotLeader {
                shard: self.id,
                leader: forward.leader_id.map(NodeId),
            });
        }
        self.raft.client_write_ff(command, None).await.map_err(|e| {
            tracing::warn!(shard_id = %self.id, error = %e, "raft stopped during a fast-ack write");
            KvError::Unavailable(format!("shard {}: {e}", self.id))
        })
    }

    /// Waits until a read in `mode` may be served from local state, or
    /// refuses: NOT_LEADER / UNAVAILABLE for strong reads, STALE_REPLICA
    /// when this replica cannot show the freshness asked for within `wait`.
    pub async fn read_barrier_for(&self, mode: ReadMode, tuning: &crate::config::ReadTuning) -> KvResult<()> {
        let wait = std::time::Duration::from_millis(tuning.follower_wait_ms);
        match mode {
            ReadMode::Strong => self.read_barrier().await,
            ReadMode::AtLeast { version } => self.wait_applied(version, wait).await,
            ReadMode::Bounded { max_staleness_ms } => {
                let deadline = tokio::time::Instant::now() + wait;
                loop {
                    let now = crate::clock::wall_ms();
                    let needed = match self.freshness.staleness_ms(now, tuning.max_clock_offset_ms) {
                        Ok(staleness) if staleness <= max_staleness_ms => return Ok(()),
                        // Fresh stamps arrive with every leader heartbeat.
                        Ok(_) | Err(u64::MAX) => None,
                        Err(index) => Some(index),
                    };
                    let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
                    if remaining.is_zero() {
                        return Err(KvError::StaleReplica(format!(
                            "shard {}: this replica cannot show it is within {max_staleness_ms} ms of the primary",
                            self.id
                        )));
                    }
                    match needed {
                        Some(index) => {
                            let _ = self.wait_applied(index, remaining).await;
                        }
                        None => tokio::time::sleep(remaining.min(std::time::Duration::from_millis(10))).await,
                    }
                }
            }
        }
    }

    /// Waits up to `wait` for this replica to apply `version`.
    async fn wait_applied(&self, version: u64, wait: std::time::Duration) -> KvResult<()> {
        let mut applied = self.freshness.applied_watch();
        let reached = tokio::time::timeout(wait, applied.wait_for(|a| *a >= version)).await;
        match reached {
            Ok(Ok(_)) => Ok(()),
            _ => Err(KvError::StaleReplica(format!(
                "shard {}: this replica has applied {} of the {version} asked for",
                self.id,
                self.applied()
            ))),
        }
    }

    /// Waits until a strong read may be served here: this node is the
    /// leader and has applied everything committed before the read began.
    /// Leadership is shown by the quorum lease when it holds (no round
    /// trip), else by a quorum round (ReadIndex).
    pub async fn read_barrier(&self) -> KvResult<()> {
        let lease: Result<_, RaftError<LinearizableReadError<TypeConfig>>> =
            self.raft.ensure_linearizable(ReadPolicy::LeaseRead).await;
        match lease {
            Ok(_) => return Ok(()),
            Err(OpenraftError::APIError(LinearizableReadError::ForwardToLeader(f)))
                if f.leader_id.is_some_and(|l| l != self.raft_id()) =>
            {
                return Err(KvError::NotLeader {
                    shard: self.id,
                    leader: f.leader_id.map(NodeId),
                })
            }
            // Lease unclear (expired, not yet acknowledged): ask a quorum.
            Err(_) => {}
        }
        let result: Result<_, RaftError<LinearizableReadError<TypeConfig>>> =
            self.raft.ensure_linearizable(ReadPolicy::ReadIndex).await;
        match result {
            Ok(_) => Ok(()),
            Err(OpenraftError::APIError(LinearizableReadError::ForwardToLeader(f))) => Err(KvError::NotLeader {
                shard: self.id,
                leader: f.leader_id.map(NodeId),
            }),
            Err(OpenraftError::APIError(LinearizableReadError::QuorumNotEnough(e))) => {
                Err(KvError::Unavailable(format!("shard {}: {e}", self.id)))
            }
            Err(OpenraftError::Fatal(e)) => Err(KvError::Unavailable(format!("shard {}: {e}", self.id))),
        }
    }

    fn raft_id(&self) -> u64 {
        use openraft::async_runtime::WatchReceiver;
        self.raft.metrics().borrow_watched().id
    }

    /// Reads a key from local state; an expired key is absent. Call
    /// [`Self::read_barrier_for`] first.
    pub fn get_local(&self, keyspace: KeyspaceId, ushard: UshardId, key: &[u8]) -> KvResult<Option<ValueRecord>> {
        let raw = self
            .engine
            .get(CF_DATA, &keys::data_key(self.id, keyspace, ushard, key))?;
        let record = raw
            .map(|bytes| ValueRecord::decode(&bytes).ok_or_else(|| KvError::Internal("corrupt value record".into())))
            .transpose()?;
        Ok(record.filter(|r| r.is_live_at(crate::clock::wall_ms())))
    }

    /// Collects entries of one micro-shard whose user keys lie in
    /// `[lower, upper)` (`upper = None`: no bound), in `direction` order,
    /// stopping once it holds `budget.limit` entries or `budget.max_bytes`
    /// bytes of keys and values.
    pub fn scan_ushard_local(
        &self,
        keyspace: KeyspaceId,
        ushard: UshardId,
        lower: &[u8],
        upper: Option<&[u8]>,
        direction: Direction,
        budget: ScanBudget,
    ) -> KvResult<UshardScan> {
        let prefix = keys::ushard_prefix(self.id, keyspace, ushard);
        let mut start = prefix.clone();
        start.extend_from_slice(lower);
        let end = match upper {
            Some(upper) => {
                let mut end = prefix.clone();
                end.extend_from_slice(upper);
                end
            }
            None => keys::prefix_successor(&prefix).unwrap_or_else(|| vec![0xFF; prefix.len() + 1]),
        };
        let mut scan = UshardScan {
            items: Vec::new(),
            exhausted: true,
        };
        if start >= end {
            return Ok(scan);
        }
        let mut bytes = 0u64;
        let now = crate::clock::wall_ms();
        self.engine.scan(CF_DATA, &start, &end, direction, &mut |key, value| {
            if scan.items.len() >= budget.limit || bytes >= budget.max_bytes {
                // There is at least one more entry past what we hold.
                scan.exhausted = false;
                return Ok(Visit::Stop);
            }
            let record = ValueRecord::decode(value)
                .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "corrupt value record"))?;
            if !record.is_live_at(now) {
                return Ok(Visit::Continue);
            }
            let user_key = keys::user_key_of(key).to_vec();
            bytes += (user_key.len() + record.value.len()) as u64;
            scan.items.push(ScanItem {
                ushard,
                key: user_key,
                record,
            });
            Ok(Visit::Continue)
        })?;
        Ok(scan)
    }

    /// A copy of this replica's current Raft metrics.
    pub fn metrics(&self) -> openraft::RaftMetrics<TypeConfig> {
        use openraft::async_runtime::WatchReceiver;
        self.raft.metrics().borrow_watched().clone()
    }
}
