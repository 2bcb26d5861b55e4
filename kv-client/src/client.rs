//! The async Shoal client: routes each request to the shard's leader,
//! follows leader hints, retries what is safe to retry until a deadline, and
//! reports a write whose answer never came as indeterminate.

use crate::consistency::{Condition, PutOptions, ReadConsistency, WriteResult};
use crate::error::{ClientError, ClientResult};
use crate::request_ids::{RequestIds, RequestTicket};
use crate::routing::{Placement, RoutingTable};
use shoal_proto::admin::admin_client::AdminClient;
use shoal_proto::admin::{GetLayoutRequest, Layout};
use shoal_proto::kv::kv_client::KvClient;
use shoal_proto::kv::*;
use shoal_proto::{ERROR_CODE_METADATA, LEADER_HINT_METADATA};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

/// Client settings; `Default` gives the documented defaults.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Addresses of the shard manager and/or kv-server client ports; the
    /// layout is fetched from all of them and the newest kept.
    pub endpoints: Vec<String>,
    pub keyspace: String,
    /// Overall deadline of one operation, retries included.
    pub timeout: Duration,
    /// First retry delay; doubles up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// How long one attempt at one replica may take before the client
    /// tries another, for reads and for writes it may retry (exactly-once).
    pub attempt_timeout: Duration,
    /// The client's region: reads any replica may serve go there first.
    pub region: Option<String>,
    /// Tag writes with (client id, seq) so that a write whose answer was
    /// lost is retried safely, applied once (docs/consistency.md).
    pub exactly_once: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            endpoints: vec!["127.0.0.1:7101".into()],
            keyspace: "default".into(),
            timeout: Duration::from_secs(10),
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(100),
            attempt_timeout: Duration::from_secs(2),
            region: None,
            exactly_once: true,
        }
    }
}

/// A key, optionally with the routing key that picks its micro-shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key {
    pub key: Vec<u8>,
    pub routing: Option<Vec<u8>>,
}

impl Key {
    /// Keys that share a routing key share a micro-shard, hence a shard.
    pub fn routed(routing: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Key {
        Key {
            key: key.into(),
            routing: Some(routing.into()),
        }
    }
}

impl<T: Into<Vec<u8>>> From<T> for Key {
    fn from(key: T) -> Key {
        Key {
            key: key.into(),
            routing: None,
        }
    }
}

/// A value as read, with the version of the write that produced it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned {
    pub value: Vec<u8>,
    pub version: u64,
    /// When the key expires (ms since the Unix epoch); 0 = never.
    pub expires_at_ms: u64,
}

impl From<VersionedValue> for Versioned {
    fn from(v: VersionedValue) -> Versioned {
        Versioned {
            value: v.value,
            version: v.version,
            expires_at_ms: v.expires_at_ms,
        }
    }
}

/// One entry of a scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub version: u64,
    pub ushard: u32,
}

/// Where a write landed: its shard, the version it got, and the shard's
/// leadership epoch when it was acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteAck {
    pub shard: u64,
    pub version: u64,
    pub epoch: u64,
}

fn ack(shard: u64, response: WriteResponse) -> WriteAck {
    WriteAck {
        shard,
        version: response.version,
        epoch: response.header.map(|h| h.epoch).unwrap_or(0),
    }
}

fn write_result(shard: u64, response: WriteResponse) -> WriteResult {
    if response.condition_failed {
        WriteResult::ConditionFailed {
            current: response.current.map(Versioned::from),
        }
    } else {
        WriteResult::Applied(ack(shard, response))
    }
}

fn write_options(ticket: Option<&RequestTicket>, fast_ack: bool) -> Option<WriteOptions> {
    Some(WriteOptions {
        fast_ack,
        client_id: ticket.map(|t| t.client_id).unwrap_or(0),
        seq: ticket.map(|t| t.seq).unwrap_or(0),
        first_incomplete_seq: ticket.map(|t| t.first_incomplete).unwrap_or(0),
    })
}

fn read_kind(consistency: ReadConsistency) -> Kind {
    if consistency.needs_primary() {
        Kind::Read
    } else {
        Kind::ReplicaRead
    }
}

/// A read's answer with where it came from.
#[derive(Clone, Debug)]
pub(crate) struct ReadAnswer {
    pub shard: u64,
    pub applied_version: u64,
    pub value: Option<Versioned>,
}

/// A batch operation.
#[derive(Clone, Debug)]
pub enum Mutation {
    Put(Key, Vec<u8>),
    Delete(Key),
}

