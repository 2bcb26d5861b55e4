//! The client-facing `shoal.kv.v1.Kv` service.

use crate::error::{KvError, KvResult};
use crate::keys::ValueRecord;
use crate::layout::ClusterLayout;
use crate::raft::types::{Command, WriteOp};
use crate::rpc::status::to_status;
use crate::rpc::validate::{check_batch, check_key, check_ushard, check_value, resolve_header};
use crate::shard::host::NodeHost;
use crate::shard::replica::ShardReplica;
use crate::shard::scan::{scan_shard, Cursor, ScanSpec};
use crate::types::ShardId;
use shoal_proto::kv::kv_server::Kv;
use shoal_proto::kv::*;
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
    fn resolve<'a>(
        &self,
        layout: &'a ClusterLayout,
        header: Option<&RequestHeader>,
    ) -> KvResult<(&'a crate::layout::KeyspaceLayout, ShardId)> {
        let resolved = resolve_header(layout, header)?;
        if resolved.map_behind {
            self.host.request_map_refresh();
        }
        Ok((resolved.keyspace, resolved.shard))
    }

    /// Names the answering shard, node and the shard's epoch (0 without a
    /// shard manager).
    fn response_header(&self, layout: &ClusterLayout, shard: ShardId) -> Option<ResponseHeader> {
        let epoch = layout.shard(shard).map(|s| s.epoch).unwrap_or(0);
        Some(ResponseHeader {
            shard_id: shard.0,
            epoch,
            node_id: self.host.node_id.0,
        })
    }

    async fn write(
        &self,
        header: Option<&RequestHeader>,
        build: impl FnOnce(&crate::layout::KeyspaceLayout, ShardId) -> KvResult<Vec<WriteOp>>,
    ) -> KvResult<WriteResponse> {
        let layout = self.host.layout();
        let (keyspace, shard) = self.resolve(&layout, header)?;
        let ops = build(keyspace, shard)?;
        let replica = self.host.shard(shard)?;
        let command = Command::Write {
            keyspace: keyspace.id,
            ops,
        };
        // A deliberate bug for proving the fault-injection suite can fail:
        // acknowledge before the write is committed (docs/failpoints.md).
        if crate::failpoints::is_on("ack-before-commit") {
            tokio::spawn(async move { replica.propose(command).await });
            return Ok(WriteResponse {
                header: self.response_header(&layout, shard),
                version: 0,
            });
        }
        let result = replica.propose(command).await?;
        replica.count_served();
        Ok(WriteResponse {
            header: self.response_header(&layout, shard),
            version: result.version.0,
        })
    }

    async fn strong_replica(&self, shard: ShardId) -> KvResult<Arc<ShardReplica>> {
        let replica = self.host.shard(shard)?;
        replica.read_barrier().await?;
        replica.count_served();
        Ok(replica)
    }
}

fn to_value(record: ValueRecord) -> VersionedValue {
    VersionedValue {
        value: record.value,
        version: record.version.0,
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
                let (keyspace, shard) = self.resolve(&layout, req.header.as_ref())?;
                let (ushard, key) = check_key(&self.host.limits, keyspace, shard, req.key.as_ref())?;
                let replica = self.strong_replica(shard).await?;
                let value = replica.get_local(keyspace.id, ushard, key)?.map(to_value);
                Ok(GetResponse {
                    header: self.response_header(&layout, shard),
                    value,
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
                let (keyspace, shard) = self.resolve(&layout, req.header.as_ref())?;
                if req.keys.len() > self.host.limits.max_batch_ops {
                    return Err(KvError::BatchTooLarge(format!(
                        "{} keys; the limit is {}",
                        req.keys.len(),
                        self.host.limits.max_batch_ops
                    )));
                }
                let mut keys = Vec::with_capacity(req.keys.len());
                for key in &req.keys {
                    keys.push(check_key(&self.host.limits, keyspace, shard, Some(key))?);
                }
                let replica = self.strong_replica(shard).await?;
                let mut values = Vec::with_capacity(keys.len());
                for (ushard, key) in keys {
                    let value = replica.get_local(keyspace.id, ushard, key)?.map(to_value);
                    values.push(GetResponse { header: None, value });
                }
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
            self.write(req.header.as_ref(), |keyspace, shard| {
                let (ushard, key) = check_key(limits, keyspace, shard, req.key.as_ref())?;
                check_value(limits, &req.value)?;
                Ok(vec![WriteOp::Put {
                    ushard,
                    key: key.to_vec(),
                    value: req.value.clone(),
                }])
            })
            .await,
        )
    }

    async fn delete(&self, request: Request<DeleteRequest>) -> Result<Response<WriteResponse>, Status> {
        let req = request.into_inner();
        let limits = &self.host.limits;
        reply(
            self.write(req.header.as_ref(), |keyspace, shard| {
                let (ushard, key) = check_key(limits, keyspace, shard, req.key.as_ref())?;
                Ok(vec![WriteOp::Delete {
                    ushard,
                    key: key.to_vec(),
                }])
            })
            .await,
        )
    }

    async fn batch(&self, request: Request<BatchRequest>) -> Result<Response<WriteResponse>, Status> {
        let req = request.into_inner();
        let limits = &self.host.limits;
        reply(
            self.write(req.header.as_ref(), |keyspace, shard| {
                check_batch(limits, keyspace, shard, &req.ops)
            })
            .await,
        )
    }

    async fn scan(&self, request: Request<ScanRequest>) -> Result<Response<ScanResponse>, Status> {
        let req = request.into_inner();
        reply(
            async {
                let limits = &self.host.limits;
                let layout = self.host.layout();
                let (keyspace, shard) = self.resolve(&layout, req.header.as_ref())?;
                let ushards = match req.ushard {
                    Some(u) => vec![check_ushard(keyspace, shard, u)?.0],
                    None => keyspace.ushards_of(shard),
                };
                if req.limit > limits.max_scan_limit {
                    return Err(KvError::Malformed(format!(
                        "limit {} exceeds {}",
                        req.limit, limits.max_scan_limit
                    )));
                }
                if req.max_bytes > limits.max_scan_bytes {
                    return Err(KvError::Malformed(format!(
                        "max_bytes {} exceeds {}",
                        req.max_bytes, limits.max_scan_bytes
                    )));
                }
                let spec = ScanSpec {
                    start: req.start,
                    end: req.end,
                    prefix: req.prefix,
                    reverse: req.reverse,
                    limit: if req.limit == 0 {
                        limits.default_scan_limit
                    } else {
                        req.limit
                    } as usize,
                    max_bytes: if req.max_bytes == 0 {
                        limits.default_scan_bytes
                    } else {
                        req.max_bytes
                    },
                    resume_after: if req.resume_after.is_empty() {
                        None
                    } else {
                        Some(Cursor::decode(&req.resume_after)?)
                    },
                };
                let replica = self.strong_replica(shard).await?;
                let page = scan_shard(&replica, keyspace.id, &ushards, &spec)?;
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
                })
            }
            .await,
        )
    }
}
