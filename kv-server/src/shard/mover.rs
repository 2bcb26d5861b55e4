//! Running a μshard move on the destination's primary: begin the export at
//! the source, copy its pages, replay its change log, freeze it, replay the
//! rest, release it at the source and activate here (docs/moves.md). Every step is
//! idempotent, so a run that stopped (a primary change, a crash) is
//! resumed by running again from the start; **one run per move at a time
//! on a node** (a second caller waits for the first), so no stale page of
//! an older run can land between a run's last replay and its activation.

use crate::apply::command::{Command, MoveStep, MovedRecord, Outcome};
use crate::apply::moves::UshardState;
use crate::error::{KvError, KvResult};
use crate::keys::ValueRecord;
use crate::layout::ClusterLayout;
use crate::shard::host::NodeHost;
use shoal_proto::mover::mover_client::MoverClient;
use shoal_proto::mover::{self as wire, MoveTarget};
use shoal_proto::status_meta;
use shoal_types::{KeyspaceId, NodeId, ShardId, UshardId, Version};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// Largest page or change-log batch asked of the source, and so the
/// largest `Ingest` entry proposed here (a record bigger than it still
/// travels alone).
const PAGE_BYTES: u64 = 256 * 1024;

/// A change-log read with fewer changes than this counts as caught up:
/// the source is frozen next.
const CAUGHT_UP_CHANGES: usize = 32;

/// How long a run keeps trying to reach the source's leader for one call.
const SOURCE_CALL_DEADLINE: Duration = Duration::from_secs(10);

/// A move to run: which μshard, from which shard into which.
#[derive(Clone, Copy, Debug)]
pub struct MoveSpec {
    pub move_id: u64,
    pub keyspace: KeyspaceId,
    pub ushard: UshardId,
    pub source: ShardId,
    pub dest: ShardId,
    /// Copy budget, bytes per second; 0 = unlimited.
    pub bytes_per_sec: u64,
}

/// What a finished run reports.
#[derive(Clone, Copy, Debug)]
pub struct Activated {
    pub activated_version: Version,
    pub frozen_at: Version,
    pub bytes_copied: u64,
}

/// Where a run is, for `Mover/Status`.
#[derive(Clone, Debug)]
pub struct Progress {
    pub phase: &'static str,
    pub bytes_copied: u64,
    pub started: Instant,
    pub error: String,
}

/// The runs of this node, one per move.
#[derive(Default)]
pub struct MoveRuns {
    progress: Mutex<HashMap<u64, Progress>>,
    /// Held by the run of each move: a second run of it waits.
    locks: Mutex<HashMap<u64, Arc<tokio::sync::Mutex<()>>>>,
}

impl MoveRuns {
    pub fn progress(&self, move_id: u64) -> Option<Progress> {
        self.progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&move_id)
            .cloned()
    }

    fn set(&self, move_id: u64, phase: &'static str, bytes_copied: u64) {
        let mut all = self.progress.lock().unwrap_or_else(|p| p.into_inner());
        let entry = all.entry(move_id).or_insert_with(|| Progress {
            phase,
            bytes_copied: 0,
            started: Instant::now(),
            error: String::new(),
        });
        entry.phase = phase;
        entry.bytes_copied = bytes_copied;
    }

    fn fail(&self, move_id: u64, error: &KvError) {
        if let Some(p) = self
            .progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(&move_id)
        {
            p.phase = "failed";
            p.error = error.to_string();
        }
    }

    fn lock_of(&self, move_id: u64) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(move_id)
            .or_default()
            .clone()
    }

    /// Runs `spec` to activation (or joins the run already going).
    pub async fn run(&self, host: &NodeHost, spec: MoveSpec) -> KvResult<Activated> {
        let lock = self.lock_of(spec.move_id);
        let _running = lock.lock().await;
        self.set(spec.move_id, "begin", 0);
        let result = run_move(host, spec, self).await;
        if let Err(e) = &result {
            self.fail(spec.move_id, e);
        }
        result
    }
}