/// What to scan. `Default` scans the whole keyspace forward.
#[derive(Clone, Debug, Default)]
pub struct ScanOptions {
    pub start: Vec<u8>,
    pub end: Vec<u8>,
    pub prefix: Vec<u8>,
    pub reverse: bool,
    /// Entries per page (0 = server default).
    pub limit: u32,
    /// Bytes per page per shard (0 = server default).
    pub max_bytes: u64,
    /// Scan only this routing key's micro-shard.
    pub routing: Option<Vec<u8>>,
    pub consistency: ReadConsistency,
}

/// One page of a scan; pass `cursor` back to continue.
#[derive(Clone, Debug, Default)]
pub struct ScanPage {
    pub entries: Vec<Entry>,
    pub cursor: Option<Vec<u8>>,
}

/// Entries per scan page when the caller gives no limit.
pub const DEFAULT_SCAN_PAGE: u32 = 100;

/// The resume cursor after `entry`, in the format servers use.
fn encode_cursor(entry: &Entry) -> Vec<u8> {
    shoal_proto::scan_cursor::encode(entry.ushard, &entry.key)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Only the primary may answer.
    Read,
    /// Any replica may answer (bounded staleness, read-your-writes).
    ReplicaRead,
    /// A write that must not be retried once it may have been applied.
    Write,
    /// A write tagged for exactly-once: retried until answered.
    RetriableWrite,
}

/// How one failed attempt should be handled.
enum Next {
    /// Try the hinted leader right away.
    Redirect(u64),
    /// Our map is behind (stale epoch, wrong or unknown shard): fetch the
    /// map again, then retry.
    Refresh(String),
    /// Try the next replica after a backoff.
    TryAnother(String),
    Fail(ClientError),
}

pub struct ShoalClient {
    config: ClientConfig,
    /// Replaced whole when a newer layout is fetched; readers take an Arc.
    routes: std::sync::RwLock<Arc<RoutingTable>>,
    channels: Mutex<HashMap<String, Channel>>,
    ids: Arc<RequestIds>,
}

fn endpoint(addr: &str) -> Result<Endpoint, tonic::transport::Error> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_millis(500))
        .tcp_nodelay(true))
}

/// Asks every endpoint at once and keeps the newest layout: one endpoint
/// may lag (a node cut off from the shard manager), and a down one costs
/// no more than the 2 s timeout.
pub async fn fetch_layout(endpoints: &[String]) -> ClientResult<Layout> {
    let attempts = endpoints.iter().map(|addr| async move {
        let attempt = async {
            let channel = endpoint(addr)
                .map_err(|e| e.to_string())?
                .connect()
                .await
                .map_err(|e| e.to_string())?;
            let mut admin = AdminClient::new(channel);
            admin
                .get_layout(GetLayoutRequest {})
                .await
                .map(tonic::Response::into_inner)
                .map_err(|s| s.message().to_string())
        };
        match tokio::time::timeout(Duration::from_secs(2), attempt).await {
            Ok(result) => result.map_err(|e| format!("{addr}: {e}")),
            Err(_) => Err(format!("{addr}: timed out")),
        }
    });
    let mut newest: Option<Layout> = None;
    let mut last_error = String::from("no endpoints given");
    for result in futures::future::join_all(attempts).await {
        match result {
            Ok(layout) if newest.as_ref().is_none_or(|n| layout.version > n.version) => newest = Some(layout),
            Ok(_) => {}
            Err(e) => last_error = e,
        }
    }
    newest.ok_or_else(|| ClientError::Routing(format!("no endpoint answered ({last_error})")))
}

fn error_code_of(status: &tonic::Status) -> Option<ErrorCode> {
    let name = status.metadata().get(ERROR_CODE_METADATA)?.to_str().ok()?;
    ErrorCode::from_str_name(name)
}

fn leader_hint_of(status: &tonic::Status) -> Option<u64> {
    status.metadata().get(LEADER_HINT_METADATA)?.to_str().ok()?.parse().ok()
}

/// Whether a transport failure happened while connecting, i.e. before the
/// request could have left. Anything else (reset, broken pipe, timeout) may
/// have happened after the server received it.
fn never_sent(status: &tonic::Status) -> bool {
    let text = format!("{status:?}").to_lowercase();
    [
        "tcp connect error",
        "connection refused",
        "error trying to connect",
        "dns error",
    ]
    .iter()
    .any(|marker| text.contains(marker))
}

