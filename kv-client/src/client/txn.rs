//! Optimistic transactions (docs/transactions.md): reads from a snapshot
//! any replica able to prove it may serve, writes buffered here, then one
//! commit to the shard's primary that validates the reads and applies the
//! writes in a single log entry, or writes nothing.
//!
//! **A transaction lives in one shard, and everything it refuses is
//! refused before it is sent**: a key of another shard is
//! `CROSS_SHARD_TXN` at the read or write that names it; a μshard that
//! moved away since the transaction first touched it is `MOVING`
//! (retryable); limits, a finished transaction, a write in a read-only one
//! and an empty commit each have their code. Nothing of a refused
//! transaction is applied.

use super::{ShoalClient, Target};
use crate::consistency::ReadConsistency;
use crate::error::{ClientError, ClientResult};
use crate::retry::read_kind;
use crate::routing::Placement;
use crate::types::Key;
use crate::wire::write_options;
use futures::future::BoxFuture;
use shoal_proto::kv::{
    batch_op, BatchOp, CommitRequest, DeleteOp, ErrorCode, KeyRef, MultiGetRequest, PutOp, ScanRequest, TxnRange,
    TxnRead,
};
use shoal_types::ShardId;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::Instant;

/// Where a transaction's reads come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotReads {
    /// Any replica that can prove it is at most this stale (usually a
    /// follower in the client's region). Staler reads only mean more
    /// conflicts, never a wrong commit.
    Replica(Duration),
    /// The primary, linearizably: fewer conflicts, every read at the primary.
    Strong,
}

/// How a transaction reads, and its limits (the server enforces its own).
#[derive(Clone, Debug)]
pub struct TxnOptions {
    pub snapshot: SnapshotReads,
    /// Writes are refused with `READ_ONLY_TXN`; the commit still validates
    /// the reads (a consistent snapshot, or `TXN_CONFLICT`).
    pub read_only: bool,
    /// A commit later than this after the transaction began is refused
    /// with `TXN_TOO_OLD` before it is sent.
    pub max_duration: Duration,
    /// Reads (keys and scanned ranges) plus writes; over it: `TXN_TOO_LARGE`.
    pub max_keys: usize,
    /// Key and value bytes read and written; over it: `TXN_TOO_LARGE`.
    pub max_bytes: usize,
}

impl Default for TxnOptions {
    fn default() -> Self {
        TxnOptions {
            snapshot: SnapshotReads::Replica(Duration::from_secs(1)),
            read_only: false,
            max_duration: Duration::from_secs(5),
            max_keys: 1000,
            max_bytes: 4 * 1024 * 1024,
        }
    }
}

/// What a successful commit returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Committed {
    pub shard: u64,
    /// The version the transaction committed at (its writes carry it); for
    /// a read-only transaction the point its reads were validated at.
    pub version: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Open,
    Committed,
    Aborted,
}

/// One μshard-qualified key.
type Slot = (u32, Vec<u8>);

/// Entries one page of a transaction's scan asks the server for at most.
const SCAN_PAGE: usize = 1000;

/// A buffered write.
#[derive(Clone, Debug)]
enum Write {
    Put(Vec<u8>),
    Delete,
}

/// A transaction in progress. Reads see its own buffered writes.
pub struct Transaction<'c> {
    client: &'c ShoalClient,
    options: TxnOptions,
    started: Instant,
    state: State,
    /// The shard every key so far lives in.
    shard: Option<ShardId>,
    /// (version, epoch): every read so far was served at this version of
    /// the shard or later, in this epoch.
    snapshot: Option<(u64, u64)>,
    /// Key → what it read: (value, version), None = absent.
    reads: BTreeMap<Slot, Option<(Vec<u8>, u64)>>,
    /// (μshard, start, end; empty end = to the end of the μshard).
    ranges: Vec<(u32, Vec<u8>, Vec<u8>)>,
    writes: BTreeMap<Slot, Write>,
    read_bytes: usize,
    /// What the commit answered, once it succeeded.
    committed: Option<Committed>,
}

