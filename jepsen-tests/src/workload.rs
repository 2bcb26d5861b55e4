//! Workloads: what the clients do while the nemesis works.
//!
//! Every run writes under a prefix of its own (`run-<seed>-<unix time>`), so
//! a cluster that outlives a run (compose) never shows one run's values to
//! the next.
//!
//! - **register**: strong reads and writes of unique values on a key; every
//!   100 operations the clients move to a fresh key, so each key's history
//!   stays small enough for the linearizability search.
//! - **set**: each add writes a key of its own (`set/<element>`); at the end
//!   one strong scan reads back what the set holds.
//! - **cas-register**: strong reads, writes and compare-and-sets of unique
//!   values (a CAS expects the last value its process saw, so it often
//!   succeeds), keys rotating every 100 operations; checked for
//!   linearizability.
//! - **bounded**: each process writes increasing values to a key of its
//!   own and reads other processes' keys with bounded staleness
//!   ([`BOUNDED_STALENESS`]), served by followers first.
//! - **ttl**: keys shared by every process (rotating every
//!   [`TTL_OPS_PER_KEY`] operations), written with short TTLs (100 ms – 1 s)
//!   by puts and put-if-absents of unique values, deleted by
//!   delete-if-present, read by strong reads: once anything else has been
//!   seen after a value, that value must never be seen again (no key comes
//!   back from expiry, deletion or overwrite), whatever the clocks do.
//!   Beside each key a counter (no TTL) takes exactly-once increments and
//!   strong reads: every value seen must count each acknowledged increment
//!   once and no increment twice (a forgotten exactly-once record would
//!   let a retry apply again).
//! - **fast-ack**: like set, each add writes a key of its own, but with
//!   fast-ack writes; at the end one strong scan reads the set back.
//!   Acknowledged adds lost are counted; under faults that kill or cut off
//!   no primary (move-primary, drain, sm-kill, node-clock-jump:
//!   `Nemesis::may_lose_fast_acks`) any loss is invalid.
//! - **pairs**: a pair of keys in one micro-shard, always written together
//!   by one atomic batch of the same unique value, read back by strong
//!   multi-gets and strong scans; every read must see both keys alike, and
//!   the pair, read as one register, must be linearizable.
//! - **bank** and **list-append**: transactions, see [`crate::txn_workload`].
//! - **ryw**: each process writes increasing values to its own key through
//!   a [`kv_client::Session`] and reads it back through the session
//!   (followers first); every read must see the process's last write, and
//!   no read may see an older value than the process's previous read.

use crate::history::{Op, OpKind, Outcome, Recorder, Step};
use kv_client::{
    ClientError, Condition, Key, Mutation, PutOptions, ReadConsistency, ScanOptions, Session, ShoalClient, Versioned,
    WriteAck, WriteResult,
};
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Operations per register key before the clients move on.
pub const OPS_PER_KEY: u64 = 100;

/// Operations per ttl key: enough time per key for its TTLs to run out.
pub const TTL_OPS_PER_KEY: u64 = 1000;

/// The bound of the bounded workload's reads.
pub const BOUNDED_STALENESS: std::time::Duration = std::time::Duration::from_millis(1_000);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    Register,
    Set,
    CasRegister,
    Bounded,
    Ryw,
    Pairs,
    Ttl,
    FastAck,
    Bank,
    ListAppend,
}

impl Workload {
    pub const ALL: [Workload; 10] = [
        Workload::Register,
        Workload::Set,
        Workload::CasRegister,
        Workload::Bounded,
        Workload::Ryw,
        Workload::Pairs,
        Workload::Ttl,
        Workload::FastAck,
        Workload::Bank,
        Workload::ListAppend,
    ];

