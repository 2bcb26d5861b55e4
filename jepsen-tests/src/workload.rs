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
//! - **cas-register**: strong reads, writes and compare-and-sets over a small
//!   value domain (1..=5, so CAS often succeeds), keys rotating every 100
//!   operations; checked for linearizability.
//! - **bounded**: each process writes increasing values to a key of its
//!   own and reads other processes' keys with bounded staleness
//!   ([`BOUNDED_STALENESS`]), served by followers first.
//! - **ryw**: each process writes increasing values to its own key through
//!   a [`kv_client::Session`] and reads it back through the session
//!   (followers first); every read must see the process's last write.

use crate::history::{Op, OpKind, Outcome, Recorder};
use kv_client::{ClientError, Condition, PutOptions, ReadConsistency, Session, ShoalClient, WriteResult};
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Operations per register key before the clients move on.
pub const OPS_PER_KEY: u64 = 100;

/// The bound of the bounded workload's reads.
pub const BOUNDED_STALENESS: std::time::Duration = std::time::Duration::from_millis(1_000);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    Register,
    Set,
    CasRegister,
    Bounded,
    Ryw,
}

impl Workload {
    pub const ALL: [Workload; 5] = [
        Workload::Register,
        Workload::Set,
        Workload::CasRegister,
        Workload::Bounded,
        Workload::Ryw,
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
        }
    }
}

/// A write's outcome: indeterminate errors are `Info`, never failures.
fn write_outcome(result: &Result<(), ClientError>) -> Outcome {
    match result {
        Ok(()) => Outcome::Ok,
        Err(e) if e.is_indeterminate() => Outcome::Info,
        Err(_) => Outcome::Fail,
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

/// Runs client `process` until `ctx.stop`.
pub async fn client_loop(ctx: ClientContext, process: usize) {
    let ClientContext {
        workload,
        seed,
        prefix,
        client,
        counter,
        stop,
        recorder,
        clients,
    } = ctx;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ process as u64);
    let session = Session::new(client.clone());
    // The last value this process wrote to its own key (bounded, ryw).
    let mut own = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
        let invoke_ns = recorder.now();
        let (key, kind, outcome, error) = match workload {
            Workload::Register => {
                let key = format!("{prefix}/reg/{}", n / OPS_PER_KEY);
                if rng.gen_bool(0.5) {
                    let result = client.get(key.clone()).await;
                    let (value, outcome, error) = match result {
                        Ok(v) => (Some(v.map(|v| parse_value(&v.value)).unwrap_or(0)), Outcome::Ok, None),
                        // A read has no effect; whatever went wrong, it tells nothing.
                        Err(e) => (None, Outcome::Info, Some(e.to_string())),
                    };
                    (key, OpKind::Read { value }, outcome, error)
                } else {
                    let result = client.put(key.clone(), n.to_string()).await.map(|_| ());
                    let outcome = write_outcome(&result);
                    (
                        key,
                        OpKind::Write { value: n },
                        outcome,
                        result.err().map(|e| e.to_string()),
                    )
                }
            }
            Workload::CasRegister => {
                let key = format!("{prefix}/cas/{}", n / OPS_PER_KEY);
                match rng.gen_range(0..3) {
                    0 => {
                        let result = client.get(key.clone()).await;
                        let (value, outcome, error) = match result {
                            Ok(v) => (Some(v.map(|v| parse_value(&v.value)).unwrap_or(0)), Outcome::Ok, None),
                            Err(e) => (None, Outcome::Info, Some(e.to_string())),
                        };
                        (key, OpKind::Read { value }, outcome, error)
                    }
                    1 => {
                        let value = rng.gen_range(1..=5);
                        let result = client.put(key.clone(), value.to_string()).await.map(|_| ());
                        let outcome = write_outcome(&result);
                        (
                            key,
                            OpKind::Write { value },
                            outcome,
                            result.err().map(|e| e.to_string()),
                        )
                    }
                    _ => {
                        let (expected, new) = (rng.gen_range(1..=5), rng.gen_range(1..=5));
                        let options = PutOptions {
                            condition: Some(Condition::Value(expected.to_string().into_bytes())),
                            ..PutOptions::default()
                        };
                        let result = client.put_with(key.clone(), new.to_string(), &options).await;
                        let (outcome, error) = match result {
                            Ok(WriteResult::Applied(_)) => (Outcome::Ok, None),
                            Ok(WriteResult::ConditionFailed { .. }) => (Outcome::Fail, None),
                            Err(e) if e.is_indeterminate() => (Outcome::Info, Some(e.to_string())),
                            Err(e) => (Outcome::Fail, Some(e.to_string())),
                        };
                        (key, OpKind::Cas { expected, new }, outcome, error)
                    }
                }
            }
            Workload::Bounded | Workload::Ryw => {
                let key_of = |p: usize| format!("{prefix}/{}/{p}", workload.name());
                // Writes to its own key alternate with reads; a bounded read
                // looks at another process's key, a ryw read at its own.
                if rng.gen_bool(0.5) {
                    let value = own + 1;
                    let result = if workload == Workload::Ryw {
                        session.put(key_of(process), value.to_string()).await.map(|_| ())
                    } else {
                        client.put(key_of(process), value.to_string()).await.map(|_| ())
                    };
                    // Values stay increasing whatever the outcome: an
                    // indeterminate write may still land.
                    own = value;
                    let outcome = write_outcome(&result);
                    (
                        key_of(process),
                        OpKind::Write { value },
                        outcome,
                        result.err().map(|e| e.to_string()),
                    )
                } else {
                    let (key, result) = if workload == Workload::Ryw {
                        (key_of(process), session.get(key_of(process)).await)
                    } else {
                        let other = rng.gen_range(0..clients.max(1));
                        let key = key_of(other);
                        let read = client
                            .get_with(key.clone(), ReadConsistency::Bounded(BOUNDED_STALENESS))
                            .await;
                        (key, read)
                    };
                    let (value, outcome, error) = match result {
                        Ok(v) => (Some(v.map(|v| parse_value(&v.value)).unwrap_or(0)), Outcome::Ok, None),
                        Err(e) => (None, Outcome::Info, Some(e.to_string())),
                    };
                    (key, OpKind::Read { value }, outcome, error)
                }
            }
            Workload::Set => {
                let key = set_key(&prefix, n);
                let result = client.put(key.clone(), n.to_string()).await.map(|_| ());
                let outcome = write_outcome(&result);
                (
                    key,
                    OpKind::Add { element: n },
                    outcome,
                    result.err().map(|e| e.to_string()),
                )
            }
        };
        recorder.record(Op {
            process,
            key,
            kind,
            outcome,
            invoke_ns,
            complete_ns: recorder.now(),
            error,
        });
    }
}

/// The key of set element `n` in the run whose keys start with `prefix`.
pub fn set_key(prefix: &str, n: u64) -> String {
    format!("{prefix}/set/{n:012}")
}

/// Values are decimal numbers; anything else is a value nobody wrote, which
/// the checkers then flag (u64::MAX is never written).
pub fn parse_value(bytes: &[u8]) -> u64 {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(u64::MAX)
}