impl ShoalClient {
    /// A transaction with the default options (follower snapshot reads).
    pub fn transaction(&self) -> Transaction<'_> {
        self.transaction_with(TxnOptions::default())
    }

    pub fn transaction_with(&self, options: TxnOptions) -> Transaction<'_> {
        Transaction {
            client: self,
            options,
            started: Instant::now(),
            state: State::Open,
            shard: None,
            snapshot: None,
            reads: BTreeMap::new(),
            ranges: Vec::new(),
            writes: BTreeMap::new(),
            read_bytes: 0,
            committed: None,
        }
    }

    /// Runs `body` in a transaction and commits it, again and again while
    /// the answer is retryable (a conflict, a snapshot too old, an epoch
    /// change, a μshard moving, no replica available), with backoff, until
    /// the client's timeout. Returns what `body` returned with the commit.
    /// After a failed attempt, reads are taken strongly (from the primary),
    /// so a lagging replica cannot make every attempt fail alike. `body` may
    /// commit itself; otherwise it is committed when it returns.
    ///
    /// `body` returns a boxed future (`|txn| Box::pin(async move { .. })`)
    /// so that the whole call stays `Send` and can run in a spawned task.
    pub async fn run_transaction<'c, T, F>(&'c self, options: TxnOptions, mut body: F) -> ClientResult<(T, Committed)>
    where
        F: for<'t> FnMut(&'t mut Transaction<'c>) -> BoxFuture<'t, ClientResult<T>>,
    {
        let deadline = Instant::now() + self.config.timeout;
        let mut backoff = self.config.initial_backoff;
        let mut options = options;
        loop {
            let mut txn = self.transaction_with(options.clone());
            let outcome = match body(&mut txn).await {
                Ok(value) => match txn.last_commit_or_commit().await {
                    Ok(committed) => return Ok((value, committed)),
                    Err(e) => e,
                },
                Err(e) => e,
            };
            if !outcome.is_retryable() || Instant::now() + backoff >= deadline {
                return Err(outcome);
            }
            // Whatever failed it (a conflict, a snapshot too old, an epoch
            // change, a move), a replica's snapshot may be why: read from
            // the primary from now on.
            options.snapshot = SnapshotReads::Strong;
            // Jittered, so two transactions that conflicted do not retry in step.
            let jitter = rand::random::<f64>() * 0.5 + 0.75;
            tokio::time::sleep(backoff.mul_f64(jitter)).await;
            backoff = (backoff * 2).min(self.config.max_backoff.max(Duration::from_millis(200)));
        }
    }
}

impl ShoalClient {
    fn commit_token(&self, shard: ShardId) -> Option<u64> {
        let tokens = self.commit_tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens.get(&shard).copied()
    }

    fn note_commit(&self, shard: ShardId, version: u64) {
        let mut tokens = self.commit_tokens.lock().unwrap_or_else(|p| p.into_inner());
        let token = tokens.entry(shard).or_default();
        *token = (*token).max(version);
    }
}

