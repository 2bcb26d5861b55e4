//! The peer-facing `shoal.raft.v1.RaftTransport` service: hands each message
//! to the Raft group of the shard it names.

use crate::codec::{decode, encode};
use crate::raft::types::TypeConfig;
use crate::raft::types::{RaftError, Snapshot, SnapshotMeta, Vote};
use crate::shard::freshness::FreshnessStamp;
use crate::shard::host::NodeHost;
use crate::shard::replica::ShardReplica;
use futures::StreamExt;
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse};
use shoal_proto::raft::raft_transport_server::RaftTransport;
use shoal_proto::raft::{RaftReply, RaftRequest, SnapshotChunk};
use shoal_types::ShardId;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use tonic::{Request, Response, Status, Streaming};

pub struct RaftService {
    host: Arc<NodeHost>,
    /// Where incoming snapshots are spooled before they are installed.
    incoming_dir: PathBuf,
}

impl RaftService {
    pub fn new(host: Arc<NodeHost>, incoming_dir: PathBuf) -> RaftService {
        RaftService { host, incoming_dir }
    }

    /// Votes and pre-votes wait for the restart embargo
    /// ([`NodeHost::may_vote`]).
    fn refuse_while_embargoed(&self) -> Result<(), Status> {
        if self.host.may_vote() {
            return Ok(());
        }
        Err(Status::unavailable(
            "restarted less than one leader lease ago: not voting yet",
        ))
    }

    /// The replica a request names, with its decoded payload.
    fn route<T: serde::de::DeserializeOwned>(&self, req: &RaftRequest) -> Result<Routed<T>, Status> {
        let shard = ShardId(req.shard_id);
        let Ok(replica) = self.host.shard(shard) else {
            return Ok(Routed::NotHosted(Self::not_hosted(shard)));
        };
        Ok(Routed::Here(replica, decode(&req.payload).map_err(bad_payload)?))
    }

    fn not_hosted(shard: ShardId) -> Response<RaftReply> {
        Response::new(RaftReply {
            payload: Vec::new(),
            error: format!("shard {shard} is not hosted here"),
            wall_ms: crate::clock::wall_ms(),
        })
    }
}

/// Votes and pre-votes a replica in quarantine may not grant (see
/// [`ShardReplica::in_quarantine`]): those for a candidate with anything in
/// its log.
fn refuse_in_quarantine(replica: &ShardReplica, rpc: &openraft::raft::VoteRequest<TypeConfig>) -> Result<(), Status> {
    let candidate_log_empty = rpc.last_log_id.as_ref().is_none_or(|last| last.index == 0);
    if candidate_log_empty || !replica.in_quarantine() {
        return Ok(());
    }
    Err(Status::unavailable(format!(
        "shard {}: this replica was opened with no Raft state and has not caught up with a leader: not voting",
        replica.id
    )))
}

/// Where a Raft message goes: a replica hosted here and the message, or
/// the answer that the shard is not hosted here.
enum Routed<T> {
    Here(Arc<ShardReplica>, T),
    NotHosted(Response<RaftReply>),
}

/// The `raft-receive` failpoint: with `raft-send` it cuts a node off from
/// its peers in both directions.
fn receive_failpoint() -> Result<(), Status> {
    if crate::failpoints::is_on("raft-receive") {
        return Err(Status::unavailable("failpoint raft-receive"));
    }
    Ok(())
}

fn bad_payload(e: std::io::Error) -> Status {
    Status::invalid_argument(format!("undecodable raft payload: {e}"))
}

fn encode_reply<T: serde::Serialize>(result: &T) -> Result<Response<RaftReply>, Status> {
    let payload = encode(result).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(RaftReply {
        payload,
        error: String::new(),
        wall_ms: crate::clock::wall_ms(),
    }))
}

#[tonic::async_trait]
impl RaftTransport for RaftService {
    async fn append_entries(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        receive_failpoint()?;
        let req = request.into_inner();
        let Ok(replica) = self.host.shard(ShardId(req.shard_id)) else {
            return Ok(Self::not_hosted(ShardId(req.shard_id)));
        };
        let rpc: AppendEntriesRequest<TypeConfig> = decode(&req.payload).map_err(bad_payload)?;
        let result = replica.raft.append_entries(rpc).await;
        // The stamp counts only if Raft accepted the sender as its leader.
        if req.fresh_as_of_ms > 0
            && matches!(
                result,
                Ok(AppendEntriesResponse::Success | AppendEntriesResponse::PartialSuccess(_))
            )
        {
            replica.freshness().observe(FreshnessStamp {
                applied: req.fresh_applied,
                as_of_ms: req.fresh_as_of_ms,
            });
        }
        encode_reply(&result)
    }

    async fn vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        receive_failpoint()?;
        self.refuse_while_embargoed()?;
        let (replica, rpc) = match self.route(&request.into_inner())? {
            Routed::Here(replica, rpc) => (replica, rpc),
            Routed::NotHosted(reply) => return Ok(reply),
        };
        refuse_in_quarantine(&replica, &rpc)?;
        encode_reply(&replica.raft.vote(rpc).await)
    }

    async fn pre_vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        receive_failpoint()?;
        self.refuse_while_embargoed()?;
        let (replica, rpc) = match self.route(&request.into_inner())? {
            Routed::Here(replica, rpc) => (replica, rpc),
            Routed::NotHosted(reply) => return Ok(reply),
        };
        refuse_in_quarantine(&replica, &rpc)?;
        encode_reply(&replica.raft.pre_vote(rpc).await)
    }

    async fn transfer_leader(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        receive_failpoint()?;
        let (replica, rpc) = match self.route(&request.into_inner())? {
            Routed::Here(replica, rpc) => (replica, rpc),
            Routed::NotHosted(reply) => return Ok(reply),
        };
        let result: Result<_, RaftError> = replica.raft.handle_transfer_leader(rpc).await.map_err(RaftError::Fatal);
        encode_reply(&result)
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<RaftReply>, Status> {
        receive_failpoint()?;
        let mut stream = request.into_inner();
        let first = stream
            .next()
            .await
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))??;
        let shard = ShardId(first.shard_id);
        let Ok(replica) = self.host.shard(shard) else {
            return Ok(Self::not_hosted(shard));
        };
        let (vote, meta): (Vote, SnapshotMeta) = decode(&first.header).map_err(bad_payload)?;
        std::fs::create_dir_all(&self.incoming_dir).map_err(|e| Status::internal(e.to_string()))?;
        let spool = tempfile::NamedTempFile::new_in(&self.incoming_dir).map_err(|e| Status::internal(e.to_string()))?;
        let (mut file, spool_path) = spool.into_parts();
        file.write_all(&first.data)
            .map_err(|e| Status::internal(e.to_string()))?;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            file.write_all(&chunk.data)
                .map_err(|e| Status::internal(e.to_string()))?;
        }
        file.flush().map_err(|e| Status::internal(e.to_string()))?;
        // A stream cut short ends like a complete one; check the file before
        // openraft sees it, because a failed install stops the shard's Raft.
        let file = tokio::task::spawn_blocking(move || {
            crate::raft::snapshot::read_snapshot_file(&mut file, |_, _| {}).map(|_| file)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| Status::data_loss(format!("incomplete or corrupt snapshot stream: {e}")))?;
        // The state machine copies what it keeps; the spooled file goes when
        // `spool_path` drops.
        let snapshot = Snapshot { meta, snapshot: file };
        let result: Result<_, RaftError> = replica
            .raft
            .install_full_snapshot(vote, snapshot)
            .await
            .map_err(RaftError::Fatal);
        drop(spool_path);
        encode_reply(&result)
    }
}
