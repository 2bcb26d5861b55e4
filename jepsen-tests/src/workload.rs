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

use crate::history::{Op, OpKind, Outcome, Recorder};
use kv_client::{ClientError, ShoalClient};
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Operations per register key before the clients move on.
pub const OPS_PER_KEY: u64 = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    Register,
    Set,
}

impl Workload {
    pub fn parse(name: &str) -> anyhow::Result<Workload> {
        match name {
            "register" => Ok(Workload::Register),
            "set" => Ok(Workload::Set),
            other => anyhow::bail!("unknown workload {other:?}; known: register, set"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Workload::Register => "register",
            Workload::Set => "set",
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
    } = ctx;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ process as u64);
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
