//! One shard replica hosted on this node: its Raft handle, and the read and
//! write operations the RPC layer calls.

mod barrier;

use crate::apply::command::{Command, CommandResult};
use crate::apply::moves::MoveStates;
use crate::engine::SharedEngine;
use crate::error::{KvError, KvResult};
use crate::keys::{self, CF_DATA};
use crate::raft::acceptance::Acceptances;
use crate::raft::types::TypeConfig;
use crate::raft::Raft;
use crate::shard::freshness::Freshness;
use crate::shard::txn_window::FloorSamples;
use crate::shard::view::ReplicaView;
use openraft::errors::{ClientWriteError, RaftError as OpenraftError};
use shoal_types::{NodeId, ShardId};
use std::sync::Arc;

pub struct ShardReplica {
    pub id: ShardId,
    pub raft: Raft,
    engine: SharedEngine,
    /// Client requests this replica has served (for load reports).
    served: std::sync::atomic::AtomicU64,
    freshness: Arc<Freshness>,
    /// Set once removal begins (see [`ShardReplica::retire`]).
    retired: std::sync::atomic::AtomicBool,
    /// Fast-ack proposals waiting for their append (shared with the log store).
    acceptances: Arc<Acceptances>,
    /// Set while this replica may have forgotten a vote or acknowledged
    /// entries (see [`ShardReplica::in_quarantine`]).
    quarantined: std::sync::atomic::AtomicBool,
    /// The μshards of this shard with a move state, as last applied.
    moves: tokio::sync::watch::Receiver<Arc<MoveStates>>,
    /// What this replica had applied when, for the transaction floor.
    floor_samples: std::sync::Mutex<FloorSamples>,
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

/// What a read saw, and the applied version of the state it saw: the
/// read-your-writes token it returns.
#[derive(Debug)]
pub struct ReadAt<T> {
    pub value: T,
    pub applied: u64,
}

impl ShardReplica {
    pub fn new(
        id: ShardId,
        raft: Raft,
        engine: SharedEngine,
        freshness: Arc<Freshness>,
        acceptances: Arc<Acceptances>,
        moves: tokio::sync::watch::Receiver<Arc<MoveStates>>,
        opened_empty: bool,
    ) -> ShardReplica {
        ShardReplica {
            moves,
            quarantined: std::sync::atomic::AtomicBool::new(opened_empty),
            acceptances,
            id,
            raft,
            engine,
            served: Default::default(),
            freshness,
            retired: Default::default(),
            floor_samples: Default::default(),
        }
    }

    /// Samples this replica's applied version now, and returns the floor a
    /// transaction window of `window_ms` would have (see
    /// [`crate::shard::txn_window`]).
    pub fn sample_txn_floor(&self, now_ms: u64, window_ms: u64) -> Option<u64> {
        let mut samples = self.floor_samples.lock().unwrap_or_else(|p| p.into_inner());
        samples.observe(now_ms, self.applied(), window_ms);
        samples.floor_at(now_ms, window_ms)
    }

