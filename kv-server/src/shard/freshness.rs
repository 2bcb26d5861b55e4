//! How fresh a replica's state provably is: the ground of bounded-staleness
//! reads (docs/consistency.md).
//!
//! A leader vouches, on every AppendEntries it sends, for a
//! [`FreshnessStamp`]: "every write acknowledged before `as_of_ms` (my wall
//! clock) has a version ≤ `applied`". It holds because
//! - the leader acknowledges a write only after applying it, so its applied
//!   version covers every write it acknowledged before now (versions grow
//!   with the log: index plus the shard's version base);
//! - it vouches only once it has applied an entry of its own term, so
//!   writes acknowledged by earlier leaders are covered too;
//! - `as_of_ms` is capped at its quorum lease (last quorum-acknowledged send
//!   time + lease): before that no other leader can have been elected, so a
//!   deposed leader that still reaches a minority cannot keep stamps fresh;
//! - it stops vouching when it starts a leadership transfer, since a
//!   transfer lets the target be elected inside the lease.
//!
//! - it vouches only while a quorum of voters agrees with its wall clock
//!   (see [`crate::peer_clocks`]), so a clock jump cannot vouch ahead.
//!
//! A follower or learner that accepted the message keeps the newest stamp;
//! once it has applied `applied`, its state is at most
//! `now - as_of_ms + max_clock_offset` old, the offset covering the skew
//! between the two wall clocks. That needs the follower's own clock within
//! the offset of the leader's: a clock behind by more would make `now -
//! as_of_ms` stand still while the state ages. **A follower whose clock
//! reads a received stamp as more than the offset in its future proves no
//! staleness at all** until a stamp arrives that its clock agrees with.

use crate::peer_clocks::PeerClocks;
use crate::raft::Raft;
use openraft::async_runtime::WatchReceiver;
use openraft::{Instant as _, ServerState};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::watch;

/// A leader's promise; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FreshnessStamp {
    pub applied: u64,
    pub as_of_ms: u64,
}

/// What a leader's clock must agree with before it stamps anything.
pub struct ClockGuard {
    pub me: u64,
    pub clocks: Arc<PeerClocks>,
    pub max_offset_ms: u64,
}

pub struct Freshness {
    raft: OnceLock<Raft>,
    clock: ClockGuard,
    applied: watch::Receiver<u64>,
    /// openraft's leader lease (its `election_timeout_max`).
    lease: Duration,
    /// Newest stamp received from a leader, with this node's wall clock
    /// when it arrived.
    received: Mutex<Option<(FreshnessStamp, u64)>>,
    /// The term in which this node started a leadership transfer.
    transferring_in_term: Mutex<Option<u64>>,
}

impl Freshness {
    pub fn new(applied: watch::Receiver<u64>, lease: Duration, clock: ClockGuard) -> Freshness {
        Freshness {
            raft: OnceLock::new(),
            clock,
            applied,
            lease,
            received: Mutex::new(None),
            transferring_in_term: Mutex::new(None),
        }
    }

    /// Connects the shard's Raft handle (created after the network that
    /// sends our stamps).
    pub fn attach(&self, raft: Raft) {
        let _ = self.raft.set(raft);
    }

    /// The version of this replica's last applied entry.
    pub fn applied(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Whether this node's wall clock may stamp writes and freshness: a
    /// majority of the shard's voters have clocks within the offset budget
    /// of ours (see [`crate::peer_clocks`]).
    pub fn clock_agrees(&self) -> Result<(), String> {
        let Some(raft) = self.raft.get() else {
            return Ok(());
        };
        let voters: Vec<u64> = raft.voter_ids().collect();
        self.clock.clocks.check_quorum(
            self.clock.me,
            &voters,
            self.clock.max_offset_ms,
            crate::clock::wall_ms(),
        )
    }

    /// Call before asking Raft to hand leadership to another node.
    pub fn note_transfer(&self) {
        if let Some(raft) = self.raft.get() {
            let term = raft.metrics().borrow_watched().current_term;
            *self.transferring_in_term.lock().unwrap_or_else(|p| p.into_inner()) = Some(term);
        }
    }

    /// What this node vouches for as leader, now; `None` when it is not a
    /// leader holding its quorum lease with an entry of its term applied.
    pub fn leader_stamp(&self, now_wall_ms: u64) -> Option<FreshnessStamp> {
        let raft = self.raft.get()?;
        let (acked, term) = {
            let watch = raft.metrics();
            let metrics = watch.borrow_watched();
            if metrics.state != ServerState::Leader {
                return None;
            }
            let own_term_applied = metrics
                .last_applied
                .as_ref()
                .is_some_and(|id| id.committed_leader_id().term == metrics.current_term);
            if !own_term_applied {
                return None;
            }
            (metrics.last_quorum_acked?, metrics.current_term)
        };
        if *self.transferring_in_term.lock().unwrap_or_else(|p| p.into_inner()) == Some(term) {
            return None;
        }
        // `as_of` is read off our wall clock: vouch only with a clock a
        // quorum agrees with, or a jump ahead would vouch for the future.
        if self.clock_agrees().is_err() {
            return None;
        }
        // Read after the metrics: every write acknowledged so far is applied.
        let applied = *self.applied.borrow();
        let since_ack = acked.elapsed();
        let beyond_lease = since_ack.saturating_sub(self.lease);
        Some(FreshnessStamp {
            applied,
            as_of_ms: now_wall_ms.saturating_sub(beyond_lease.as_millis() as u64),
        })
    }

    /// Keeps `stamp` if it is newer than the one held. Call only for a
    /// message this replica's Raft accepted.
    pub fn observe(&self, stamp: FreshnessStamp) {
        let mut held = self.received.lock().unwrap_or_else(|p| p.into_inner());
        if held.is_none_or(|(h, _)| stamp.as_of_ms > h.as_of_ms) {
            *held = Some((stamp, crate::clock::wall_ms()));
        }
    }

    /// At most how old this replica's state is at `now_wall_ms`, in ms; or
    /// the applied version it still needs to reach before it can say.
    pub fn staleness_ms(&self, now_wall_ms: u64, max_clock_offset_ms: u64) -> Result<u64, u64> {
        if let Some(own) = self.leader_stamp(now_wall_ms) {
            return Ok(now_wall_ms.saturating_sub(own.as_of_ms));
        }
        let Some((stamp, received_at_ms)) = *self.received.lock().unwrap_or_else(|p| p.into_inner()) else {
            return Err(u64::MAX);
        };
        if stamp.as_of_ms > received_at_ms + max_clock_offset_ms {
            // Our clock is behind the leader's by more than the budget: it
            // cannot measure how old the state is (see the module docs).
            return Err(u64::MAX);
        }
        if self.applied() < stamp.applied {
            return Err(stamp.applied);
        }
        Ok(now_wall_ms.saturating_sub(stamp.as_of_ms) + max_clock_offset_ms)
    }

    /// A receiver of the applied version, to wait for it to move.
    pub fn applied_watch(&self) -> watch::Receiver<u64> {
        self.applied.clone()
    }
}
