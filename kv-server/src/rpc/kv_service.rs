//! The client-facing `shoal.kv.v1.Kv` service; transaction commits are
//! `commit`'s.

mod commit;

use crate::apply::command::{Command, CommandResult, MutateOp, Outcome};
use crate::apply::moves::UshardState;
use crate::error::{KvError, KvResult};
use crate::keys::ValueRecord;
use crate::layout::ClusterLayout;
use crate::rpc::status::to_status;
use crate::rpc::validate::{
    check_batch, check_condition, check_key, check_multi_get, check_ushard, check_value, check_write_options,
    expiry_of, read_mode, resolve_header, scan_budget, scan_cursor, served_ushards, Resolved,
};
use crate::shard::host::NodeHost;
use crate::shard::replica::{ReadMode, ShardReplica};
use crate::shard::scan::{scan_shard, Cursor, ScanSpec};
use shoal_proto::kv::kv_server::Kv;
use shoal_proto::kv::*;
use shoal_types::{ShardId, UshardId};
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct KvService {
    host: Arc<NodeHost>,
}

impl KvService {
    pub fn new(host: Arc<NodeHost>) -> KvService {
        KvService { host }
    }

    /// Checks the header against this node's map. A client that names a
    /// newer epoch than ours has seen a newer map: ours is behind, so the
    /// heartbeat loop is asked to fetch it now rather than at its next tick.
    fn resolve<'a>(&self, layout: &'a ClusterLayout, header: Option<&RequestHeader>) -> KvResult<Resolved<'a>> {
        let mut resolved = resolve_header(layout, header)?;
        if resolved.map_behind {
            self.host.request_map_refresh();
        }
        if let Ok(replica) = self.host.shard(resolved.shard) {
            resolved.moves = replica.move_states();
        }
        Ok(resolved)
    }

    /// Counts operations the primary served on `ushards` by the client's
    /// region ("" when it names none): locality reads the regions of akkio
    /// keyspaces' μshards, splits the load of every μshard (see
    /// [`crate::shard::heat`]).
    fn count_heat(
        &self,
        target: &Resolved<'_>,
        header: Option<&RequestHeader>,
        ushards: impl IntoIterator<Item = UshardId>,
    ) {
        let region = header.map(|h| h.client_region.as_str()).unwrap_or("");
        let mut ushards: Vec<UshardId> = ushards.into_iter().collect();
        // A batch names a μshard once per op: count it once per request.
        ushards.sort_unstable();
        ushards.dedup();
        self.host.heat.record_each(target.keyspace.id, &ushards, region);
    }

    /// Names the answering shard, node and the shard's epoch (0 without a
    /// shard manager).
    fn response_header(&self, layout: &ClusterLayout, shard: ShardId) -> Option<ResponseHeader> {
        let epoch = layout.shard(shard).map(|s| s.epoch).unwrap_or_default();
        Some(ResponseHeader {
            shard_id: shard.0,
            epoch: epoch.0,
            node_id: self.host.node_id.0,
        })
    }

    /// Validates, proposes and applies one write command. `build` gets the
    /// keyspace, the shard and the proposal time (for TTLs). A fast-ack
    /// write returns a default result (version 0) as soon as Raft has it.
    async fn execute(
        &self,
        header: Option<&RequestHeader>,
        options: Option<&WriteOptions>,
        build: impl FnOnce(&Resolved<'_>, u64) -> KvResult<Vec<MutateOp>>,
    ) -> KvResult<(Option<ResponseHeader>, CommandResult)> {
        let layout = self.host.layout();
        let target = self.resolve(&layout, header)?;
        let (keyspace, shard) = (target.keyspace, target.shard);
        let now_ms = crate::clock::wall_ms();
        let ops = build(&target, now_ms)?;
        let (fast_ack, request) = check_write_options(options, &ops)?;
        let command_ushards: Vec<UshardId> = ops.iter().map(MutateOp::ushard).collect();
        // A fast-ack write to a μshard being moved could be acknowledged
        // and then refused behind a freeze already in the log: it waits
        // for its outcome like a quorum write instead (docs/consistency.md).
        let fast_ack = fast_ack && !touches_moving(&target, &ops);
        let replica = self.host.shard(shard)?;
        let command = Command::Mutate {
            keyspace: keyspace.id,
            ops,
            now_ms,
            request,
            accept_ticket: 0,
        };
        // A deliberate bug for proving the fault-injection suite can fail:
        // acknowledge before the write is committed (docs/failpoints.md).
        if crate::failpoints::is_on("ack-before-commit") {
            tokio::spawn(async move { replica.propose(command).await });
            return Ok((self.response_header(&layout, shard), CommandResult::default()));
        }
        let result = if fast_ack {
            replica.propose_fast(command).await?;
            CommandResult::default()
        } else {
            replica.propose(command).await?
        };
        replica.count_served();
        moving_outcome_error(&target, &result.outcome)?;
        self.count_heat(&target, header, command_ushards);
        // Fault injection for exactly-once retries: the write is applied,
        // its answer is lost on the way back (docs/failpoints.md).
        if crate::failpoints::is_on("lose-write-answer") {
            return Err(KvError::LeadershipLost { shard, leader: None });
        }
        Ok((self.response_header(&layout, shard), result))
    }

    /// A put, delete or batch: a failed condition is an answer, not an error.
    /// (A write refused for a move never gets here: see [`moving_outcome_error`].)
    async fn write(
        &self,
        header: Option<&RequestHeader>,
        options: Option<&WriteOptions>,
        build: impl FnOnce(&Resolved<'_>, u64) -> KvResult<Vec<MutateOp>>,
    ) -> KvResult<WriteResponse> {
        let (header, result) = self.execute(header, options, build).await?;
        let mut response = WriteResponse {
            header,
            version: result.version.0,
            ..Default::default()
        };
        match result.outcome {
            Outcome::Applied | Outcome::Counter(_) => {}
            Outcome::ConditionFailed { op, current } => {
                response.condition_failed = true;
                response.failed_op = op;
                response.current = current.map(to_value);
            }
            Outcome::NotACounter(why) => return Err(KvError::NotACounter(why)),
            Outcome::Expired => return Err(expired(options)),
            other @ (Outcome::Moving { .. }
            | Outcome::WrongShard { .. }
            | Outcome::MoveRefused(_)
            | Outcome::TxnConflict { .. }
            | Outcome::TxnTooOld { .. }
            | Outcome::EpochChanged { .. }) => return Err(KvError::Internal(format!("a write applied as {other:?}"))),
        }
        Ok(response)
    }

    /// **A deliberate bug** (failpoint `multi-get-torn`): each key read in
    /// a view of its own, a millisecond apart, as multi-gets were before
    /// issue 10. The fault-injection suite must catch the torn batches.
    async fn torn_multi_get(
        &self,
        layout: &ClusterLayout,
        shard: ShardId,
        replica: &ShardReplica,
        mode: ReadMode,
        keyspace: shoal_types::KeyspaceId,
        keys: &[(shoal_types::UshardId, &[u8])],
    ) -> KvResult<MultiGetResponse> {
        let mut values = Vec::with_capacity(keys.len());
        for (ushard, key) in keys {
            let read = replica.read(mode, |view| view.get(keyspace, *ushard, key)).await?;
            values.push(GetResponse {
                header: None,
                value: read.value.map(to_value),
                applied_version: read.applied,
            });
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        Ok(MultiGetResponse {
            header: self.response_header(layout, shard),
            values,
        })
    }

    /// The replica that serves a read in `mode`, once it may.
    async fn read_replica(&self, shard: ShardId, mode: ReadMode) -> KvResult<Arc<ShardReplica>> {
        let replica = self.host.shard(shard)?;
        replica.read_barrier_for(mode, &self.host.reads).await?;
        replica.count_served();
        Ok(replica)
    }
}

/// Whether a write touches a μshard with a move state other than `Owned`.
fn touches_moving(target: &Resolved<'_>, ops: &[MutateOp]) -> bool {
    ops.iter().any(|op| {
        let ushard = op.ushard();
        target
            .moves
            .get(&(target.keyspace.id, ushard))
            .is_some_and(|state| !matches!(state, UshardState::Owned { .. }))
    })
}

/// The error a write refused by the applier for a move gets: `MOVING`
/// (frozen, or not taken in yet: retry shortly) or `WRONG_SHARD` naming the
/// new owner. Nothing of the write was applied.
fn moving_outcome_error(target: &Resolved<'_>, outcome: &Outcome) -> KvResult<()> {
    match outcome {
        Outcome::Moving { ushard } => Err(KvError::Moving {
            keyspace: target.keyspace.name.clone(),
            ushard: ushard.0,
        }),
        Outcome::WrongShard { ushard, owner } => Err(KvError::WrongShard {
            keyspace: target.keyspace.name.clone(),
            ushard: ushard.0,
            shard: target.shard,
            owner: *owner,
            map_version: target.map_version,
        }),
        _ => Ok(()),
    }
}

fn expired(options: Option<&WriteOptions>) -> KvError {
    KvError::RequestExpired {
        client: options.map(|o| o.client_id).unwrap_or(0),
        seq: options.map(|o| o.seq).unwrap_or(0),
    }
}

fn to_value(record: ValueRecord) -> VersionedValue {
    VersionedValue {
        value: record.value,
        version: record.version.0,
        expires_at_ms: record.expires_at_ms,
    }
}

fn reply<T>(result: KvResult<T>) -> Result<Response<T>, Status> {
    result.map(Response::new).map_err(to_status)
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let req = request.into_inner();
        reply(
            async {
                let layout = self.host.layout();
                let target = self.resolve(&layout, req.header.as_ref())?;
                let (keyspace, shard) = (target.keyspace, target.shard);
                let (ushard, key) = check_key(&self.host.limits, &target, req.key.as_ref())?;
                let mode = read_mode(req.consistency.as_ref());
                let replica = self.read_replica(shard, mode).await?;
                crate::failpoints::delay("read-before").await;
                let read = replica.read(mode, |view| view.get(keyspace.id, ushard, key)).await?;
                if mode == ReadMode::Strong {
                    self.count_heat(&target, req.header.as_ref(), [ushard]);
                }
                Ok(GetResponse {
                    header: self.response_header(&layout, shard),
                    value: read.value.map(to_value),
                    applied_version: read.applied,
                })
            }
            .await,
        )
    }

    async fn multi_get(&self, request: Request<MultiGetRequest>) -> Result<Response<MultiGetResponse>, Status> {
        let req = request.into_inner();
        reply(
            async {
                let layout = self.host.layout();
                let target = self.resolve(&layout, req.header.as_ref())?;
                let (keyspace, shard) = (target.keyspace, target.shard);
                let keys = check_multi_get(&self.host.limits, &target, &req.keys)?;
                let mode = read_mode(req.consistency.as_ref());
                let replica = self.read_replica(shard, mode).await?;
                crate::failpoints::delay("read-before").await;
                if crate::failpoints::is_on("multi-get-torn") {
                    return self
                        .torn_multi_get(&layout, shard, &replica, mode, keyspace.id, &keys)
                        .await;
                }
                let found = replica
                    .read(mode, |view| {
                        keys.iter()
                            .enumerate()
                            .map(|(i, (ushard, key))| {
                                if i > 0 {
                                    crate::failpoints::pause("read-between");
                                }
                                Ok(view.get(keyspace.id, *ushard, key)?.map(to_value))
                            })
                            .collect::<KvResult<Vec<_>>>()
                    })
                    .await?;
                let applied_version = found.applied;
                if mode == ReadMode::Strong {
                    self.count_heat(&target, req.header.as_ref(), keys.iter().map(|(u, _)| *u));
                }
                let values = found
                    .value
                    .into_iter()
                    .map(|value| GetResponse {
                        header: None,
                        value,
                        applied_version,
                    })
                    .collect();
                Ok(MultiGetResponse {
                    header: self.response_header(&layout, shard),
                    values,
                })
            }
            .await,
        )
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<WriteResponse>, Status> {
        let req = request.into_inner();
        let limits = &self.host.limits;
        reply(
            self.write(req.header.as_ref(), req.options.as_ref(), |target, now_ms| {
                let (ushard, key) = check_key(limits, target, req.key.as_ref())?;
                check_value(limits, &req.value)?;
                Ok(vec![MutateOp::Put {
                    ushard,
                    key: key.to_vec(),
                    value: req.value.clone(),
                    expires_at_ms: expiry_of(req.ttl_ms, now_ms)?,
                    condition: check_condition(limits, req.condition.as_ref())?,
                }])
            })
            .await,
        )
    }

    async fn delete(&self, request: Request<DeleteRequest>) -> Result<Response<WriteResponse>, Status> {
        let req = request.into_inner();
        let limits = &self.host.limits;
        reply(
            self.write(req.header.as_ref(), req.options.as_ref(), |target, _| {
                let (ushard, key) = check_key(limits, target, req.key.as_ref())?;
                Ok(vec![MutateOp::Delete {
                    ushard,
                    key: key.to_vec(),
                    condition: check_condition(limits, req.condition.as_ref())?,
                }])
            })
            .await,
        )
    }

    async fn batch(&self, request: Request<BatchRequest>) -> Result<Response<WriteResponse>, Status> {
        let req = request.into_inner();
        let limits = &self.host.limits;
        reply(
            self.write(req.header.as_ref(), req.options.as_ref(), |target, now_ms| {
                check_batch(limits, target, &req.ops, now_ms)
            })
            .await,
        )
    }

    async fn increment(&self, request: Request<IncrementRequest>) -> Result<Response<IncrementResponse>, Status> {
        let req = request.into_inner();
        let limits = &self.host.limits;
        reply(
            async {
                let (header, result) = self
                    .execute(req.header.as_ref(), req.options.as_ref(), |target, _| {
                        let (ushard, key) = check_key(limits, target, req.key.as_ref())?;
                        Ok(vec![MutateOp::Increment {
                            ushard,
                            key: key.to_vec(),
                            delta: req.delta,
                        }])
                    })
                    .await?;
                match result.outcome {
                    Outcome::Counter(value) => Ok(IncrementResponse {
                        header,
                        version: result.version.0,
                        value,
                    }),
                    Outcome::NotACounter(why) => Err(KvError::NotACounter(why)),
                    Outcome::Expired => Err(expired(req.options.as_ref())),
                    other => Err(KvError::Internal(format!("increment applied as {other:?}"))),
                }
            }
            .await,
        )
    }

    async fn scan(&self, request: Request<ScanRequest>) -> Result<Response<ScanResponse>, Status> {
        let req = request.into_inner();
        reply(
            async {
                let limits = &self.host.limits;
                let layout = self.host.layout();
                let target = self.resolve(&layout, req.header.as_ref())?;
                let (keyspace, shard) = (target.keyspace, target.shard);
                let ushards: Vec<u32> = match req.ushard {
                    Some(u) => vec![check_ushard(&target, u)?.0],
                    None => served_ushards(&target)?.into_iter().map(|u| u.0).collect(),
                };
                let (limit, max_bytes) = scan_budget(limits, req.limit, req.max_bytes)?;
                let spec = ScanSpec {
                    start: req.start,
                    end: req.end,
                    prefix: req.prefix,
                    reverse: req.reverse,
                    limit,
                    max_bytes,
                    resume_after: scan_cursor(&req.resume_after)?,
                };
                let mode = read_mode(req.consistency.as_ref());
                let replica = self.read_replica(shard, mode).await?;
                crate::failpoints::delay("read-before").await;
                let read = replica
                    .read(mode, |view| scan_shard(view, keyspace.id, &ushards, &spec))
                    .await?;
                // A scan of one μshard is about it; one of the whole shard is not.
                if mode == ReadMode::Strong && req.ushard.is_some() {
                    self.count_heat(&target, req.header.as_ref(), ushards.iter().map(|u| UshardId(*u)));
                }
                let (page, applied_version) = (read.value, read.applied);
                let resume_after = match (page.more, page.items.last()) {
                    (true, Some(last)) => Cursor {
                        key: last.key.clone(),
                        ushard: last.ushard,
                    }
                    .encode(),
                    _ => Vec::new(),
                };
                let entries = page
                    .items
                    .into_iter()
                    .map(|item| ScanEntry {
                        ushard: item.ushard.0,
                        key: item.key,
                        value: item.record.value,
                        version: item.record.version.0,
                    })
                    .collect();
                Ok(ScanResponse {
                    header: self.response_header(&layout, shard),
                    entries,
                    resume_after,
                    more: page.more,
                    // Judged before the read; a μshard that left meanwhile
                    // failed the read (its view's state refuses it).
                    served_ushards: ushards,
                    applied_version,
                })
            }
            .await,
        )
    }

    async fn commit(&self, request: Request<CommitRequest>) -> Result<Response<CommitResponse>, Status> {
        reply(self.commit_txn(request.into_inner()).await)
    }
}
