//! openraft's network for one shard: sends Raft messages to peers over the
//! node-to-node gRPC transport.
//!
//! Every shard of a node shares the [`PeerChannels`] pool, so all shards'
//! traffic to a peer rides one HTTP/2 connection (multiplexed by shard id
//! in each message) instead of one connection per shard per peer.

use crate::codec::{decode, encode};
use crate::peer_clocks::PeerClocks;
use crate::raft::types::{RaftError, RpcError, Snapshot, SnapshotData, TypeConfig, Vote};
use crate::shard::freshness::Freshness;
use crate::transport_filter::TransportFilter;
use dashmap::DashMap;
use futures::Future;
use openraft::errors::{NetworkError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest, TransferLeaderResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, OptionalSend, RaftNetworkV2};
use serde::de::DeserializeOwned;
use shoal_proto::raft::raft_transport_client::RaftTransportClient;
use shoal_proto::raft::{RaftReply, RaftRequest, SnapshotChunk};
use shoal_types::{NodeId, ShardId};
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// Size of one streamed snapshot chunk.
const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

/// Lazily connected, reused channels to peer nodes, keyed by raft address.
pub struct PeerChannels {
    /// This node: the sender of every message.
    me: NodeId,
    channels: DashMap<String, Channel>,
    /// Every reply's wall clock, per peer node.
    clocks: Arc<PeerClocks>,
    /// Which links are cut or slow (empty outside the in-process harness).
    filter: Arc<TransportFilter>,
}

impl PeerChannels {
    pub fn new(me: NodeId, filter: Arc<TransportFilter>) -> Arc<PeerChannels> {
        Arc::new(PeerChannels {
            me,
            channels: DashMap::new(),
            clocks: Arc::default(),
            filter,
        })
    }

    /// Which links are cut or slow.
    pub fn filter(&self) -> &TransportFilter {
        &self.filter
    }

    /// How far this node's clock is from each peer's.
    pub fn clocks(&self) -> &Arc<PeerClocks> {
        &self.clocks
    }

    fn channel(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        if let Some(channel) = self.channels.get(addr) {
            return Ok(channel.clone());
        }
        let channel = Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .connect_lazy();
        self.channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }
}

pub struct ShardNetworkFactory {
    shard: ShardId,
    peers: Arc<PeerChannels>,
    freshness: Arc<Freshness>,
}

