//! The async Shoal client: routes each request to the shard's leader,
//! follows leader hints, retries what is safe to retry until a deadline, and
//! reports a write whose answer never came as indeterminate.

mod scan;
pub mod txn;

use crate::consistency::{Condition, PutOptions, ReadConsistency};
use crate::error::{ClientError, ClientResult};
use crate::request_ids::{RequestIds, RequestTicket};
use crate::retry::{classify, may_have_applied, moved_away, never_sent, read_kind, Kind, Next};
use crate::routing::{endpoint, fetch_layout, Placement, RoutingTable};
use crate::types::{ClientConfig, Key, Mutation, Versioned, WriteAck, WriteResult};
use crate::wire::{ack, write_options, write_result, Answered, Headed};
use shoal_proto::admin::admin_client::AdminClient;
use shoal_proto::admin::GetLayoutRequest;
use shoal_proto::kv::kv_client::KvClient;
use shoal_proto::kv::*;
use shoal_types::{NodeId, ShardId};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use tokio::time::Instant;
use tonic::transport::Channel;

/// A read's answer with where it came from.
#[derive(Clone, Debug)]
pub(crate) struct ReadAnswer {
    pub shard: ShardId,
    /// The shard's epoch at the replica that answered.
    pub epoch: u64,
    pub applied_version: u64,
    pub value: Option<Versioned>,
}

pub struct ShoalClient {
    config: ClientConfig,
    /// Replaced whole when a newer layout is fetched; readers take an Arc.
    routes: std::sync::RwLock<Arc<RoutingTable>>,
    channels: Mutex<HashMap<String, Channel>>,
    ids: Arc<RequestIds>,
    /// Per shard, the version of this client's last transaction commit
    /// there: its next transactions read from replicas that have it.
    commit_tokens: Mutex<HashMap<ShardId, u64>>,
}

/// Where a request goes: a shard, and for a request about one μshard's
/// keys that μshard, so that a retry after a map refresh follows it to the
/// shard it moved to.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Target {
    pub shard: ShardId,
    pub ushard: Option<u32>,
    /// The request is about this shard's state (a transaction's snapshot
    /// was taken there): a μshard that moved away fails it at once, with
    /// the server's code, instead of being followed.
    pub pinned: bool,
}

impl From<ShardId> for Target {
    fn from(shard: ShardId) -> Target {
        Target {
            shard,
            ushard: None,
            pinned: false,
        }
    }
}

impl From<Placement> for Target {
    fn from(placement: Placement) -> Target {
        Target {
            shard: placement.shard,
            ushard: Some(placement.ushard),
            pinned: false,
        }
    }
}

impl ShoalClient {
    /// Connects: fetches the newest layout the endpoints have.
    pub async fn connect(config: ClientConfig) -> ClientResult<ShoalClient> {
        let layout = fetch_layout(&config.endpoints).await?;
        Ok(ShoalClient {
            routes: std::sync::RwLock::new(Arc::new(RoutingTable::from_layout(&layout))),
            config,
            channels: Mutex::new(HashMap::new()),
            ids: RequestIds::new(),
            commit_tokens: Mutex::new(HashMap::new()),
        })
    }

