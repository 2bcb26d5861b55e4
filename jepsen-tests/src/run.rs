//! One run: clients and a nemesis against a target for a while, then a
//! final read (set), the history written out, and a verdict.

use crate::checker::{
    check_fresh_reads, check_kept, check_pairs, check_register, check_ttl, check_versions, FreshnessRule, LossRule,
    Verdict,
};
use crate::history::{Counts, NemesisEvent, Op, OpKind, Outcome, Recorder};
use crate::nemesis::{run_schedule, Nemesis};
use crate::target::Target;
use crate::txn_checker::{check_bank, check_list_append};
use crate::txn_workload::{setup_bank, ACCOUNTS, INITIAL_BALANCE};
use crate::workload::{client_loop, parse_value, set_key, ClientContext, Workload, BOUNDED_STALENESS};
use kv_client::{ClientConfig, ScanOptions, ShoalClient};
use serde::Serialize;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct RunConfig {
    pub workload: Workload,
    pub nemeses: Vec<Nemesis>,
    /// Overlap up to three faults at a time (`--nemesis all`).
    pub composed: bool,
    pub duration: Duration,
    pub seed: u64,
    pub clients: usize,
    /// Where `history.jsonl`, `verdict.json` and (set, fast-ack) `lost.json`
    /// go.
    pub out_dir: PathBuf,
    /// Turns on a deliberate bug on every node, to prove the checker can
    /// say "invalid": failpoint `multi-get-torn` for the pairs workload,
    /// `txn-skip-read-validation` for the transaction workloads,
    /// `ack-before-commit` for the others, `move-activate-early` under μshard
    /// moves (see [`bug_failpoint`]).
    pub bug: bool,
    /// How long the checker may search before it says "unknown".
    pub check_budget: Duration,
}

#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    pub workload: &'static str,
    pub nemeses: Vec<&'static str>,
    pub composed: bool,
    pub seed: u64,
    pub duration_s: f64,
    pub counts: Counts,
    pub verdict: Verdict,
    pub nemesis_events: usize,
    /// Acknowledged adds the final read did not find (set and fast-ack).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lost_acknowledged: Option<usize>,
    /// μshard moves that reached `done` by the end of the run (runs with
    /// the `move-ushard`, `split` or `merge` nemesis), so a test can tell
    /// moves happened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ushard_moves_done: Option<usize>,
}

impl std::fmt::Display for RunReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "workload {} nemesis [{}]{} seed {} for {:.0} s: {}; {} nemesis events; verdict {}",
            self.workload,
            self.nemeses.join(","),
            if self.composed { " composed" } else { "" },
            self.seed,
            self.duration_s,
            self.counts,
            self.nemesis_events,
            self.verdict.name()
        )?;
        if let Some(lost) = self.lost_acknowledged {
            write!(f, "; {lost} acknowledged adds lost")?;
        }
        if let Some(moves) = self.ushard_moves_done {
            write!(f, "; {moves} μshard moves done")?;
        }
        match &self.verdict {
            Verdict::Invalid(why) => write!(f, ": {}", why.join("; ")),
            Verdict::Unknown(why) => write!(f, ": {why}"),
            Verdict::Valid => Ok(()),
        }
    }
}

/// How many μshard moves the shard manager has finished.
async fn moves_done(target: &impl Target) -> anyhow::Result<usize> {
    let map = target.shard_map().await?;
    Ok(map.moves.iter().filter(|m| m.phase == "done").count())
}

/// Reads every element of a set (or fast-ack) workload back with strong
/// scans, retrying until the cluster answers (it has just been healed).
async fn read_set(client: &ShoalClient, prefix: &str, workload: Workload) -> anyhow::Result<BTreeSet<u64>> {
    let options = ScanOptions {
        prefix: format!("{prefix}/{}/", workload.name()).into_bytes(),
        limit: 1000,
        ..ScanOptions::default()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        match client.scan_all(&options, usize::MAX).await {
            Ok(entries) => {
                return Ok(entries
                    .iter()
                    .map(|e| {
                        let element = parse_value(&e.value);
                        // A value that does not match its key is corrupt: report
                        // it as an element nobody added.
                        if e.key == set_key(prefix, workload, element).into_bytes() {
                            element
                        } else {
                            u64::MAX
                        }
                    })
                    .collect());
            }
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("final read: {e}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => anyhow::bail!("final read never succeeded: {e}"),
        }
    }
}

/// The deliberate bug `--bug` turns on for `workload` under `nemeses`, as
/// a failpoint name and its actions: one its checker must catch
/// (docs/failpoints.md). Under μshard moves, the destination activating
/// before it caught up, or (bounded workload) taking a μshard in without
/// raising its version base.
pub fn bug_failpoint(workload: Workload, nemeses: &[Nemesis]) -> (&'static str, &'static str) {
    if nemeses.iter().any(|n| n.moves_ushards()) {
        // Each bounded-workload process writes its own key for the whole
        // run, so its versions span moves; the set workload sees losses.
        if workload == Workload::Bounded {
            return ("move-version-base-kept", "return");
        }
        return ("move-activate-early", "return");
    }
    match workload {
        Workload::Pairs => ("multi-get-torn", "return"),
        Workload::Bank | Workload::ListAppend => ("txn-skip-read-validation", "return"),
        // Reads judge expiry half a second ahead of conditions.
        Workload::Ttl => ("read-clock-ahead", "return(500)"),
        Workload::Ryw => ("min-version-ignored", "return"),
        _ => ("ack-before-commit", "return"),
    }
}

/// A lost acknowledged element and the last fault (nemesis event) before
/// its acknowledgement: which fault's window lost it.
#[derive(Serialize)]
struct Loss<'a> {
    element: u64,
    acknowledged_at_s: f64,
    after: &'a str,
}