impl ShardNetworkFactory {
    pub fn new(shard: ShardId, peers: Arc<PeerChannels>, freshness: Arc<Freshness>) -> ShardNetworkFactory {
        ShardNetworkFactory {
            shard,
            peers,
            freshness,
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for ShardNetworkFactory {
    type Network = ShardPeer;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Self::Network {
        ShardPeer {
            shard: self.shard,
            target,
            addr: node.addr.clone(),
            peers: self.peers.clone(),
            freshness: self.freshness.clone(),
        }
    }
}

/// One shard's view of one peer.
pub struct ShardPeer {
    shard: ShardId,
    /// The peer's node id.
    target: u64,
    addr: String,
    peers: Arc<PeerChannels>,
    /// What this node vouches for when it leads (bounded-staleness reads).
    freshness: Arc<Freshness>,
}

fn unreachable(e: impl std::fmt::Display) -> RpcError {
    RpcError::Unreachable(Unreachable::from_string(e.to_string()))
}

/// Maps a transport failure: "could not connect" means the peer is down
/// (openraft backs off), anything else is a network error.
fn status_to_rpc_error(status: tonic::Status) -> RpcError {
    match status.code() {
        tonic::Code::Unavailable => unreachable(status.message()),
        _ => RpcError::Network(NetworkError::from_string(format!(
            "{}: {}",
            status.code(),
            status.message()
        ))),
    }
}

fn decode_reply<T: DeserializeOwned>(reply: RaftReply) -> Result<T, RpcError> {
    if !reply.error.is_empty() {
        // The peer does not host this shard (yet): treat it as down.
        return Err(unreachable(reply.error));
    }
    let result: Result<T, RaftError> = decode(&reply.payload).map_err(|e| RpcError::Network(NetworkError::new(&e)))?;
    result.map_err(unreachable)
}

impl ShardPeer {
    /// The peer's reply, once the link back lets it through; a reply lost
    /// on a cut link is a network error (the request may have acted).
    async fn returned<T>(&self, reply: T) -> Result<T, RpcError> {
        self.peers
            .filter
            .pass(NodeId(self.target), self.peers.me)
            .await
            .map(|()| reply)
            .map_err(|cut| RpcError::Network(NetworkError::new(&cut)))
    }

    /// One unary call to the peer through the link filter both ways: the
    /// request once the link lets it leave, the reply once the link back
    /// lets it in.
    async fn unary<F, Fut>(&self, call: F) -> Result<RaftReply, RpcError>
    where
        F: FnOnce(RaftTransportClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<RaftReply>, tonic::Status>>,
    {
        let client = self.client().await?;
        let reply = call(client).await.map_err(status_to_rpc_error)?;
        self.returned(reply.into_inner()).await
    }

    /// Records the peer's clock from a reply to a request sent at `sent`
    /// (our wall clock, our monotonic clock).
    fn observe_clock(&self, sent: (u64, std::time::Instant), reply: RaftReply) -> RaftReply {
        self.peers.clocks.observe(self.target, sent.0, sent.1, reply.wall_ms);
        reply
    }

    /// A client for one call to the peer, once the link lets the request go.
    async fn client(&self) -> Result<RaftTransportClient<Channel>, RpcError> {
        if crate::failpoints::blocks_peer("raft-send", self.target) {
            return Err(unreachable("failpoint raft-send"));
        }
        self.peers
            .filter
            .pass(self.peers.me, NodeId(self.target))
            .await
            .map_err(unreachable)?;
        let channel = self.peers.channel(&self.addr).map_err(|e| unreachable(&e))?;
        Ok(RaftTransportClient::new(channel)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20))
    }

    fn request<T: serde::Serialize>(
        &self,
        message: &T,
        ttl: Duration,
    ) -> Result<tonic::Request<RaftRequest>, RpcError> {
        let payload = encode(message).map_err(|e| RpcError::Network(NetworkError::new(&e)))?;
        let mut request = tonic::Request::new(RaftRequest {
            shard_id: self.shard.0,
            payload,
            ..Default::default()
        });
        request.set_timeout(ttl);
        Ok(request)
    }
}

impl RaftNetworkV2<TypeConfig> for ShardPeer {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RpcError> {
        let mut request = self.request(&rpc, option.hard_ttl())?;
        if let Some(stamp) = self.freshness.leader_stamp(crate::clock::wall_ms()) {
            let message = request.get_mut();
            message.fresh_applied = stamp.applied;
            message.fresh_as_of_ms = stamp.as_of_ms;
        }
        let sent = (crate::clock::wall_ms(), std::time::Instant::now());
        let reply = self
            .unary(|mut c| async move { c.append_entries(request).await })
            .await?;
        decode_reply(self.observe_clock(sent, reply))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RpcError> {
        let request = self.request(&rpc, option.hard_ttl())?;
        let sent = (crate::clock::wall_ms(), std::time::Instant::now());
        let reply = self.unary(|mut c| async move { c.vote(request).await }).await?;
        decode_reply(self.observe_clock(sent, reply))
    }

    /// Implemented (openraft's default grants every Pre-Vote): without it, a
    /// node cut off from the leader bumps its term on every election timeout
    /// and disrupts the group when it reconnects.
    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RpcError> {
        let request = self.request(&rpc, option.hard_ttl())?;
        decode_reply(self.unary(|mut c| async move { c.pre_vote(request).await }).await?)
    }

    async fn transfer_leader(
        &mut self,
        rpc: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RpcError> {
        let request = self.request(&rpc, option.hard_ttl())?;
        decode_reply(
            self.unary(|mut c| async move { c.transfer_leader(request).await })
                .await?,
        )
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let header =
            encode(&(vote, snapshot.meta.clone())).map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        let shard_id = self.shard.0;
        let mut file = snapshot.snapshot;
        // Read the file on a blocking thread, a chunk at a time, so a large
        // snapshot never sits in memory whole.
        let (tx, rx) = tokio::sync::mpsc::channel::<SnapshotChunk>(4);
        let reader = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::io::Seek;
            file.seek(std::io::SeekFrom::Start(0))?;
            let mut header = Some(header);
            loop {
                let mut data = vec![0u8; SNAPSHOT_CHUNK_BYTES];
                let n = file.read(&mut data)?;
                data.truncate(n);
                let is_last = n == 0;
                let chunk = SnapshotChunk {
                    shard_id,
                    header: header.take().unwrap_or_default(),
                    data,
                };
                if tx.blocking_send(chunk).is_err() || is_last {
                    return Ok(());
                }
            }
        });
        let mut client = self
            .client()
            .await
            .map_err(|e| StreamingError::Unreachable(Unreachable::from_string(e.to_string())))?;
        let send = client.install_snapshot(tokio_stream::wrappers::ReceiverStream::new(rx));
        tokio::pin!(cancel);
        let reply = tokio::select! {
            closed = &mut cancel => {
                reader.abort();
                return Err(StreamingError::Closed(closed));
            }
            reply = send => reply,
        };
        match reader.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(StreamingError::Network(NetworkError::new(&e))),
            Err(e) => return Err(StreamingError::Network(NetworkError::from_string(e.to_string()))),
        }
        let reply = reply.map_err(|status| match status_to_rpc_error(status) {
            RpcError::Unreachable(u) => StreamingError::Unreachable(u),
            other => StreamingError::Network(NetworkError::from_string(other.to_string())),
        })?;
        let reply = self
            .returned(reply.into_inner())
            .await
            .map_err(|e| StreamingError::Network(NetworkError::from_string(e.to_string())))?;
        decode_reply(reply).map_err(|e| StreamingError::Unreachable(Unreachable::from_string(e.to_string())))
    }
}