async fn run_move(host: &NodeHost, spec: MoveSpec, runs: &MoveRuns) -> KvResult<Activated> {
    let dest = host.shard(spec.dest)?;
    // Only the destination's leader runs a move (it proposes every step).
    dest.ensure_leader()?;
    // Activated already (a run whose answer was lost): nothing to do.
    let ours = dest.move_states().get(&(spec.keyspace, spec.ushard)).cloned();
    if ours == Some(UshardState::Owned { move_id: spec.move_id }) {
        return Ok(Activated {
            activated_version: Version(0),
            frozen_at: Version(0),
            bytes_copied: 0,
        });
    }
    let source = SourceLeader::new(host.layout(), spec);
    let propose = |step: MoveStep| {
        let dest = dest.clone();
        async move {
            let command = Command::Move {
                keyspace: spec.keyspace,
                ushard: spec.ushard,
                move_id: spec.move_id,
                step,
            };
            let result = dest.propose(command).await?;
            match result.outcome {
                Outcome::Applied => Ok(result.version),
                Outcome::MoveRefused(why) => Err(KvError::MoveConflict(why)),
                other => Err(KvError::Internal(format!("a move step applied as {other:?}"))),
            }
        }
    };

    source.step(wire::Step::BeginExport, spec.dest).await?;
    propose(MoveStep::BeginIngest { from: spec.source }).await?;
    // Fault injection: hold the run between its phases, so a test can
    // kill or pause something in each (docs/failpoints.md).
    crate::failpoints::delay("move-between-steps").await;

    // Copy a consistent page at a time (each page from a view taken after
    // the export began), throttled to the budget.
    let started = Instant::now();
    let mut copied = 0u64;
    runs.set(spec.move_id, "copying", copied);
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = source.page(after.as_deref()).await?;
        if let Some(last) = page.records.last() {
            after = Some(last.key.clone());
            copied += records_bytes(&page.records);
            propose(MoveStep::Ingest {
                records: page.records,
                as_of: page.as_of,
            })
            .await?;
            runs.set(spec.move_id, "copying", copied);
            throttle(started, copied, spec.bytes_per_sec).await;
        }
        if !page.more {
            break;
        }
    }

    crate::failpoints::delay("move-between-steps").await;

    // Replay the change log from the start of the export; freeze once
    // caught up; replay what came before the freeze; activate.
    runs.set(spec.move_id, "catching-up", copied);
    let mut replayed = Version(0);
    let frozen_at = loop {
        let tail = source.tail(replayed).await?;
        // Few changes left behind: writes pause only for about one round.
        let caught_up = tail.changes.len() < CAUGHT_UP_CHANGES;
        let drained = tail.changes.is_empty();
        if let Some((last, _)) = tail.changes.last() {
            let last = *last;
            let records: Vec<MovedRecord> = tail.changes.into_iter().flat_map(|(_, records)| records).collect();
            copied += records_bytes(&records);
            propose(MoveStep::Ingest { records, as_of: last }).await?;
            replayed = last;
            runs.set(spec.move_id, "catching-up", copied);
        }
        if tail.frozen_at.0 != 0 {
            if drained {
                break tail.frozen_at;
            }
            continue;
        }
        if caught_up {
            runs.set(spec.move_id, "freezing", copied);
            let frozen_at = source.step(wire::Step::Freeze, spec.dest).await?;
            // A deliberate bug for proving the fault-injection suite can
            // catch it: activate without replaying what came in before the
            // freeze (docs/failpoints.md).
            if crate::failpoints::is_on("move-activate-early") {
                break frozen_at;
            }
        }
    };
    runs.set(spec.move_id, "activating", copied);
    crate::failpoints::delay("move-between-steps").await;
    let clients = source.clients().await?;
    // The source stops serving (reads too) before this shard starts.
    let released_at = source.step(wire::Step::Release, spec.dest).await?;
    // Versions here start above the release, not only the freeze: a frozen
    // source still served reads until then, and a transaction whose
    // snapshot came from one of them must see every later write here as
    // newer than its snapshot (docs/transactions.md, "Scope").
    let activated_version = propose(MoveStep::Activate {
        as_of: released_at.max(frozen_at),
        clients,
    })
    .await?;
    runs.set(spec.move_id, "activated", copied);
    Ok(Activated {
        activated_version,
        frozen_at,
        bytes_copied: copied,
    })
}

fn records_bytes(records: &[MovedRecord]) -> u64 {
    records
        .iter()
        .map(|r| (r.key.len() + r.record.as_ref().map_or(0, |v| v.value.len())) as u64)
        .sum()
}

/// Sleeps as long as copying `copied` bytes since `started` is ahead of
/// `bytes_per_sec`.
async fn throttle(started: Instant, copied: u64, bytes_per_sec: u64) {
    if bytes_per_sec == 0 {
        return;
    }
    let due = Duration::from_secs_f64(copied as f64 / bytes_per_sec as f64);
    if let Some(ahead) = due.checked_sub(started.elapsed()) {
        tokio::time::sleep(ahead).await;
    }
}

struct Page {
    records: Vec<MovedRecord>,
    as_of: Version,
    more: bool,
}

struct Tail {
    changes: Vec<(Version, Vec<MovedRecord>)>,
    frozen_at: Version,
}

/// The source shard's leader, found through the layout and followed on
/// `NOT_LEADER` hints.
struct SourceLeader {
    layout: Arc<ClusterLayout>,
    spec: MoveSpec,
    channels: Mutex<HashMap<NodeId, Channel>>,
    leader: Mutex<Option<NodeId>>,
}

impl SourceLeader {
    fn new(layout: Arc<ClusterLayout>, spec: MoveSpec) -> SourceLeader {
        SourceLeader {
            layout,
            spec,
            channels: Mutex::new(HashMap::new()),
            leader: Mutex::new(None),
        }
    }

    fn target(&self) -> Option<MoveTarget> {
        Some(MoveTarget {
            shard_id: self.spec.source.0,
            keyspace_id: self.spec.keyspace.0,
            ushard: self.spec.ushard.0,
            move_id: self.spec.move_id,
        })
    }