    /// The current routing table.
    pub fn routes(&self) -> Arc<RoutingTable> {
        self.routes.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Fetches the layout again (from the configured endpoints and every
    /// node the current layout knows) and adopts it if it is newer.
    pub async fn refresh(&self) -> ClientResult<()> {
        let current = self.routes();
        let mut endpoints = self.config.endpoints.clone();
        endpoints.extend(
            current
                .node_addrs()
                .into_iter()
                .filter(|a| !self.config.endpoints.contains(a)),
        );
        let layout = fetch_layout(&endpoints).await?;
        if layout.version > current.version() {
            *self.routes.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(RoutingTable::from_layout(&layout));
        }
        Ok(())
    }

    /// Refreshes the layout once when it does not know the keyspace yet
    /// (it may have been created after this client connected).
    async fn routes_with_keyspace(&self) -> ClientResult<Arc<RoutingTable>> {
        let routes = self.routes();
        if routes.keyspace(&self.config.keyspace).is_ok() {
            return Ok(routes);
        }
        self.refresh().await?;
        Ok(self.routes())
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// A connection to `node` at its address in `routes`.
    fn channel(&self, routes: &RoutingTable, node: NodeId) -> ClientResult<Channel> {
        let addr = routes
            .addr(node)
            .ok_or_else(|| ClientError::Routing(format!("unknown node {node}")))?;
        let mut channels = self
            .channels
            .lock()
            .map_err(|_| ClientError::Routing("channel cache poisoned".into()))?;
        if let Some(channel) = channels.get(addr) {
            return Ok(channel.clone());
        }
        let channel = endpoint(addr)
            .map_err(|e| ClientError::Routing(e.to_string()))?
            .connect_lazy();
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }

    /// The header of one attempt: the epoch is the one `routes` holds, so
    /// a node with a newer map answers STALE_EPOCH and we refresh.
    fn header(&self, routes: &RoutingTable, shard: ShardId) -> Option<RequestHeader> {
        Some(RequestHeader {
            keyspace: self.config.keyspace.clone(),
            shard_id: shard.0,
            epoch: routes.epoch(shard).0,
            client_region: self.config.region.clone().unwrap_or_default(),
        })
    }

    async fn place(&self, key: &Key) -> ClientResult<Placement> {
        self.routes_with_keyspace()
            .await?
            .place(&self.config.keyspace, &key.key, key.routing.as_deref())
    }

    /// The replicas to try for `kind`, in order.
    fn candidates_for(&self, routes: &RoutingTable, shard: ShardId, kind: Kind) -> Vec<NodeId> {
        match kind {
            Kind::ReplicaRead => routes.read_candidates(shard, self.config.region.as_deref()),
            _ => routes.candidates(shard),
        }
    }

    /// Fetches the map again and returns the new route to `target`: the
    /// shard that now owns its μshard, which a move may have changed.
    async fn refreshed_route(
        &self,
        target: Target,
        kind: Kind,
    ) -> ClientResult<(Arc<RoutingTable>, ShardId, Vec<NodeId>)> {
        // A failed refresh keeps the old map; the retry loop goes on with it.
        let _ = self.refresh().await;
        let routes = self.routes();
        let shard = match (target.ushard, routes.keyspace(&self.config.keyspace)) {
            (Some(ushard), Ok(keyspace)) => keyspace.shard_of_ushard(ushard),
            _ => target.shard,
        };
        let candidates = self.candidates_for(&routes, shard, kind);
        if candidates.is_empty() {
            return Err(ClientError::Routing(format!("shard {shard} has no replicas")));
        }
        Ok((routes, shard, candidates))
    }

    /// [`Self::call`] with `request`, a fresh header set on a copy of it
    /// for each attempt.
    async fn send<R, T, F, Fut>(&self, target: impl Into<Target>, kind: Kind, request: &R, rpc: F) -> ClientResult<T>
    where
        R: Headed,
        F: Fn(KvClient<Channel>, R) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.call(target.into(), kind, |c, header| rpc(c, request.with_header(header)))
            .await
    }

    /// Runs one request against a shard with leader-following and retries.
    /// `attempt` gets a connection and the request header to send. The map
    /// is fetched again (at most once per refresh-worthy answer, and once
    /// per full round of failed replicas) when it looks stale.
    async fn call<T, F, Fut>(&self, route: Target, kind: Kind, mut attempt: F) -> ClientResult<T>
    where
        F: FnMut(KvClient<Channel>, Option<RequestHeader>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut shard = route.shard;
        let deadline = Instant::now() + self.config.timeout;
        let mut backoff = self.config.initial_backoff;
        let mut routes = self.routes();
        let mut candidates = self.candidates_for(&routes, shard, kind);
        if candidates.is_empty() {
            return Err(ClientError::Routing(format!("shard {shard} has no replicas")));
        }
        let mut target = 0usize;
        let mut redirects = 0u32;
        let mut refresh_now = false;
        // A retriable write that may have been applied by an attempt: if it
        // runs out of time, its outcome is unknown, not "not applied".
        let mut maybe_applied = false;
        // The last refusal, kept so that an attempt cut short by the
        // deadline does not hide why the earlier ones failed.
        let mut last_refusal: Option<String> = None;
        loop {
            if refresh_now {
                refresh_now = false;
                (routes, shard, candidates) = match self.refreshed_route(route, kind).await {
                    Ok(route) => route,
                    Err(e) if maybe_applied => {
                        return Err(ClientError::Indeterminate(format!(
                            "an earlier attempt may have applied it; then: {e}"
                        )))
                    }
                    Err(e) => return Err(e),
                };
                target = 0;
            }
            let node = candidates[target % candidates.len()];
            let mut cut_by_deadline = false;
            let remaining = deadline.saturating_duration_since(Instant::now());
            let header = self.header(&routes, shard);
            let next = match self.channel(&routes, node) {
                // A replica on a node our map has no address for: the map
                // is behind; nothing was sent.
                Err(e) => Next::Refresh(e.to_string()),
                Ok(channel) => {
                    let client = KvClient::new(channel).max_decoding_message_size(64 << 20);
                    // An untagged write may not be retried, so it waits for
                    // its one answer as long as the deadline allows.
                    let budget = match kind {
                        Kind::Write => remaining,
                        _ => remaining.min(self.config.attempt_timeout),
                    };
                    match tokio::time::timeout(budget, attempt(client, header)).await {
                        Ok(Ok(response)) => {
                            if kind != Kind::ReplicaRead {
                                routes.set_leader(shard, node);
                            }
                            return Ok(response.into_inner());
                        }
                        Ok(Err(status)) => {
                            if kind == Kind::RetriableWrite && !never_sent(&status) && may_have_applied(&status) {
                                maybe_applied = true;
                            }
                            match moved_away(&status) {
                                Some(code) if route.pinned => Next::Fail(ClientError::Rejected {
                                    code,
                                    message: status.message().to_string(),
                                }),
                                _ => classify(status, kind),
                            }
                        }
                        Err(_) if kind == Kind::Write => {
                            return Err(ClientError::Indeterminate(format!(
                                "no answer from node {node} before the deadline"
                            )))
                        }
                        Err(_) => {
                            maybe_applied |= kind == Kind::RetriableWrite;
                            cut_by_deadline = budget < self.config.attempt_timeout;
                            Next::TryAnother(format!("no answer within {budget:?}"))
                        }
                    }
                }
            };
            let last_problem = match next {
                // An earlier attempt may have applied it: unknown, not refused.
                Next::Fail(error) if maybe_applied && !error.is_indeterminate() => {
                    return Err(ClientError::Indeterminate(format!(
                        "an earlier attempt may have applied it; then: {error}"
                    )))
                }
                Next::Fail(error) => return Err(error),
                // Follow the first hint at once; after that, back off too, so
                // two nodes with stale hints cannot bounce us in a hot loop.
                // A leader our map does not know: the map is behind.
                Next::Redirect(leader) if routes.addr(leader).is_none() => {
                    routes.set_leader(shard, leader);
                    refresh_now = true;
                    format!("node {node} redirected to {leader}, which our map does not know")
                }
                Next::Redirect(leader) if leader != node && redirects == 0 => {
                    redirects += 1;
                    routes.set_leader(shard, leader);
                    candidates = routes.candidates(shard);
                    target = 0;
                    continue;
                }
                Next::Redirect(leader) if leader != node => {
                    routes.set_leader(shard, leader);
                    candidates = routes.candidates(shard);
                    // The leader is first in `candidates`; the `+= 1` below
                    // wraps to it.
                    target = candidates.len().saturating_sub(1);
                    redirects = 0;
                    format!("node {node} redirected to {leader}")
                }
                Next::Redirect(_) => format!("node {node} named itself leader but refused"),
                Next::Refresh(problem) => {
                    refresh_now = true;
                    format!("node {node}: {problem}")
                }
                Next::TryAnother(problem) => format!("node {node}: {problem}"),
            };
            let last_problem = match last_refusal.take() {
                Some(refusal) if cut_by_deadline => format!("deadline reached; before that, {refusal}"),
                _ => last_problem,
            };
            last_refusal = Some(last_problem.clone());
            target += 1;
            // Every replica failed once: maybe they moved.
            if target.is_multiple_of(candidates.len()) {
                refresh_now = true;
            }
            if Instant::now() + backoff >= deadline {
                let why = format!("shard {shard}: {last_problem}");
                return Err(if maybe_applied {
                    ClientError::Indeterminate(why)
                } else {
                    ClientError::Unavailable(why)
                });
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(self.config.max_backoff);
        }
    }

    /// One bare round trip (the layout call) to the first node of the
    /// layout over the cached connection: the cost floor of any request.
    pub async fn ping(&self) -> ClientResult<()> {
        let node = self
            .routes()
            .first_node()
            .ok_or_else(|| ClientError::Routing("layout has no nodes".into()))?;
        let mut admin = AdminClient::new(self.channel(&self.routes(), node)?);
        admin
            .get_layout(GetLayoutRequest {})
            .await
            .map(|_| ())
            .map_err(|s| ClientError::Unavailable(s.to_string()))
    }

    /// A strong (linearizable) read.
    pub async fn get(&self, key: impl Into<Key>) -> ClientResult<Option<Versioned>> {
        self.get_with(key, ReadConsistency::Strong).await
    }

    /// A read at the given consistency.
    pub async fn get_with(&self, key: impl Into<Key>, consistency: ReadConsistency) -> ClientResult<Option<Versioned>> {
        Ok(self.get_traced(key.into(), |_| consistency).await?.value)
    }

    /// A read, with the shard and the applied version of the replica that
    /// answered (a read-your-writes token covering what it saw).
    /// `consistency_for` gets the key's shard (a session picks its token).
    pub(crate) async fn get_traced(
        &self,
        key: Key,
        consistency_for: impl FnOnce(ShardId) -> ReadConsistency,
    ) -> ClientResult<ReadAnswer> {
        let placement = self.place(&key).await?;
        let consistency = consistency_for(placement.shard);
        let request = GetRequest {
            header: None, // set per attempt by `send`
            key: Some(KeyRef {
                ushard: placement.ushard,
                key: key.key,
            }),
            consistency: consistency.to_wire(),
        };
        let response = self
            .send(
                placement,
                read_kind(consistency),
                &request,
                |mut c, request| async move { c.get(request).await },
            )
            .await?;
        Ok(ReadAnswer {
            // The shard that answered: a move may have changed it.
            shard: response.answering_shard().unwrap_or(placement.shard),
            epoch: response.header.as_ref().map(|h| h.epoch).unwrap_or(0),
            applied_version: response.applied_version,
            value: response.value.map(Versioned::from),
        })
    }

    /// Reads many keys (strongly); answers are in request order. Keys are
    /// grouped by shard, one request per shard.
    pub async fn multi_get(&self, keys: Vec<Key>) -> ClientResult<Vec<Option<Versioned>>> {
        self.multi_get_with(keys, ReadConsistency::Strong).await
    }

    /// Reads many keys at the given consistency, one request per shard.
    pub async fn multi_get_with(
        &self,
        keys: Vec<Key>,
        consistency: ReadConsistency,
    ) -> ClientResult<Vec<Option<Versioned>>> {
        let mut by_shard: HashMap<ShardId, Vec<(usize, KeyRef)>> = HashMap::new();
        for (i, key) in keys.into_iter().enumerate() {
            let placement = self.place(&key).await?;
            by_shard.entry(placement.shard).or_default().push((
                i,
                KeyRef {
                    ushard: placement.ushard,
                    key: key.key,
                },
            ));
        }
        let total = by_shard.values().map(Vec::len).sum();
        let mut out = vec![None; total];
        for (shard, refs) in by_shard {
            let request = MultiGetRequest {
                header: None, // set per attempt by `send`
                keys: refs.iter().map(|(_, k)| k.clone()).collect(),
                consistency: consistency.to_wire(),
            };
            let response = self
                .send(shard, read_kind(consistency), &request, |mut c, request| async move {
                    c.multi_get(request).await
                })
                .await?;
            for ((i, _), value) in refs.iter().zip(response.values) {
                out[*i] = value.value.map(Versioned::from);
            }
        }
        Ok(out)
    }

    /// The id of one write and how it may be retried: a tagged write is
    /// retried until answered; an untagged one never once it may have
    /// been applied.
    fn write_ticket(&self) -> (Option<RequestTicket>, Kind) {
        if self.config.exactly_once {
            (Some(self.ids.begin()), Kind::RetriableWrite)
        } else {
            (None, Kind::Write)
        }
    }

    pub async fn put(&self, key: impl Into<Key>, value: impl Into<Vec<u8>>) -> ClientResult<WriteAck> {
        match self.put_with(key, value, &PutOptions::default()).await? {
            WriteResult::Applied(ack) => Ok(ack),
            WriteResult::ConditionFailed { .. } => Err(ClientError::Routing(
                "an unconditional put reported a failed condition".into(),
            )),
        }
    }

    /// A put with a condition, a TTL or fast acknowledgement.
    pub async fn put_with(
        &self,
        key: impl Into<Key>,
        value: impl Into<Vec<u8>>,
        options: &PutOptions,
    ) -> ClientResult<WriteResult> {
        let (shard, response) = self
            .write_key(
                key.into(),
                |key, ticket| PutRequest {
                    header: None, // set per attempt by `send`
                    key: Some(key),
                    value: value.into(),
                    condition: options.condition.as_ref().map(Condition::to_wire),
                    // The server refuses anything past its limit; never wrap.
                    ttl_ms: options
                        .ttl
                        .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1))
                        .unwrap_or(0),
                    options: write_options(ticket, options.fast_ack),
                },
                |mut c, request| async move { c.put(request).await },
            )
            .await?;
        Ok(write_result(shard, response))
    }

    pub async fn delete(&self, key: impl Into<Key>) -> ClientResult<WriteAck> {
        match self.delete_with(key, None).await? {
            WriteResult::Applied(ack) => Ok(ack),
            WriteResult::ConditionFailed { .. } => Err(ClientError::Routing(
                "an unconditional delete reported a failed condition".into(),
            )),
        }
    }

    /// A delete, optionally conditional (delete-if-present, -if-version).
    pub async fn delete_with(&self, key: impl Into<Key>, condition: Option<Condition>) -> ClientResult<WriteResult> {
        let (shard, response) = self
            .write_key(
                key.into(),
                |key, ticket| DeleteRequest {
                    header: None, // set per attempt by `send`
                    key: Some(key),
                    condition: condition.as_ref().map(Condition::to_wire),
                    options: write_options(ticket, false),
                },
                |mut c, request| async move { c.delete(request).await },
            )
            .await?;
        Ok(write_result(shard, response))
    }

    /// Adds `delta` to a counter (a missing key counts as 0) and returns
    /// its new value. With exactly-once on (the default) a retried
    /// increment is counted once.
    pub async fn increment(&self, key: impl Into<Key>, delta: i64) -> ClientResult<(i64, WriteAck)> {
        let (shard, response) = self
            .write_key(
                key.into(),
                |key, ticket| IncrementRequest {
                    header: None, // set per attempt by `send`
                    key: Some(key),
                    delta,
                    options: write_options(ticket, false),
                },
                |mut c, request| async move { c.increment(request).await },
            )
            .await?;
        let ack = WriteAck {
            shard: shard.0,
            version: response.version,
            epoch: response.header.map(|h| h.epoch).unwrap_or(0),
        };
        Ok((response.value, ack))
    }

    /// One write of one key, the steps every such write shares: place the
    /// key, take a write ticket (exactly-once id and how the write may be
    /// retried), build the request once from the key's wire reference and
    /// the ticket, and [`Self::send`] it. Returns the shard and the answer.
    async fn write_key<R, T, F, Fut>(
        &self,
        key: Key,
        build: impl FnOnce(KeyRef, Option<&RequestTicket>) -> R,
        rpc: F,
    ) -> ClientResult<(ShardId, T)>
    where
        R: Headed,
        T: Answered,
        F: Fn(KvClient<Channel>, R) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let placement = self.place(&key).await?;
        let (ticket, kind) = self.write_ticket();
        let key = KeyRef {
            ushard: placement.ushard,
            key: key.key,
        };
        let request = build(key, ticket.as_ref());
        let response = self.send(placement, kind, &request, rpc).await?;
        Ok((response.answering_shard().unwrap_or(placement.shard), response))
    }

