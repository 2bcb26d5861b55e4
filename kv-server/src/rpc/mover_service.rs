//! The `shoal.mover.v1.Mover` service: a move's steps at its source or
//! destination, the exports a destination copies from its source, and
//! running a whole move on the destination's primary (docs/moves.md).
//! Exports are read on the source's leader after a strong read barrier,
//! and only while the μshard is being exported for that very move.

use crate::apply::command::{Command, MoveStep, Outcome};
use crate::apply::moves::UshardState;
use crate::error::{KvError, KvResult};
use crate::rpc::status::to_status;
use crate::shard::export;
use crate::shard::host::NodeHost;
use crate::shard::mover::{record_to_wire, MoveRuns, MoveSpec};
use crate::shard::replica::{ReadMode, ShardReplica};
use crate::shard::view::ReplicaView;
use shoal_proto::mover::mover_server::Mover;
use shoal_proto::mover::*;
use shoal_types::{KeyspaceId, ShardId, UshardId, Version};
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct MoverService {
    host: Arc<NodeHost>,
    runs: Arc<MoveRuns>,
}

impl MoverService {
    pub fn new(host: Arc<NodeHost>) -> MoverService {
        MoverService {
            host,
            runs: Arc::default(),
        }
    }
}

/// A call's target, as typed ids.
struct Target {
    shard: ShardId,
    keyspace: KeyspaceId,
    ushard: UshardId,
    move_id: u64,
}

fn target_of(target: Option<&MoveTarget>) -> KvResult<Target> {
    let t = target.ok_or_else(|| KvError::Malformed("missing target".into()))?;
    Ok(Target {
        shard: ShardId(t.shard_id),
        keyspace: KeyspaceId(t.keyspace_id),
        ushard: UshardId(t.ushard),
        move_id: t.move_id,
    })
}

fn reply<T>(result: KvResult<T>) -> Result<Response<T>, Status> {
    result.map(Response::new).map_err(to_status)
}

impl MoverService {
    /// The source replica, as leader past a strong read barrier: what it
    /// exports includes every write acknowledged before the call.
    async fn source_leader(&self, target: &Target) -> KvResult<Arc<ShardReplica>> {
        let replica = self.host.shard(target.shard)?;
        replica.read_barrier_for(ReadMode::Strong, &self.host.reads).await?;
        Ok(replica)
    }

    /// Reads `read` on the source for `target`'s move, refusing unless the
    /// μshard is being exported (or frozen) for exactly that move.
    async fn export<T>(
        &self,
        target: &Target,
        read: impl Fn(&ReplicaView<'_>, Option<&UshardState>) -> KvResult<T>,
    ) -> KvResult<(T, Version)> {
        let replica = self.source_leader(target).await?;
        let answer = replica
            .read(ReadMode::Strong, |view| {
                let state = export::state(view, target.keyspace, target.ushard)?;
                match &state {
                    // Released too: a run resumed after the release copies
                    // the frozen records again.
                    Some(
                        UshardState::Exporting { move_id, .. }
                        | UshardState::Frozen { move_id, .. }
                        | UshardState::Gone { move_id, .. },
                    ) if *move_id == target.move_id => {}
                    other => {
                        return Err(KvError::MoveConflict(format!(
                            "ushard {} of shard {} is not being exported for move {} (state: {other:?})",
                            target.ushard, target.shard, target.move_id
                        )))
                    }
                }
                read(view, state.as_ref())
            })
            .await?;
        Ok((answer.value, Version(answer.applied)))
    }
}

#[tonic::async_trait]
impl Mover for MoverService {
    async fn take_step(&self, request: Request<StepRequest>) -> Result<Response<StepResponse>, Status> {
        let req = request.into_inner();
        reply(
            async {
                let target = target_of(req.target.as_ref())?;
                let peer = ShardId(req.peer_shard);
                let step = match Step::try_from(req.step) {
                    Ok(Step::BeginExport) => MoveStep::BeginExport { to: peer },
                    Ok(Step::Freeze) => MoveStep::Freeze,
                    Ok(Step::Release) => MoveStep::Release,
                    Ok(Step::AbortExport) => MoveStep::AbortExport,
                    Ok(Step::DropData) => MoveStep::DropData,
                    Ok(Step::Abandon) => MoveStep::Abandon { from: peer },
                    _ => return Err(KvError::Malformed(format!("unknown move step {}", req.step))),
                };
                let replica = self.host.shard(target.shard)?;
                let result = replica
                    .propose(Command::Move {
                        keyspace: target.keyspace,
                        ushard: target.ushard,
                        move_id: target.move_id,
                        step,
                    })
                    .await?;
                Ok(match result.outcome {
                    Outcome::Applied => StepResponse {
                        version: result.version.0,
                        refused: String::new(),
                    },
                    Outcome::MoveRefused(why) => StepResponse {
                        version: result.version.0,
                        refused: why,
                    },
                    other => return Err(KvError::Internal(format!("a move step applied as {other:?}"))),
                })
            }
            .await,
        )
    }