    pub fn parse(name: &str) -> anyhow::Result<Workload> {
        Workload::ALL.into_iter().find(|w| w.name() == name).ok_or_else(|| {
            let known: Vec<_> = Workload::ALL.iter().map(|w| w.name()).collect();
            anyhow::anyhow!("unknown workload {name:?}; known: {}", known.join(", "))
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Workload::Register => "register",
            Workload::Set => "set",
            Workload::CasRegister => "cas-register",
            Workload::Bounded => "bounded",
            Workload::Ryw => "ryw",
            Workload::Pairs => "pairs",
            Workload::Ttl => "ttl",
            Workload::FastAck => "fast-ack",
            Workload::Bank => "bank",
            Workload::ListAppend => "list-append",
        }
    }
}

/// The version an acknowledged write's answer carries (a fast-ack write
/// answers version 0: none).
trait AckVersion {
    fn ack_version(&self) -> Option<u64>;
}

impl AckVersion for WriteAck {
    fn ack_version(&self) -> Option<u64> {
        (self.version > 0).then_some(self.version)
    }
}

impl AckVersion for WriteResult {
    fn ack_version(&self) -> Option<u64> {
        match self {
            WriteResult::Applied(ack) => ack.ack_version(),
            WriteResult::ConditionFailed { .. } => None,
        }
    }
}

impl AckVersion for (i64, WriteAck) {
    fn ack_version(&self) -> Option<u64> {
        self.1.ack_version()
    }
}

/// A write step: indeterminate errors are `Info`, never failures.
fn write_step<T: AckVersion>(key: String, kind: OpKind, result: Result<T, ClientError>) -> Step {
    let (outcome, error, version) = match result {
        Ok(ack) => (Outcome::Ok, None, ack.ack_version()),
        Err(e) if e.is_indeterminate() => (Outcome::Info, Some(e.to_string()), None),
        Err(e) => (Outcome::Fail, Some(e.to_string()), None),
    };
    (key, kind, outcome, error, version)
}

/// A read step: a failed read has no effect and tells nothing, so it is `Info`.
fn read_step(key: String, result: Result<Option<Versioned>, ClientError>) -> Step {
    match result {
        Ok(v) => {
            let version = v.as_ref().map(|v| v.version);
            let value = Some(v.map(|v| parse_value(&v.value)).unwrap_or(0));
            (key, OpKind::Read { value }, Outcome::Ok, None, version)
        }
        Err(e) => (
            key,
            OpKind::Read { value: None },
            Outcome::Info,
            Some(e.to_string()),
            None,
        ),
    }
}

/// What every client of a run shares.
#[derive(Clone)]
pub struct ClientContext {
    pub workload: Workload,
    pub seed: u64,
    /// Every key of the run starts with this.
    pub prefix: Arc<str>,
    pub client: Arc<ShoalClient>,
    /// Hands out unique values (and register key generations).
    pub counter: Arc<AtomicU64>,
    pub stop: Arc<AtomicBool>,
    pub recorder: Recorder,
    /// How many client processes the run has.
    pub clients: usize,
}

/// One client process's state across its operations.
struct Process {
    ctx: ClientContext,
    id: usize,
    rng: rand::rngs::StdRng,
    session: Session,
    /// The last value this process wrote to its own key (bounded, ryw).
    own: u64,
    /// The cas-register key generation and the last value this process
    /// read or wrote there.
    cas_seen: Option<(u64, u64)>,
}

impl Process {
    /// Strong reads and writes of unique values.
    async fn register(&mut self, n: u64) -> Step {
        let key = format!("{}/reg/{}", self.ctx.prefix, n / OPS_PER_KEY);
        if self.rng.gen_bool(0.5) {
            read_step(key.clone(), self.ctx.client.get(key).await)
        } else {
            let result = self.ctx.client.put(key.clone(), n.to_string()).await;
            write_step(key, OpKind::Write { value: n }, result)
        }
    }

    /// Strong reads, writes and compare-and-sets, every written value
    /// unique (so a write reported failed that did apply shows up as a
    /// value no write could have made). A compare-and-set expects the last
    /// value this process saw on the key, so it often succeeds.
    async fn cas_register(&mut self, n: u64) -> Step {
        let generation = n / OPS_PER_KEY;
        let key = format!("{}/cas/{generation}", self.ctx.prefix);
        let client = &self.ctx.client;
        let last_seen = self.cas_seen.filter(|(g, _)| *g == generation).map(|(_, v)| v);
        let step = match (self.rng.gen_range(0..3), last_seen) {
            (0, _) => read_step(key.clone(), client.get(key).await),
            // With nothing seen yet there is nothing to compare with: write.
            (1, _) | (_, None) => {
                let result = client.put(key.clone(), n.to_string()).await;
                write_step(key, OpKind::Write { value: n }, result)
            }
            (_, Some(expected)) => {
                let options = PutOptions {
                    condition: Some(Condition::Value(expected.to_string().into_bytes())),
                    ..PutOptions::default()
                };
                let result = client.put_with(key.clone(), n.to_string(), &options).await;
                let kind = OpKind::Cas { expected, new: n };
                match result {
                    // A refused condition is an answer: `Fail` with no error.
                    Ok(WriteResult::ConditionFailed { .. }) => (key, kind, Outcome::Fail, None, None),
                    other => write_step(key, kind, other),
                }
            }
        };
        let seen = match (&step.1, step.2) {
            (OpKind::Read { value: Some(v) }, Outcome::Ok) if *v != 0 => Some(*v),
            (OpKind::Write { value }, Outcome::Ok) => Some(*value),
            (OpKind::Cas { new, .. }, Outcome::Ok) => Some(*new),
            _ => None,
        };
        if let Some(v) = seen {
            self.cas_seen = Some((generation, v));
        }
        step
    }