/// Whether a failed write attempt may still have been applied: the server
/// proposed it (LEADERSHIP_LOST) or the answer was lost in transport.
fn may_have_applied(status: &tonic::Status) -> bool {
    matches!(error_code_of(status), None | Some(ErrorCode::LeadershipLost))
}

fn classify(status: tonic::Status, kind: Kind) -> Next {
    match error_code_of(&status) {
        Some(ErrorCode::NotLeader) => match leader_hint_of(&status) {
            Some(leader) => Next::Redirect(leader),
            None => Next::TryAnother(status.message().to_string()),
        },
        // Either side's map may be behind: the replica may have moved away
        // (or not arrived yet), or the epoch changed. Refresh ours and retry.
        Some(ErrorCode::UnknownShard | ErrorCode::WrongShard | ErrorCode::StaleEpoch) => {
            Next::Refresh(status.message().to_string())
        }
        // This replica is behind what the read asked for: another may not be.
        Some(ErrorCode::StaleReplica) => Next::TryAnother(status.message().to_string()),
        // Proposed, outcome unknown: a tagged write is retried, and the
        // shard answers the retry as the first time if it was applied.
        Some(ErrorCode::LeadershipLost) if kind == Kind::RetriableWrite => {
            Next::TryAnother(status.message().to_string())
        }
        // A node that does not know the keyspace lags the shard map: ask another.
        Some(ErrorCode::Unavailable | ErrorCode::UnknownKeyspace) => Next::TryAnother(status.message().to_string()),
        Some(ErrorCode::LeadershipLost | ErrorCode::RequestExpired) => {
            Next::Fail(ClientError::Indeterminate(status.message().to_string()))
        }
        Some(code) => Next::Fail(ClientError::Rejected {
            code,
            message: status.message().to_string(),
        }),
        // No code: the failure is the transport's, not the server's answer.
        None if kind != Kind::Write || never_sent(&status) => Next::TryAnother(status.to_string()),
        None => Next::Fail(ClientError::Indeterminate(status.to_string())),
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
    fn channel(&self, routes: &RoutingTable, node: u64) -> ClientResult<Channel> {
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
    fn header(&self, routes: &RoutingTable, shard: u64) -> Option<RequestHeader> {
        Some(RequestHeader {
            keyspace: self.config.keyspace.clone(),
            shard_id: shard,
            epoch: routes.epoch(shard),
        })
    }

    async fn place(&self, key: &Key) -> ClientResult<Placement> {
        self.routes_with_keyspace()
            .await?
            .place(&self.config.keyspace, &key.key, key.routing.as_deref())
    }

    /// The replicas to try for `kind`, in order.
    fn candidates_for(&self, routes: &RoutingTable, shard: u64, kind: Kind) -> Vec<u64> {
        match kind {
            Kind::ReplicaRead => routes.read_candidates(shard, self.config.region.as_deref()),
            _ => routes.candidates(shard),
        }
    }

    /// Fetches the map again and returns the new route to `shard`.
    async fn refreshed_route(&self, shard: u64, kind: Kind) -> ClientResult<(Arc<RoutingTable>, Vec<u64>)> {
        // A failed refresh keeps the old map; the retry loop goes on with it.
        let _ = self.refresh().await;
        let routes = self.routes();
        let candidates = self.candidates_for(&routes, shard, kind);
        if candidates.is_empty() {
            return Err(ClientError::Routing(format!("shard {shard} has no replicas")));
        }
        Ok((routes, candidates))
    }

    /// Runs one request against a shard with leader-following and retries.
    /// `attempt` gets a connection and the request header to send. The map
    /// is fetched again (at most once per refresh-worthy answer, and once
    /// per full round of failed replicas) when it looks stale.
    async fn call<T, F, Fut>(&self, shard: u64, kind: Kind, mut attempt: F) -> ClientResult<T>
    where
        F: FnMut(KvClient<Channel>, Option<RequestHeader>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
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
                (routes, candidates) = match self.refreshed_route(shard, kind).await {
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
                            classify(status, kind)
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
        consistency_for: impl FnOnce(u64) -> ReadConsistency,
    ) -> ClientResult<ReadAnswer> {
        let placement = self.place(&key).await?;
        let consistency = consistency_for(placement.shard);
        let request = GetRequest {
            header: None, // set per attempt by `call`
            key: Some(KeyRef {
                ushard: placement.ushard,
                key: key.key,
            }),
            consistency: consistency.to_wire(),
        };
        let response = self
            .call(placement.shard, read_kind(consistency), |mut c, header| {
                let mut request = request.clone();
                request.header = header;
                async move { c.get(request).await }
            })
            .await?;
        Ok(ReadAnswer {
            shard: placement.shard,
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
        let mut by_shard: HashMap<u64, Vec<(usize, KeyRef)>> = HashMap::new();
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
                header: None, // set per attempt by `call`
                keys: refs.iter().map(|(_, k)| k.clone()).collect(),
                consistency: consistency.to_wire(),
            };
            let response = self
                .call(shard, read_kind(consistency), |mut c, header| {
                    let mut request = request.clone();
                    request.header = header;
                    async move { c.multi_get(request).await }
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
        let key = key.into();
        let placement = self.place(&key).await?;
        let (ticket, kind) = self.write_ticket();
        let request = PutRequest {
            header: None, // set per attempt by `call`
            key: Some(KeyRef {
                ushard: placement.ushard,
                key: key.key,
            }),
            value: value.into(),
            condition: options.condition.as_ref().map(Condition::to_wire),
            // The server refuses anything past its limit; never wrap.
            ttl_ms: options
                .ttl
                .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1))
                .unwrap_or(0),
            options: write_options(ticket.as_ref(), options.fast_ack),
        };
        let response = self
            .call(placement.shard, kind, |mut c, header| {
                let mut request = request.clone();
                request.header = header;
                async move { c.put(request).await }
            })
            .await?;
        Ok(write_result(placement.shard, response))
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
        let key = key.into();
        let placement = self.place(&key).await?;
        let (ticket, kind) = self.write_ticket();
        let request = DeleteRequest {
            header: None, // set per attempt by `call`
            key: Some(KeyRef {
                ushard: placement.ushard,
                key: key.key,
            }),
            condition: condition.as_ref().map(Condition::to_wire),
            options: write_options(ticket.as_ref(), false),
        };
        let response = self
            .call(placement.shard, kind, |mut c, header| {
                let mut request = request.clone();
                request.header = header;
                async move { c.delete(request).await }
            })
            .await?;
        Ok(write_result(placement.shard, response))
    }

    /// Adds `delta` to a counter (a missing key counts as 0) and returns
    /// its new value. With exactly-once on (the default) a retried
    /// increment is counted once.
    pub async fn increment(&self, key: impl Into<Key>, delta: i64) -> ClientResult<(i64, WriteAck)> {
        let key = key.into();
        let placement = self.place(&key).await?;
        let (ticket, kind) = self.write_ticket();
        let request = IncrementRequest {
            header: None, // set per attempt by `call`
            key: Some(KeyRef {
                ushard: placement.ushard,
                key: key.key,
            }),
            delta,
            options: write_options(ticket.as_ref(), false),
        };
        let response = self
            .call(placement.shard, kind, |mut c, header| {
                let mut request = request.clone();
                request.header = header;
                async move { c.increment(request).await }
            })
            .await?;
        let ack = WriteAck {
            shard: placement.shard,
            version: response.version,
            epoch: response.header.map(|h| h.epoch).unwrap_or(0),
        };
        Ok((response.value, ack))
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
            header: None, // set per attempt by `call`
            ops,
            options: write_options(ticket.as_ref(), false),
        };
        let response = self
            .call(shard, kind, |mut c, header| {
                let mut request = request.clone();
                request.header = header;
                async move { c.batch(request).await }
            })
            .await?;
        Ok(ack(shard, response))
    }

    /// One page of a scan over the keyspace (or one routing key's micro-shard),
    /// in key order across every shard.
    pub async fn scan_page(&self, options: &ScanOptions, cursor: Option<&[u8]>) -> ClientResult<ScanPage> {
        let (shards, ushard) = match &options.routing {
            Some(routing) => {
                let placement =
                    self.routes_with_keyspace()
                        .await?
                        .place(&self.config.keyspace, routing, Some(routing))?;
                (vec![placement.shard], Some(placement.ushard))
            }
            None => (
                self.routes_with_keyspace()
                    .await?
                    .keyspace(&self.config.keyspace)?
                    .shards
                    .clone(),
                None,
            ),
        };
        let limit = if options.limit == 0 {
            DEFAULT_SCAN_PAGE
        } else {
            options.limit
        };
        let order = |e: &Entry| (e.key.clone(), e.ushard);
        let mut merged = Vec::new();
        // The smallest (in scan order) last entry among shards that have more:
        // past it, a shard may hold entries we have not seen, so the page must
        // stop there.
        let mut frontier: Option<(Vec<u8>, u32)> = None;
        for shard in shards {
            let request = ScanRequest {
                header: None, // set per attempt by `call`
                ushard,
                start: options.start.clone(),
                end: options.end.clone(),
                prefix: options.prefix.clone(),
                reverse: options.reverse,
                limit,
                max_bytes: options.max_bytes,
                resume_after: cursor.map(<[u8]>::to_vec).unwrap_or_default(),
                consistency: options.consistency.to_wire(),
            };
            let response = self
                .call(shard, read_kind(options.consistency), |mut c, header| {
                    let mut request = request.clone();
                    request.header = header;
                    async move { c.scan(request).await }
                })
                .await?;
            let entries: Vec<Entry> = response
                .entries
                .into_iter()
                .map(|e| Entry {
                    key: e.key,
                    value: e.value,
                    version: e.version,
                    ushard: e.ushard,
                })
                .collect();
            if response.more {
                if let Some(last) = entries.last().map(order) {
                    let earlier = match &frontier {
                        None => true,
                        Some(f) => (last < *f) != options.reverse,
                    };
                    if earlier {
                        frontier = Some(last);
                    }
                }
            }
            merged.extend(entries);
        }
        merged.sort_by_key(order);
        if options.reverse {
            merged.reverse();
        }
        if let Some(f) = &frontier {
            merged.retain(|e| {
                if options.reverse {
                    order(e) >= *f
                } else {
                    order(e) <= *f
                }
            });
        }
        let truncated = merged.len() > limit as usize;
        merged.truncate(limit as usize);
        let cursor = match merged.last() {
            Some(last) if truncated || frontier.is_some() => Some(encode_cursor(last)),
            _ => None,
        };
        Ok(ScanPage {
            entries: merged,
            cursor,
        })
    }

    /// Scans to the end (or `max_entries`), following cursors.
    pub async fn scan_all(&self, options: &ScanOptions, max_entries: usize) -> ClientResult<Vec<Entry>> {
        let mut out = Vec::new();
        let mut cursor: Option<Vec<u8>> = None;
        loop {
            let page = self.scan_page(options, cursor.as_deref()).await?;
            out.extend(page.entries);
            if out.len() >= max_entries {
                out.truncate(max_entries);
                return Ok(out);
            }
            match page.cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(out),
            }
        }
    }
}

/// Shares one client between tasks.
pub type SharedClient = Arc<ShoalClient>;

#[cfg(test)]
mod tests {
    use super::*;

    fn status_with(code: &str, leader: Option<&str>) -> tonic::Status {
        let mut status = tonic::Status::unavailable("x");
        status.metadata_mut().insert(ERROR_CODE_METADATA, code.parse().unwrap());
        if let Some(leader) = leader {
            status
                .metadata_mut()
                .insert(LEADER_HINT_METADATA, leader.parse().unwrap());
        }
        status
    }

    #[test]
    fn not_leader_with_hint_redirects() {
        assert!(matches!(
            classify(status_with("NOT_LEADER", Some("3")), Kind::Write),
            Next::Redirect(3)
        ));
        assert!(matches!(
            classify(status_with("NOT_LEADER", None), Kind::Write),
            Next::TryAnother(_)
        ));
    }

    #[test]
    fn leadership_lost_is_indeterminate() {
        match classify(status_with("LEADERSHIP_LOST", None), Kind::Write) {
            Next::Fail(e) => assert!(e.is_indeterminate() && !e.is_retryable()),
            _ => panic!("expected a final indeterminate error"),
        }
    }

    #[test]
    fn bad_input_is_final_and_not_indeterminate() {
        match classify(status_with("KEY_TOO_LARGE", None), Kind::Write) {
            Next::Fail(e) => {
                assert!(!e.is_indeterminate() && !e.is_retryable());
                assert_eq!(e.code(), Some(ErrorCode::KeyTooLarge));
            }
            _ => panic!("expected a final rejection"),
        }
    }

    #[test]
    fn broken_connection_makes_a_write_indeterminate_but_a_read_retryable() {
        let cut = || tonic::Status::unavailable("error reading a body from connection: connection reset");
        assert!(matches!(
            classify(cut(), Kind::Write),
            Next::Fail(ClientError::Indeterminate(_))
        ));
        assert!(matches!(classify(cut(), Kind::Read), Next::TryAnother(_)));
        let pipe = tonic::Status::unavailable("error writing to connection: broken pipe");
        assert!(matches!(
            classify(pipe, Kind::Write),
            Next::Fail(ClientError::Indeterminate(_))
        ));
        let refused = tonic::Status::unavailable("tcp connect error: Connection refused");
        assert!(matches!(classify(refused, Kind::Write), Next::TryAnother(_)));
    }
}