    async fn export_page(&self, request: Request<PageRequest>) -> Result<Response<PageResponse>, Status> {
        let req = request.into_inner();
        reply(
            async {
                let target = target_of(req.target.as_ref())?;
                let after = req.has_after.then_some(req.after_key.as_slice());
                let max_bytes = req.max_bytes.max(1);
                let (page, as_of) = self
                    .export(&target, |view, _| {
                        export::page(view, target.keyspace, target.ushard, after, max_bytes)
                    })
                    .await?;
                Ok(PageResponse {
                    records: page.records.into_iter().map(record_to_wire).collect(),
                    as_of: as_of.0,
                    more: page.more,
                })
            }
            .await,
        )
    }

    async fn tail_log(&self, request: Request<TailRequest>) -> Result<Response<TailResponse>, Status> {
        let req = request.into_inner();
        reply(
            async {
                let target = target_of(req.target.as_ref())?;
                let after = Version(req.after_version);
                let max_bytes = req.max_bytes.max(1);
                let ((changes, frozen_at), as_of) = self
                    .export(&target, |view, state| {
                        let frozen_at = match state {
                            Some(UshardState::Frozen { at, .. } | UshardState::Gone { at, .. }) => *at,
                            _ => Version(0),
                        };
                        Ok((
                            export::tail(view, target.keyspace, target.ushard, after, max_bytes)?,
                            frozen_at,
                        ))
                    })
                    .await?;
                Ok(TailResponse {
                    changes: changes
                        .into_iter()
                        .map(|(version, records)| LoggedChange {
                            version: version.0,
                            records: records.into_iter().map(record_to_wire).collect(),
                        })
                        .collect(),
                    frozen_at: frozen_at.0,
                    as_of: as_of.0,
                })
            }
            .await,
        )
    }

    async fn export_clients(&self, request: Request<ClientsRequest>) -> Result<Response<ClientsResponse>, Status> {
        let req = request.into_inner();
        reply(
            async {
                let target = target_of(req.target.as_ref())?;
                let (clients, _) = self
                    .export(&target, |view, state| match state {
                        // Read once frozen: every request the μshard
                        // answered here is in them.
                        Some(UshardState::Frozen { .. } | UshardState::Gone { .. }) => export::clients(view),
                        _ => Err(KvError::MoveConflict(format!(
                            "ushard {} of shard {}: client records are handed over only once it is frozen",
                            target.ushard, target.shard
                        ))),
                    })
                    .await?;
                Ok(ClientsResponse {
                    clients: clients
                        .into_iter()
                        .map(|(client, record)| ClientRecord { client, record })
                        .collect(),
                })
            }
            .await,
        )
    }

    async fn run(&self, request: Request<RunRequest>) -> Result<Response<RunResponse>, Status> {
        let req = request.into_inner();
        reply(
            async {
                let target = target_of(req.target.as_ref())?;
                let spec = MoveSpec {
                    move_id: target.move_id,
                    keyspace: target.keyspace,
                    ushard: target.ushard,
                    source: ShardId(req.source_shard),
                    dest: target.shard,
                    bytes_per_sec: req.bytes_per_sec,
                };
                let done = self.runs.run(&self.host, spec).await?;
                Ok(RunResponse {
                    activated_version: done.activated_version.0,
                    frozen_at: done.frozen_at.0,
                    bytes_copied: done.bytes_copied,
                })
            }
            .await,
        )
    }

    async fn status(&self, request: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let move_id = request.into_inner().move_id;
        Ok(Response::new(match self.runs.progress(move_id) {
            Some(p) => StatusResponse {
                phase: p.phase.to_string(),
                bytes_copied: p.bytes_copied,
                elapsed_ms: p.started.elapsed().as_millis() as u64,
                error: p.error,
            },
            None => StatusResponse {
                phase: "idle".into(),
                ..Default::default()
            },
        }))
    }
}
