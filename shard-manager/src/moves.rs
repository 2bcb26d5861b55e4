//! Driving μshard moves through their phases (docs/moves.md), from the
//! durable move records: every tick, each active move gets its next step,
//! and a restarted shard manager picks each up where its record says.
//!
//! - `Copying`: the destination's primary runs the move up to activation
//!   (`Mover/Run`: copy, catch up, freeze and release the source, activate;
//!   each step is idempotent, so a new run resumes a broken one); then the
//!   map flips (`Manager::move_activated`). At most `max_concurrent` moves
//!   and replica changes run at once, each move with an equal share of the
//!   byte budget.
//! - `Activated`: after the grace period the source drops its copy.
//! - `Aborting`: the destination abandons first (if it had activated, the
//!   move rolls forward instead), then the source serves again.
//!
//! Only one call per move is in flight at a time.

use crate::manager::Manager;
use crate::model::{MovePhase, MoveRecord, NodeId, ShardId};
use shoal_config::manager::MoveBudget;
use shoal_proto::mover::mover_client::MoverClient;
use shoal_proto::mover::{self as wire, MoveTarget};
use shoal_proto::status_meta;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::Channel;

/// What the shard manager last heard of a copying move from its
/// destination (not durable; for `GetMove` and the CLI's progress).
#[derive(Clone, Debug, Default)]
pub struct MoveProgress {
    pub phase: String,
    pub bytes_copied: u64,
    pub elapsed_ms: u64,
}

/// The moves being driven and their progress.
#[derive(Default)]
pub struct MoveDriver {
    in_flight: Mutex<HashSet<u64>>,
    progress: Mutex<HashMap<u64, MoveProgress>>,
    /// The task of each move's latest step, so that stopping the shard
    /// manager stops them (they hold the manager, and so its store).
    tasks: Mutex<HashMap<u64, tokio::task::JoinHandle<()>>>,
}

impl MoveDriver {
    pub fn progress(&self, id: u64) -> Option<MoveProgress> {
        self.progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }

    fn set_progress(&self, id: u64, progress: MoveProgress) {
        self.progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, progress);
    }

    /// Claims `id` for one call; false when a call for it is in flight.
    fn claim(&self, id: u64) -> bool {
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).insert(id)
    }

    fn release(&self, id: u64) {
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    }

    /// Starts the next step of every active move that has no call in flight.
    pub fn tick(self: &Arc<Self>, manager: &Arc<Manager>, budget: &MoveBudget) {
        if let Err(e) = manager.retire_merged_shards() {
            tracing::warn!(error = %e, "retiring merged shards failed; retried next tick");
        }
        let moves = manager.active_moves();
        // Replica changes (repair, drain, rebalancing) share the budget:
        // each holds a slot, and the byte rate is split over all of them.
        let changing = manager.membership_changes_in_flight();
        let copying = moves.iter().filter(|m| m.phase == MovePhase::Copying).count() as u64;
        let sharing = (copying + changing as u64).clamp(1, u64::from(budget.max_concurrent));
        let share = budget.bytes_per_sec / sharing;
        let mut copy_slots = (budget.max_concurrent as usize).saturating_sub(changing);
        for record in moves {
            if record.phase == MovePhase::Copying {
                // Oldest first: a move waits until one of the slots frees.
                if copy_slots == 0 {
                    continue;
                }
                copy_slots -= 1;
            }
            if record.phase == MovePhase::Activated
                && wall_ms().saturating_sub(record.activated_ms) < budget.release_grace_ms
            {
                continue;
            }
            if !self.claim(record.id) {
                continue;
            }
            let (driver, manager) = (self.clone(), manager.clone());
            let id = record.id;
            let task = tokio::spawn(async move {
                if let Err(e) = driver.step(&manager, record, share).await {
                    tracing::debug!(move_id = id, error = %e, "move step failed; retried next tick");
                }
                driver.release(id);
            });
            self.tasks.lock().unwrap_or_else(|p| p.into_inner()).insert(id, task);
        }
    }

    /// Stops every step under way and waits for them to go.
    pub async fn stop(&self) {
        let tasks: Vec<_> = self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, task)| task)
            .collect();
        for task in tasks {
            task.abort();
            let _ = task.await;
        }
    }

    async fn step(&self, manager: &Arc<Manager>, record: MoveRecord, bytes_per_sec: u64) -> anyhow::Result<()> {
        let nodes = Nodes::of(manager);
        match record.phase {
            MovePhase::Copying => {
                let poller = self.poll_progress(manager, &nodes, &record);
                let run = nodes.on_leader(record.to, |mut c| {
                    let request = wire::RunRequest {
                        target: target(&record, record.to),
                        source_shard: record.from.0,
                        bytes_per_sec,
                    };
                    async move { c.run(request).await }
                });
                let result = tokio::select! {
                    result = tokio::time::timeout(RUN_TIMEOUT, run) => result
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer from the destination within {RUN_TIMEOUT:?}").into())),
                    // Aborted meanwhile: dropping the call cancels the run
                    // on the destination; the abort's steps come next.
                    () = poller => return Ok(()),
                };
                match result {
                    Ok(activated) => {
                        // What the run copied in all, kept for `GetMove`
                        // once the move is past copying.
                        let elapsed_ms = wall_ms().saturating_sub(record.created_ms);
                        self.set_progress(
                            record.id,
                            MoveProgress {
                                phase: "activated".into(),
                                bytes_copied: activated.bytes_copied,
                                elapsed_ms,
                            },
                        );
                        manager.move_activated(record.id)?;
                    }
                    // The shards refuse the move for good (another move of
                    // the μshard, a step out of order): undo it.
                    Err(e @ CallError::Conflict(_)) => {
                        manager.abort_move(record.id, &e.to_string())?;
                    }
                    Err(e) => {
                        manager.set_move_phase(record.id, MovePhase::Copying, &e.to_string())?;
                        return Err(e.into());
                    }
                }
            }
            MovePhase::Activated => {
                nodes
                    .take_step(&record, record.from, wire::Step::DropData, record.to)
                    .await?;
                manager.set_move_phase(record.id, MovePhase::Done, "")?;
            }
            MovePhase::Aborting => {
                match nodes
                    .take_step(&record, record.to, wire::Step::Abandon, record.from)
                    .await
                {
                    Ok(()) => {}
                    // The destination activated first: roll forward.
                    Err(CallError::RollsForward) => {
                        manager.move_activated(record.id)?;
                        return Ok(());
                    }
                    Err(e) => return Err(e.into()),
                }
                nodes
                    .take_step(&record, record.from, wire::Step::AbortExport, record.to)
                    .await?;
                manager.set_move_phase(record.id, MovePhase::Aborted, &record.error)?;
            }
            MovePhase::Done | MovePhase::Aborted => {}
        }
        Ok(())
    }

    /// Asks the destination's primary for the run's progress every 200 ms;
    /// returns once the move is no longer copying (it was aborted).
    async fn poll_progress(&self, manager: &Manager, nodes: &Nodes, record: &MoveRecord) {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if manager
                .move_record(record.id)
                .map_or(true, |m| m.phase != MovePhase::Copying)
            {
                return;
            }
            let status = nodes
                .on_leader(record.to, |mut c| async move {
                    c.status(wire::StatusRequest { move_id: record.id }).await
                })
                .await;
            if let Ok(s) = status {
                self.set_progress(
                    record.id,
                    MoveProgress {
                        phase: s.phase,
                        bytes_copied: s.bytes_copied,
                        elapsed_ms: s.elapsed_ms,
                    },
                );
            }
        }
    }
}

/// How long one run of a move's copy may take before it is tried again.
const RUN_TIMEOUT: Duration = Duration::from_secs(300);