    /// The nodes to try, the last known leader first.
    fn candidates(&self) -> Vec<NodeId> {
        let mut nodes: Vec<NodeId> = Vec::new();
        if let Some(leader) = *self.leader.lock().unwrap_or_else(|p| p.into_inner()) {
            nodes.push(leader);
        }
        if let Some(shard) = self.layout.shard(self.spec.source) {
            nodes.extend(shard.primary);
            nodes.extend(shard.replicas.iter().copied());
        }
        nodes.dedup();
        let mut seen = std::collections::HashSet::new();
        nodes.retain(|n| seen.insert(*n));
        nodes
    }

    fn client(&self, node: NodeId) -> KvResult<MoverClient<Channel>> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(channel) = channels.get(&node) {
            return Ok(MoverClient::new(channel.clone()).max_decoding_message_size(64 << 20));
        }
        let addr =
            self.layout.node(node).map(|n| n.client_addr.clone()).ok_or_else(|| {
                KvError::Unavailable(format!("node {node} of shard {} has no address", self.spec.source))
            })?;
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| KvError::Internal(e.to_string()))?
            .connect_timeout(Duration::from_millis(500))
            .timeout(Duration::from_secs(5))
            .connect_lazy();
        channels.insert(node, channel.clone());
        Ok(MoverClient::new(channel).max_decoding_message_size(64 << 20))
    }

    /// Calls the source's leader, following hints and trying every
    /// replica, until `SOURCE_CALL_DEADLINE`. A refusal that is the
    /// source's answer (a move conflict) ends at once.
    async fn call<T, F, Fut>(&self, mut rpc: F) -> KvResult<T>
    where
        F: FnMut(MoverClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let deadline = Instant::now() + SOURCE_CALL_DEADLINE;
        let mut last = String::from("no replica tried");
        loop {
            for node in self.candidates() {
                match rpc(self.client(node)?).await {
                    Ok(response) => {
                        *self.leader.lock().unwrap_or_else(|p| p.into_inner()) = Some(node);
                        return Ok(response.into_inner());
                    }
                    Err(status) => {
                        if status_meta::error_code(&status) == Some("MOVE_CONFLICT") {
                            return Err(KvError::MoveConflict(status.message().to_string()));
                        }
                        let hint = status_meta::leader_hint(&status).map(NodeId);
                        *self.leader.lock().unwrap_or_else(|p| p.into_inner()) = hint;
                        last = format!("node {node}: {}", status.message());
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(KvError::Unavailable(format!(
                    "source shard {} of move {}: {last}",
                    self.spec.source, self.spec.move_id
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn step(&self, step: wire::Step, peer: ShardId) -> KvResult<Version> {
        let request = wire::StepRequest {
            target: self.target(),
            step: step as i32,
            peer_shard: peer.0,
        };
        let answer = self.call(|mut c| async move { c.take_step(request).await }).await?;
        if !answer.refused.is_empty() {
            return Err(KvError::MoveConflict(answer.refused));
        }
        Ok(Version(answer.version))
    }

    async fn page(&self, after: Option<&[u8]>) -> KvResult<Page> {
        let request = wire::PageRequest {
            target: self.target(),
            after_key: after.unwrap_or_default().to_vec(),
            has_after: after.is_some(),
            max_bytes: PAGE_BYTES,
        };
        let answer = self
            .call(|mut c| {
                let request = request.clone();
                async move { c.export_page(request).await }
            })
            .await?;
        Ok(Page {
            records: answer
                .records
                .into_iter()
                .map(record_from_wire)
                .collect::<KvResult<_>>()?,
            as_of: Version(answer.as_of),
            more: answer.more,
        })
    }

    async fn tail(&self, after: Version) -> KvResult<Tail> {
        let request = wire::TailRequest {
            target: self.target(),
            after_version: after.0,
            max_bytes: PAGE_BYTES,
        };
        let answer = self.call(|mut c| async move { c.tail_log(request).await }).await?;
        let changes = answer
            .changes
            .into_iter()
            .map(|c| {
                let records = c.records.into_iter().map(record_from_wire).collect::<KvResult<_>>()?;
                Ok((Version(c.version), records))
            })
            .collect::<KvResult<_>>()?;
        Ok(Tail {
            changes,
            frozen_at: Version(answer.frozen_at),
        })
    }

    async fn clients(&self) -> KvResult<Vec<(u64, Vec<u8>)>> {
        let request = wire::ClientsRequest { target: self.target() };
        let answer = self
            .call(|mut c| async move { c.export_clients(request).await })
            .await?;
        Ok(answer.clients.into_iter().map(|c| (c.client, c.record)).collect())
    }
}

/// A record as the wire carries it.
pub fn record_from_wire(record: wire::MovedRecord) -> KvResult<MovedRecord> {
    let stored = match record.record {
        Some(bytes) => {
            Some(ValueRecord::decode(&bytes).ok_or_else(|| KvError::Internal("a moved record is corrupt".into()))?)
        }
        None => None,
    };
    Ok(MovedRecord {
        key: record.key,
        record: stored,
    })
}

pub fn record_to_wire(record: MovedRecord) -> wire::MovedRecord {
    wire::MovedRecord {
        key: record.key,
        record: record.record.map(|r| r.encode()),
    }
}