impl Transaction<'_> {
    fn ensure_open(&self) -> ClientResult<()> {
        match self.state {
            State::Open => Ok(()),
            State::Committed => Err(ClientError::refused(
                ErrorCode::TxnFinished,
                "the transaction was already committed",
            )),
            State::Aborted => Err(ClientError::refused(
                ErrorCode::TxnFinished,
                "the transaction was aborted",
            )),
        }
    }

    fn ensure_writable(&self) -> ClientResult<()> {
        self.ensure_open()?;
        if self.options.read_only {
            return Err(ClientError::refused(
                ErrorCode::ReadOnlyTxn,
                "a write in a read-only transaction",
            ));
        }
        Ok(())
    }

    /// Places `key` and checks it lives in the transaction's shard.
    async fn place(&mut self, key: &Key) -> ClientResult<Placement> {
        let placement = self.client.place(key).await?;
        match self.shard {
            None => self.shard = Some(placement.shard),
            Some(shard) if shard != placement.shard => {
                let moved = self.touched(placement.ushard);
                return Err(if moved {
                    moved_error(placement.ushard, shard, placement.shard)
                } else {
                    ClientError::refused(
                        ErrorCode::CrossShardTxn,
                        format!(
                            "key {} is in shard {}, the transaction's other keys in shard {shard}: a transaction lives in one shard (give its keys one routing key)",
                            key.key.escape_ascii(),
                            placement.shard
                        ),
                    )
                });
            }
            Some(_) => {}
        }
        Ok(placement)
    }

    /// Whether the transaction read or wrote anything in `ushard`.
    fn touched(&self, ushard: u32) -> bool {
        self.reads.keys().chain(self.writes.keys()).any(|(u, _)| *u == ushard)
            || self.ranges.iter().any(|(u, _, _)| *u == ushard)
    }

    /// How a read of `shard` is asked for. A replica snapshot of a shard
    /// this client committed to must hold that commit (read-your-writes
    /// across transactions: without it a transaction would conflict with
    /// the client's own last one on a lagging follower); otherwise any
    /// replica within the staleness bound.
    fn consistency(&self, shard: ShardId) -> ReadConsistency {
        match self.options.snapshot {
            SnapshotReads::Strong => ReadConsistency::Strong,
            SnapshotReads::Replica(bound) => match self.client.commit_token(shard) {
                Some(version) => ReadConsistency::AtLeast(version),
                None => ReadConsistency::Bounded(bound),
            },
        }
    }

    /// Takes in where a read was served: the shard that answered, its
    /// epoch and applied version. The snapshot is the lowest applied
    /// version of any read, so every read was served at it or later.
    fn note_served(&mut self, ushard: u32, shard: ShardId, epoch: u64, applied: u64) -> ClientResult<()> {
        let ours = *self.shard.get_or_insert(shard);
        if shard != ours {
            return Err(moved_error(ushard, ours, shard));
        }
        match &mut self.snapshot {
            None => self.snapshot = Some((applied, epoch)),
            Some((_, first_epoch)) if *first_epoch != epoch => {
                return Err(ClientError::refused(
                    ErrorCode::EpochChanged,
                    format!(
                    "shard {ours} changed primary during the transaction (epoch {first_epoch}, now {epoch}): retry it"
                ),
                ))
            }
            Some((version, _)) => *version = (*version).min(applied),
        }
        Ok(())
    }

    /// What the transaction knows of `slot` already: its own write, or an
    /// earlier read (so reads repeat).
    fn known(&self, slot: &Slot) -> Option<Option<Vec<u8>>> {
        match self.writes.get(slot) {
            Some(Write::Put(value)) => return Some(Some(value.clone())),
            Some(Write::Delete) => return Some(None),
            None => {}
        }
        self.reads
            .get(slot)
            .map(|read| read.as_ref().map(|(value, _)| value.clone()))
    }

    fn remember_read(&mut self, slot: Slot, read: Option<(Vec<u8>, u64)>) {
        self.read_bytes += slot.1.len() + read.as_ref().map(|(v, _)| v.len()).unwrap_or(0);
        // The first read of a key is the one validated: a later read that
        // saw another version will fail the commit anyway.
        self.reads.entry(slot).or_insert(read);
    }

    /// Reads a key (None: absent).
    pub async fn get(&mut self, key: impl Into<Key>) -> ClientResult<Option<Vec<u8>>> {
        self.ensure_open()?;
        let key = key.into();
        let placement = self.place(&key).await?;
        let slot = (placement.ushard, key.key.clone());
        if let Some(known) = self.known(&slot) {
            return Ok(known);
        }
        let consistency = self.consistency(placement.shard);
        let answer = self.client.get_traced(key, |_| consistency).await?;
        self.note_served(placement.ushard, answer.shard, answer.epoch, answer.applied_version)?;
        let read = answer.value.map(|v| (v.value, v.version));
        self.remember_read(slot, read.clone());
        Ok(read.map(|(value, _)| value))
    }

    /// Reads several keys of the shard in one request; answers in order.
    pub async fn get_many(&mut self, keys: Vec<Key>) -> ClientResult<Vec<Option<Vec<u8>>>> {
        self.ensure_open()?;
        let mut out = vec![None; keys.len()];
        let mut wanted: Vec<(usize, Slot)> = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let placement = self.place(key).await?;
            let slot = (placement.ushard, key.key.clone());
            match self.known(&slot) {
                Some(known) => out[i] = known,
                None => wanted.push((i, slot)),
            }
        }
        let Some(shard) = self.shard.filter(|_| !wanted.is_empty()) else {
            return Ok(out);
        };
        let consistency = self.consistency(shard);
        let request = MultiGetRequest {
            header: None, // set per attempt by `send`
            keys: wanted
                .iter()
                .map(|(_, (ushard, key))| KeyRef {
                    ushard: *ushard,
                    key: key.clone(),
                })
                .collect(),
            consistency: consistency.to_wire(),
        };
        let response = self
            .client
            .send(
                pinned(shard),
                read_kind(consistency),
                &request,
                |mut c, request| async move { c.multi_get(request).await },
            )
            .await?;
        let epoch = response.header.as_ref().map(|h| h.epoch).unwrap_or(0);
        let answered = response.header.as_ref().map(|h| ShardId(h.shard_id)).unwrap_or(shard);
        if response.values.len() != wanted.len() {
            return Err(ClientError::Routing(format!(
                "a multi-get of {} keys got {} answers",
                wanted.len(),
                response.values.len()
            )));
        }
        for ((i, slot), value) in wanted.into_iter().zip(response.values) {
            self.note_served(slot.0, answered, epoch, value.applied_version)?;
            let read = value.value.map(|v| (v.value, v.version));
            out[i] = read.as_ref().map(|(value, _)| value.clone());
            self.remember_read(slot, read);
        }
        Ok(out)
    }

    /// Reads every key with `prefix` in `routing`'s μshard, up to `limit`
    /// entries, in key order, with the transaction's own writes laid over.
    pub async fn scan_prefix(
        &mut self,
        routing: &[u8],
        prefix: &[u8],
        limit: usize,
    ) -> ClientResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let end = prefix_successor(prefix).unwrap_or_default();
        self.scan(routing, prefix, &end, limit).await
    }

    /// Reads the keys in `[start, end)` (empty end: to the end) of
    /// `routing`'s μshard, up to `limit` entries, in key order, with the
    /// transaction's own writes laid over. The range read becomes part of
    /// what the commit validates: a key written in it since is a conflict.
    pub async fn scan(
        &mut self,
        routing: &[u8],
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> ClientResult<Vec<(Vec<u8>, Vec<u8>)>> {
        self.ensure_open()?;
        if limit == 0 {
            return Err(ClientError::InvalidArgument("a scan's limit must be at least 1".into()));
        }
        let placement = self.place(&Key::routed(routing, routing)).await?;
        let ushard = placement.ushard;
        let consistency = self.consistency(placement.shard);
        let mut found: Vec<(Vec<u8>, Vec<u8>, u64)> = Vec::new();
        let mut resume_after = Vec::new();
        // Where the range read ends: the end asked for, or just past the
        // last key read once `limit` entries, this transaction's own writes
        // laid over, are in hand (its deletes may hide some of what the
        // server returned, so a page of `limit` may not be enough).
        let covered_end = loop {
            let request = ScanRequest {
                header: None, // set per attempt by `send`
                ushard: Some(ushard),
                start: start.to_vec(),
                end: end.to_vec(),
                limit: limit.min(SCAN_PAGE) as u32,
                resume_after: resume_after.clone(),
                consistency: consistency.to_wire(),
                ..ScanRequest::default()
            };
            let response = self
                .client
                .send(
                    placement,
                    read_kind(consistency),
                    &request,
                    |mut c, request| async move { c.scan(request).await },
                )
                .await?;
            let epoch = response.header.as_ref().map(|h| h.epoch).unwrap_or(0);
            let answered = response
                .header
                .as_ref()
                .map(|h| ShardId(h.shard_id))
                .unwrap_or(placement.shard);
            self.note_served(ushard, answered, epoch, response.applied_version)?;
            found.extend(response.entries.into_iter().map(|e| (e.key, e.value, e.version)));
            let last_end = found.last().map(|(last, _, _)| [last.as_slice(), &[0]].concat());
            match last_end {
                Some(last_end) if response.more && !response.resume_after.is_empty() => {
                    if self.overlaid_count(ushard, start, &last_end, &found) >= limit {
                        break last_end;
                    }
                }
                _ => break end.to_vec(),
            }
            resume_after = response.resume_after;
        };
        self.ranges.push((ushard, start.to_vec(), covered_end.clone()));
        let mut view: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        for (key, value, version) in found {
            self.remember_read((ushard, key.clone()), Some((value.clone(), version)));
            view.insert(key, value);
        }
        let in_range = |key: &[u8]| key >= start && (covered_end.is_empty() || key < covered_end.as_slice());
        for ((u, key), write) in &self.writes {
            if *u != ushard || !in_range(key) {
                continue;
            }
            match write {
                Write::Put(value) => view.insert(key.clone(), value.clone()),
                Write::Delete => view.remove(key),
            };
        }
        Ok(view.into_iter().take(limit).collect())
    }

    /// How many entries a scan of `[start, end)` of `ushard` shows: what
    /// the server returned, with this transaction's writes laid over.
    fn overlaid_count(&self, ushard: u32, start: &[u8], end: &[u8], found: &[(Vec<u8>, Vec<u8>, u64)]) -> usize {
        let mut keys: std::collections::BTreeSet<&[u8]> = found.iter().map(|(k, _, _)| k.as_slice()).collect();
        for ((u, key), write) in &self.writes {
            if *u != ushard || key.as_slice() < start || key.as_slice() >= end {
                continue;
            }
            match write {
                Write::Put(_) => keys.insert(key),
                Write::Delete => keys.remove(key.as_slice()),
            };
        }
        keys.len()
    }

    /// Buffers a put.
    pub async fn put(&mut self, key: impl Into<Key>, value: impl Into<Vec<u8>>) -> ClientResult<()> {
        self.ensure_writable()?;
        let key = key.into();
        let placement = self.place(&key).await?;
        self.writes
            .insert((placement.ushard, key.key), Write::Put(value.into()));
        Ok(())
    }

    /// Buffers a delete.
    pub async fn delete(&mut self, key: impl Into<Key>) -> ClientResult<()> {
        self.ensure_writable()?;
        let key = key.into();
        let placement = self.place(&key).await?;
        self.writes.insert((placement.ushard, key.key), Write::Delete);
        Ok(())
    }

    /// Adds `delta` to a decimal counter (absent = 0): a read and a
    /// buffered put, so the commit validates the value it started from.
    /// Returns the new value.
    pub async fn increment(&mut self, key: impl Into<Key>, delta: i64) -> ClientResult<i64> {
        self.ensure_writable()?;
        let key = key.into();
        let current = self.get(key.clone()).await?;
        let base = match current {
            None => 0,
            Some(bytes) => std::str::from_utf8(&bytes)
                .ok()
                .and_then(|text| text.parse::<i64>().ok())
                .ok_or_else(|| {
                    ClientError::refused(
                        ErrorCode::NotACounter,
                        format!(
                            "key {} holds a value that is not a decimal 64-bit integer",
                            key.key.escape_ascii()
                        ),
                    )
                })?,
        };
        let sum = base.checked_add(delta).ok_or_else(|| {
            ClientError::refused(
                ErrorCode::NotACounter,
                format!("{base} + {delta} overflows a 64-bit integer"),
            )
        })?;
        self.put(key, sum.to_string()).await?;
        Ok(sum)
    }

    /// Gives the transaction up: nothing is sent, nothing applied.
    pub fn abort(&mut self) {
        if self.state == State::Open {
            self.state = State::Aborted;
        }
    }

    /// Whether the transaction is still open.
    pub fn is_open(&self) -> bool {
        self.state == State::Open
    }

    /// Commits: validates every read and applies every write at one point
    /// of the shard's log, or writes nothing (`TXN_CONFLICT` names the
    /// keys). A read-only transaction is validated too.
    pub async fn commit(&mut self) -> ClientResult<Committed> {
        self.ensure_open()?;
        // Finished whatever the answer: a retry is a new transaction.
        self.state = State::Committed;
        let request = self.commit_request()?;
        let shard = self
            .shard
            .ok_or_else(|| ClientError::refused(ErrorCode::EmptyTxn, "a commit with no reads and no writes"))?;
        let (ticket, kind) = self.client.write_ticket();
        let request = CommitRequest {
            options: write_options(ticket.as_ref(), false),
            ..request
        };
        let response = self
            .client
            .send(pinned(shard), kind, &request, |mut c, request| async move {
                c.commit(request).await
            })
            .await?;
        if response.conflict {
            return Err(ClientError::TxnConflict {
                keys: response.conflicts.into_iter().map(|k| k.key).collect(),
            });
        }
        let committed = Committed {
            shard: shard.0,
            version: response.version,
        };
        self.client.note_commit(shard, response.version);
        self.committed = Some(committed);
        Ok(committed)
    }

    /// Commits unless `body` already did (for [`ShoalClient::run_transaction`]).
    async fn last_commit_or_commit(&mut self) -> ClientResult<Committed> {
        match self.state {
            State::Open => self.commit().await,
            // Committed by the body; a failed commit's error went to it
            // (and it returned Ok regardless): that is its decision.
            State::Committed => self.committed.ok_or_else(|| {
                ClientError::refused(
                    ErrorCode::TxnFinished,
                    "the transaction's own commit failed, and it returned success",
                )
            }),
            State::Aborted => Err(ClientError::refused(
                ErrorCode::TxnFinished,
                "the transaction was aborted",
            )),
        }
    }

    /// The commit request, once the limits hold.
    fn commit_request(&self) -> ClientResult<CommitRequest> {
        if self.reads.is_empty() && self.ranges.is_empty() && self.writes.is_empty() {
            return Err(ClientError::refused(
                ErrorCode::EmptyTxn,
                "a commit with no reads and no writes",
            ));
        }
        let elapsed = self.started.elapsed();
        if elapsed > self.options.max_duration {
            return Err(ClientError::refused(
                ErrorCode::TxnTooOld,
                format!(
                    "the transaction ran {elapsed:?}, over its limit of {:?}: retry it",
                    self.options.max_duration
                ),
            ));
        }
        let keys = self.reads.len() + self.ranges.len() + self.writes.len();
        if keys > self.options.max_keys {
            return Err(ClientError::refused(
                ErrorCode::TxnTooLarge,
                format!(
                    "{keys} reads, ranges and writes; the limit is {}",
                    self.options.max_keys
                ),
            ));
        }
        let write_bytes: usize = self
            .writes
            .iter()
            .map(|((_, key), write)| {
                key.len()
                    + match write {
                        Write::Put(value) => value.len(),
                        Write::Delete => 0,
                    }
            })
            .sum();
        let bytes = self.read_bytes + write_bytes;
        if bytes > self.options.max_bytes {
            return Err(ClientError::refused(
                ErrorCode::TxnTooLarge,
                format!(
                    "{bytes} bytes of keys and values; the limit is {}",
                    self.options.max_bytes
                ),
            ));
        }
        let (snapshot_version, snapshot_epoch) = self.snapshot.unwrap_or((0, 0));
        Ok(CommitRequest {
            header: None, // set per attempt by `send`
            snapshot_version,
            snapshot_epoch,
            reads: self
                .reads
                .iter()
                .map(|((ushard, key), read)| TxnRead {
                    key: Some(KeyRef {
                        ushard: *ushard,
                        key: key.clone(),
                    }),
                    version: read.as_ref().map(|(_, v)| *v).unwrap_or(0),
                })
                .collect(),
            ranges: self
                .ranges
                .iter()
                .map(|(ushard, start, end)| TxnRange {
                    ushard: *ushard,
                    start: start.clone(),
                    end: end.clone(),
                })
                .collect(),
            writes: self
                .writes
                .iter()
                .map(|((ushard, key), write)| {
                    let key = Some(KeyRef {
                        ushard: *ushard,
                        key: key.clone(),
                    });
                    let op = match write {
                        Write::Put(value) => batch_op::Op::Put(PutOp {
                            key,
                            value: value.clone(),
                            ..PutOp::default()
                        }),
                        Write::Delete => batch_op::Op::Delete(DeleteOp {
                            key,
                            ..DeleteOp::default()
                        }),
                    };
                    BatchOp { op: Some(op) }
                })
                .collect(),
            options: None,
        })
    }
}

/// A request about the transaction's shard that must not follow a μshard
/// elsewhere: its snapshot was taken there.
fn pinned(shard: ShardId) -> Target {
    Target {
        shard,
        ushard: None,
        pinned: true,
    }
}

fn moved_error(ushard: u32, from: ShardId, to: ShardId) -> ClientError {
    ClientError::refused(
        ErrorCode::Moving,
        format!("ushard {ushard} moved from shard {from} to shard {to} during the transaction: retry it"),
    )
}

/// The smallest byte string greater than every string with `prefix`
/// (None: there is none; the prefix is empty or all 0xFF).
fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_ends_just_past_its_last_key() {
        assert_eq!(prefix_successor(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_successor(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_successor(b"\xff\xff"), None);
        assert_eq!(prefix_successor(b""), None);
    }
}