    /// Writes of increasing values to the process's own key, alternating
    /// with reads: bounded reads of another process's key, or session
    /// reads of its own.
    async fn own_key(&mut self) -> Step {
        let workload = self.ctx.workload;
        let key_of = |p: usize| format!("{}/{}/{p}", self.ctx.prefix, workload.name());
        let mine = key_of(self.id);
        if self.rng.gen_bool(0.5) {
            // Values stay increasing whatever the outcome: an indeterminate
            // write may still land.
            self.own += 1;
            let value = self.own.to_string();
            let result = match workload {
                Workload::Ryw => self.session.put(mine.clone(), value).await,
                _ => self.ctx.client.put(mine.clone(), value).await,
            };
            write_step(mine, OpKind::Write { value: self.own }, result)
        } else if workload == Workload::Ryw {
            read_step(mine.clone(), self.session.get(mine).await)
        } else {
            let other = key_of(self.rng.gen_range(0..self.ctx.clients.max(1)));
            let consistency = ReadConsistency::Bounded(BOUNDED_STALENESS);
            read_step(other.clone(), self.ctx.client.get_with(other, consistency).await)
        }
    }

    /// Writes with short TTLs, conditional writes and deletes, strong
    /// reads; increments and reads of a counter beside the key.
    async fn ttl(&mut self, n: u64) -> Step {
        let generation = n / TTL_OPS_PER_KEY;
        let key = format!("{}/ttl/{generation}", self.ctx.prefix);
        let counter = format!("{}/ttl-counter/{generation}", self.ctx.prefix);
        let client = &self.ctx.client;
        let ttl = Some(std::time::Duration::from_millis(self.rng.gen_range(100..1_000)));
        match self.rng.gen_range(0..12) {
            10 => {
                let result = client.increment(counter.clone(), 1).await;
                let answered = result
                    .as_ref()
                    .ok()
                    .map(|(value, _)| u64::try_from(*value).unwrap_or(u64::MAX));
                write_step(counter, OpKind::Increment { result: answered }, result)
            }
            11 => read_step(counter.clone(), client.get(counter).await),
            0..=2 => {
                let options = PutOptions {
                    ttl,
                    ..PutOptions::default()
                };
                let result = client.put_with(key.clone(), n.to_string(), &options).await;
                write_step(key, OpKind::Write { value: n }, result)
            }
            3 | 4 => {
                let options = PutOptions {
                    ttl,
                    condition: Some(Condition::Absent),
                    ..PutOptions::default()
                };
                match client.put_with(key.clone(), n.to_string(), &options).await {
                    Ok(WriteResult::ConditionFailed { current }) => {
                        let found = Some(current.map(|v| parse_value(&v.value)).unwrap_or(0));
                        (key, OpKind::IfAbsent { new: n, found }, Outcome::Fail, None, None)
                    }
                    other => write_step(key, OpKind::IfAbsent { new: n, found: None }, other),
                }
            }
            5 => match client.delete_with(key.clone(), Some(Condition::Present)).await {
                Ok(WriteResult::ConditionFailed { .. }) => (key, OpKind::DeleteIfPresent, Outcome::Fail, None, None),
                other => write_step(key, OpKind::DeleteIfPresent, other),
            },
            _ => read_step(key.clone(), client.get(key).await),
        }
    }