    /// The μshards of this shard with a move state, as last applied.
    pub fn move_states(&self) -> Arc<MoveStates> {
        self.moves.borrow().clone()
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

    /// Refuses unless this node leads the shard and its clock may stamp
    /// `command` (see [`crate::peer_clocks`]). Checked before proposing,
    /// so NOT_LEADER always means "not proposed": the client may then retry
    /// elsewhere without risking a double apply.
    fn check_may_propose(&self, command: &Command) -> KvResult<()> {
        self.ensure_leader()?;
        if command.is_timed() {
            self.freshness
                .clock_agrees()
                .map_err(|why| KvError::Unavailable(format!("shard {}: {why}", self.id)))?;
        }
        Ok(())
    }

    /// `NOT_LEADER` (with the leader's id when known) unless this node
    /// leads the shard now.
    pub fn ensure_leader(&self) -> KvResult<()> {
        match self.raft.as_leader() {
            Ok(_) => Ok(()),
            Err(forward) => Err(KvError::NotLeader {
                shard: self.id,
                leader: forward.leader_id.map(NodeId),
            }),
        }
    }

    /// Proposes `command` and waits until it is committed and applied.
    pub async fn propose(&self, command: Command) -> KvResult<CommandResult> {
        self.check_may_propose(&command)?;
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

    /// Proposes `command` and returns once it is in this leader's log,
    /// without waiting for a quorum (fast-ack). A proposal the Raft core
    /// refuses (not leader, a leadership transfer under way, the lease
    /// lapsed) is `NOT_LEADER`: never proposed, safe to retry elsewhere. An
    /// accepted write is lost only if this node stops leading before a
    /// quorum has it (a crash, or a partition that elects another leader).
    pub async fn propose_fast(&self, mut command: Command) -> KvResult<()> {
        self.check_may_propose(&command)?;
        let (ticket, accepted) = self.acceptances.register();
        if let Command::Mutate { accept_ticket, .. } = &mut command {
            *accept_ticket = ticket;
        }
        let (responder, done) = openraft::impls::ProgressResponder::complete_only();
        if let Err(e) = self.raft.client_write_ff(command, Some(responder)).await {
            self.acceptances.forget(ticket);
            tracing::warn!(shard_id = %self.id, error = %e, "raft stopped during a fast-ack write");
            return Err(KvError::Unavailable(format!("shard {}: {e}", self.id)));
        }
        tokio::select! {
            biased;
            Ok(_) = accepted => Ok(()),
            done = done => {
                self.acceptances.forget(ticket);
                match done {
                    // Committed and applied before the append was reported.
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(ClientWriteError::ForwardToLeader(f))) => Err(KvError::NotLeader {
                        shard: self.id,
                        leader: f.leader_id.map(NodeId),
                    }),
                    Ok(Err(e)) => Err(KvError::Internal(e.to_string())),
                    // The core dropped the request without appending it
                    // (an append would have answered first).
                    Err(_) => Err(KvError::Unavailable(format!("shard {}: raft stopped", self.id))),
                }
            }
        }
    }

    /// Runs `read` against one point-in-time state of this replica, so
    /// every key and range it reads comes from the same applied index. Call
    /// [`Self::read_barrier_for`] first: the view is taken after it, so it
    /// holds at least what the barrier waited for.
    ///
    /// Expiry is judged by the view's apply clock (see
    /// [`crate::shard::view`]). A strong read that found a record live only
    /// because that clock lags the leader's has the leader tick the clock
    /// up to its own and reads again: it then hides what any later
    /// condition would find expired. If the tick cannot be proposed (lost
    /// leadership, a clock the quorum disputes), the first answer stands:
    /// it agrees with the state machine, only the expiry shows late.
    ///
    /// **A replica that has begun to be removed answers no read**: the flag
    /// is checked after reading, so a read whose view may postdate the
    /// deletion fails with `UNKNOWN_SHARD` (the client refreshes its map and
    /// goes elsewhere) instead of answering "absent" with a valid token.
    pub async fn read<T>(&self, mode: ReadMode, read: impl Fn(&ReplicaView<'_>) -> KvResult<T>) -> KvResult<ReadAt<T>> {
        let wall_ms = (mode == ReadMode::Strong).then(crate::clock::wall_ms);
        let (first, lags_wall) = self.read_once(wall_ms, &read)?;
        if !lags_wall {
            return Ok(first);
        }
        let tick = Command::Tick {
            now_ms: crate::clock::wall_ms(),
        };
        // Bounded: a leader that just lost its quorum never commits it.
        match tokio::time::timeout(std::time::Duration::from_secs(1), self.propose(tick)).await {
            Ok(Ok(_)) => Ok(self.read_once(None, &read)?.0),
            Ok(Err(e)) => {
                tracing::debug!(shard_id = %self.id, error = %e, "apply clock not ticked for a read");
                Ok(first)
            }
            Err(_) => Ok(first),
        }
    }

    /// One read in one view; also says whether the view's apply clock
    /// lagged `wall_ms` for something the read returned.
    fn read_once<T>(
        &self,
        wall_ms: Option<u64>,
        read: &impl Fn(&ReplicaView<'_>) -> KvResult<T>,
    ) -> KvResult<(ReadAt<T>, bool)> {
        let mut answer: Option<KvResult<(ReadAt<T>, bool)>> = None;
        self.engine.read_view(&mut |view| {
            let view = ReplicaView::new(self.id, view, wall_ms);
            answer = Some(view.applied().and_then(|applied| {
                let value = read(&view)?;
                Ok((ReadAt { value, applied }, view.lags_wall()))
            }));
            Ok(())
        })?;
        if self.is_retired() {
            return Err(KvError::UnknownShard(self.id));
        }
        answer.unwrap_or_else(|| Err(KvError::Internal("the read view never ran".into())))
    }

    /// Whether this replica is still in quarantine. A replica opened with
    /// no Raft state at all — a new replica, or one whose data was wiped
    /// (amnesia) — cannot tell which it is, and an amnesic voter is
    /// dangerous: it may have voted in a term and acknowledged entries it
    /// no longer has, so its vote could elect a second leader in that term
    /// or a leader that lacks committed writes.
    ///
    /// **A replica opened empty votes only for a candidate whose log is
    /// empty too, until it has applied an entry of the leader it follows.**
    /// That leader's log holds every committed entry (Raft's leader
    /// completeness), and the replica's log now matches it up to an entry
    /// of the leader's own term, so it holds them too: from then on its
    /// vote is as good as any. The exception for empty candidates lets a
    /// brand-new group elect its first leader, where nothing can have been
    /// committed.
    pub fn in_quarantine(&self) -> bool {
        use std::sync::atomic::Ordering;
        if !self.quarantined.load(Ordering::SeqCst) {
            return false;
        }
        let metrics = self.metrics();
        let caught_up = metrics.vote.committed
            && metrics
                .last_applied
                .is_some_and(|applied| applied.leader_id == metrics.vote.leader_id);
        if caught_up {
            self.quarantined.store(false, Ordering::SeqCst);
            tracing::info!(shard_id = %self.id, "replica opened empty caught up with its leader: votes again");
        }
        !caught_up
    }

    /// Marks this replica as being removed: from now on it answers no read
    /// (see [`Self::read`]). Call before deleting its data.
    pub fn retire(&self) {
        self.retired.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn is_retired(&self) -> bool {
        self.retired.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// A copy of this replica's current Raft metrics.
    pub fn metrics(&self) -> openraft::RaftMetrics<TypeConfig> {
        use openraft::async_runtime::WatchReceiver;
        self.raft.metrics().borrow_watched().clone()
    }
}