fn losses_by_fault<'a>(ops: &[Op], events: &'a [NemesisEvent], lost: &[u64]) -> Vec<Loss<'a>> {
    let lost: BTreeSet<u64> = lost.iter().copied().collect();
    ops.iter()
        .filter_map(|op| match op.kind {
            OpKind::Add { element } if op.outcome == Outcome::Ok && lost.contains(&element) => {
                let after = events
                    .iter()
                    .filter(|e| e.at_ns <= op.complete_ns)
                    .max_by_key(|e| e.at_ns)
                    .map_or("no fault yet", |e| e.action.as_str());
                Some(Loss {
                    element,
                    acknowledged_at_s: op.complete_ns as f64 / 1e9,
                    after,
                })
            }
            _ => None,
        })
        .collect()
}

pub async fn run<T: Target>(target: &mut T, config: &RunConfig) -> anyhow::Result<RunReport> {
    std::fs::create_dir_all(&config.out_dir)?;
    if config.bug {
        let (name, actions) = bug_failpoint(config.workload, &config.nemeses);
        for node in target.nodes() {
            target.set_failpoint(node, name, actions).await?;
        }
    }
    let client = Arc::new(
        ShoalClient::connect(ClientConfig {
            endpoints: target.endpoints(),
            timeout: Duration::from_secs(5),
            ..ClientConfig::default()
        })
        .await?,
    );
    let recorder = Recorder::default();
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let prefix: Arc<str> = format!("run-{}-{unix}", config.seed).into();
    if config.workload == Workload::Bank {
        setup_bank(&client, &prefix).await?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let counter = Arc::new(AtomicU64::new(0));
    let ctx = ClientContext {
        workload: config.workload,
        seed: config.seed,
        prefix: prefix.clone(),
        client: client.clone(),
        counter,
        stop: stop.clone(),
        recorder: recorder.clone(),
        clients: config.clients,
    };
    let clients: Vec<_> = (0..config.clients)
        .map(|process| tokio::spawn(client_loop(ctx.clone(), process)))
        .collect();
    let schedule = run_schedule(
        target,
        &config.nemeses,
        config.composed,
        config.seed,
        config.duration,
        &recorder,
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await?;
    }
    // A schedule that failed half-way through a fault is reported as a
    // failed run; the caller's `Target::stop` heals what it left behind.
    schedule?;
    let ops = recorder.ops();
    let events = recorder.nemesis_events();
    let mut lost_acknowledged = None;
    let verdict = match config.workload {
        Workload::Register | Workload::CasRegister => check_register(&ops, config.check_budget),
        Workload::Set | Workload::FastAck => {
            let rule = match config.workload {
                Workload::FastAck if config.nemeses.iter().any(|n| n.may_lose_fast_acks()) => LossRule::Counted,
                _ => LossRule::NoneLost,
            };
            let (verdict, lost) = check_kept(&ops, &read_set(&client, &prefix, config.workload).await?, rule);
            let lost_after = losses_by_fault(&ops, &events, &lost);
            std::fs::write(
                config.out_dir.join("lost.json"),
                serde_json::to_string_pretty(&lost_after)?,
            )?;
            lost_acknowledged = Some(lost.len());
            verdict
        }
        Workload::Bounded => check_fresh_reads(&ops, FreshnessRule::Bounded(BOUNDED_STALENESS)),
        Workload::Ryw => check_fresh_reads(&ops, FreshnessRule::OwnWrites),
        Workload::Pairs => check_pairs(&ops, config.check_budget),
        Workload::Ttl => check_ttl(&ops),
        Workload::Bank => check_bank(&ops, ACCOUNTS as usize, ACCOUNTS as i64 * INITIAL_BALANCE),
        Workload::ListAppend => check_list_append(&ops),
    };
    // Every workload's answers carry versions; bounded reads may be stale.
    let verdict = verdict.and(check_versions(&ops, config.workload != Workload::Bounded));
    recorder.write(&config.out_dir.join("history.jsonl"))?;
    let ushard_moves_done = if config.nemeses.iter().any(|n| n.moves_ushards()) {
        Some(moves_done(target).await?)
    } else {
        None
    };
    let report = RunReport {
        workload: config.workload.name(),
        nemeses: config.nemeses.iter().map(|n| n.name()).collect(),
        composed: config.composed,
        seed: config.seed,
        duration_s: config.duration.as_secs_f64(),
        counts: Counts::of(&ops),
        verdict,
        nemesis_events: events.len(),
        lost_acknowledged,
        ushard_moves_done,
    };
    std::fs::write(
        config.out_dir.join("verdict.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    Ok(report)
}