    /// Applies every mutation atomically. All keys must live in one shard
    /// (share a routing key, or happen to hash there); otherwise the batch is
    /// refused before anything is sent.
    pub async fn batch(&self, mutations: Vec<Mutation>) -> ClientResult<WriteAck> {
        let mut shard = None;
        let mut ops = Vec::with_capacity(mutations.len());
        for mutation in mutations {
            let (key, op) = match mutation {
                Mutation::Put(key, value) => {
                    let placement = self.place(&key).await?;
                    let op = batch_op::Op::Put(PutOp {
                        key: Some(KeyRef {
                            ushard: placement.ushard,
                            key: key.key,
                        }),
                        value,
                        ..PutOp::default()
                    });
                    (placement, op)
                }
                Mutation::Delete(key) => {
                    let placement = self.place(&key).await?;
                    (
                        placement,
                        batch_op::Op::Delete(DeleteOp {
                            key: Some(KeyRef {
                                ushard: placement.ushard,
                                key: key.key,
                            }),
                            ..DeleteOp::default()
                        }),
                    )
                }
            };
            match shard {
                None => shard = Some(key.shard),
                Some(s) if s != key.shard => {
                    return Err(ClientError::InvalidArgument(
                        "batch spans shards; cross-shard atomic batches are not supported: use one routing key".into(),
                    ))
                }
                Some(_) => {}
            }
            ops.push(BatchOp { op: Some(op) });
        }
        let shard = shard.ok_or_else(|| ClientError::InvalidArgument("empty batch".into()))?;
        let (ticket, kind) = self.write_ticket();
        let request = BatchRequest {
            header: None, // set per attempt by `send`
            ops,
            options: write_options(ticket.as_ref(), false),
        };
        let response = self
            .send(
                shard,
                kind,
                &request,
                |mut c, request| async move { c.batch(request).await },
            )
            .await?;
        Ok(ack(shard, response))
    }
}

/// Shares one client between tasks.
pub type SharedClient = Arc<ShoalClient>;