    /// Batch writes of a pair, or strong reads of both its keys.
    async fn pairs(&mut self, n: u64) -> Step {
        let name = format!("{}/pairs/{}", self.ctx.prefix, n / OPS_PER_KEY);
        let keys = [
            Key::routed(name.clone(), format!("{name}/a")),
            Key::routed(name.clone(), format!("{name}/b")),
        ];
        let client = &self.ctx.client;
        match self.rng.gen_range(0..4) {
            0 | 1 => {
                let value = n.to_string().into_bytes();
                let batch = keys.into_iter().map(|k| Mutation::Put(k, value.clone())).collect();
                let result = client.batch(batch).await;
                write_step(name, OpKind::Write { value: n }, result)
            }
            2 => match client.multi_get(keys.to_vec()).await {
                Ok(values) => {
                    let of = |i: usize| {
                        Some(
                            values
                                .get(i)
                                .cloned()
                                .flatten()
                                .map(|v| parse_value(&v.value))
                                .unwrap_or(0),
                        )
                    };
                    let kind = OpKind::ReadPair {
                        a: of(0),
                        b: of(1),
                        by_scan: false,
                    };
                    (name, kind, Outcome::Ok, None, None)
                }
                Err(e) => (name, pair_unknown(false), Outcome::Info, Some(e.to_string()), None),
            },
            _ => {
                // Across the whole keyspace, every shard: a μshard moving
                // between shards meanwhile must still be read exactly once
                // (this found scans that left it out; kv-client scan.rs).
                let options = ScanOptions {
                    prefix: format!("{name}/").into_bytes(),
                    ..ScanOptions::default()
                };
                match client.scan_all(&options, 10).await {
                    Ok(entries) => {
                        let of = |suffix: &str| {
                            let key = format!("{name}/{suffix}").into_bytes();
                            Some(
                                entries
                                    .iter()
                                    .find(|e| e.key == key)
                                    .map(|e| parse_value(&e.value))
                                    .unwrap_or(0),
                            )
                        };
                        let kind = OpKind::ReadPair {
                            a: of("a"),
                            b: of("b"),
                            by_scan: true,
                        };
                        (name, kind, Outcome::Ok, None, None)
                    }
                    Err(e) => (name, pair_unknown(true), Outcome::Info, Some(e.to_string()), None),
                }
            }
        }
    }

    /// Each add writes a key of its own; fast-ack adds acknowledge once
    /// the primary has the entry in its log.
    async fn set(&mut self, n: u64) -> Step {
        let fast_ack = self.ctx.workload == Workload::FastAck;
        let key = set_key(&self.ctx.prefix, self.ctx.workload, n);
        let options = PutOptions {
            fast_ack,
            ..PutOptions::default()
        };
        let result = self.ctx.client.put_with(key.clone(), n.to_string(), &options).await;
        write_step(key, OpKind::Add { element: n }, result)
    }
}

/// Runs client `process` until `ctx.stop`.
pub async fn client_loop(ctx: ClientContext, process: usize) {
    let mut me = Process {
        rng: rand::rngs::StdRng::seed_from_u64(ctx.seed ^ process as u64),
        session: Session::new(ctx.client.clone()),
        ctx,
        id: process,
        own: 0,
        cas_seen: None,
    };
    while !me.ctx.stop.load(Ordering::Relaxed) {
        let n = me.ctx.counter.fetch_add(1, Ordering::Relaxed) + 1;
        let invoke_ns = me.ctx.recorder.now();
        let (key, kind, outcome, error, version) = match me.ctx.workload {
            Workload::Register => me.register(n).await,
            Workload::CasRegister => me.cas_register(n).await,
            Workload::Bounded | Workload::Ryw => me.own_key().await,
            Workload::Set | Workload::FastAck => me.set(n).await,
            Workload::Pairs => me.pairs(n).await,
            Workload::Ttl => me.ttl(n).await,
            Workload::Bank => crate::txn_workload::bank(&me.ctx.client, &me.ctx.prefix, &mut me.rng).await,
            Workload::ListAppend => {
                crate::txn_workload::list_append(&me.ctx.client, &me.ctx.prefix, &mut me.rng, n).await
            }
        };
        me.ctx.recorder.record(Op {
            process,
            key,
            kind,
            outcome,
            invoke_ns,
            complete_ns: me.ctx.recorder.now(),
            error,
            version,
        });
    }
}

/// A pair read that failed: it tells nothing.
fn pair_unknown(by_scan: bool) -> OpKind {
    OpKind::ReadPair {
        a: None,
        b: None,
        by_scan,
    }
}

/// The key of set element `n` of `workload` (set or fast-ack) in the run
/// whose keys start with `prefix`.
pub fn set_key(prefix: &str, workload: Workload, n: u64) -> String {
    format!("{prefix}/{}/{n:012}", workload.name())
}

/// Values are decimal numbers; anything else is a value nobody wrote, which
/// the checkers then flag (u64::MAX is never written).
pub fn parse_value(bytes: &[u8]) -> u64 {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(u64::MAX)
}