/// How long any other call to a node may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a call to a shard's leader failed.
#[derive(Debug, thiserror::Error)]
enum CallError {
    /// The node answered `MOVE_CONFLICT`: the move can never go on.
    #[error("MOVE_CONFLICT: {0}")]
    Conflict(String),
    /// An abandon refused because the destination activated.
    #[error("{}", shoal_proto::REFUSED_ROLLS_FORWARD)]
    RollsForward,
    /// Anything else (unreachable, refused, timed out): tried again later.
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

fn target(record: &MoveRecord, shard: ShardId) -> Option<MoveTarget> {
    Some(MoveTarget {
        shard_id: shard.0,
        keyspace_id: record.keyspace_id.0,
        ushard: record.ushard.0,
        move_id: record.id,
    })
}

fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The nodes a step talks to: each shard's primary first, then its other
/// voters, following `NOT_LEADER` hints.
struct Nodes {
    addrs: HashMap<NodeId, String>,
    replicas: HashMap<ShardId, Vec<NodeId>>,
}

impl Nodes {
    fn of(manager: &Manager) -> Nodes {
        let state = manager.snapshot();
        Nodes {
            addrs: state.nodes.values().map(|n| (n.id, n.client_addr.clone())).collect(),
            replicas: state
                .shards
                .values()
                .map(|s| {
                    let mut order: Vec<NodeId> = s.primary.into_iter().collect();
                    order.extend(s.voters.iter().copied().filter(|v| Some(*v) != s.primary));
                    (s.id, order)
                })
                .collect(),
        }
    }

    fn client(&self, node: NodeId) -> anyhow::Result<MoverClient<Channel>> {
        let addr = self
            .addrs
            .get(&node)
            .ok_or_else(|| anyhow::anyhow!("node {node} has no address"))?;
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(Duration::from_millis(500))
            .connect_lazy();
        Ok(MoverClient::new(channel).max_decoding_message_size(64 << 20))
    }

    /// Calls `shard`'s leader: the hinted node after a `NOT_LEADER`, else
    /// each replica in turn, once each.
    async fn on_leader<T, F, Fut>(&self, shard: ShardId, mut rpc: F) -> Result<T, CallError>
    where
        F: FnMut(MoverClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut order = self.replicas.get(&shard).cloned().unwrap_or_default();
        let mut last = format!("shard {shard} has no replicas");
        let mut tried = HashSet::new();
        while let Some(node) = order.first().copied() {
            order.remove(0);
            if !tried.insert(node) {
                continue;
            }
            match rpc(self.client(node)?).await {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) if status_meta::error_code(&status) == Some("MOVE_CONFLICT") => {
                    return Err(CallError::Conflict(status.message().to_string()));
                }
                Err(status) => {
                    if let Some(hint) = status_meta::leader_hint(&status) {
                        order.insert(0, NodeId(hint));
                    }
                    last = format!("node {node}: {}", status.message());
                }
            }
        }
        Err(anyhow::anyhow!("shard {shard}: {last}").into())
    }

    /// One step on `shard`; a refusal is an error naming why.
    async fn take_step(
        &self,
        record: &MoveRecord,
        shard: ShardId,
        step: wire::Step,
        peer: ShardId,
    ) -> Result<(), CallError> {
        let call = self.on_leader(shard, |mut c| {
            let request = wire::StepRequest {
                target: target(record, shard),
                step: step as i32,
                peer_shard: peer.0,
            };
            async move { c.take_step(request).await }
        });
        let answer = tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .map_err(|_| anyhow::anyhow!("no answer from shard {shard} within {CALL_TIMEOUT:?}"))??;
        match answer.refused.as_str() {
            "" => Ok(()),
            shoal_proto::REFUSED_ROLLS_FORWARD => Err(CallError::RollsForward),
            why => Err(anyhow::anyhow!("{why}").into()),
        }
    }
}
