//! One run: clients and a nemesis against a target for a while, then a
//! final read (set), the history written out, and a verdict.

use crate::checker::{
    check_fresh_reads, check_no_resurrection, check_pairs, check_register, check_set, FreshnessRule, Verdict,
};
use crate::history::{Counts, Recorder};
use crate::nemesis::{run_schedule, Nemesis};
use crate::target::Target;
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
    /// Where `history.jsonl` and `verdict.json` go.
    pub out_dir: PathBuf,
    /// Turns on a deliberate bug on every node, to prove the checker can
    /// say "invalid": failpoint `multi-get-torn` for the pairs workload,
    /// `ack-before-commit` for the others (see [`bug_failpoint`]).
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
        match &self.verdict {
            Verdict::Invalid(why) => write!(f, ": {}", why.join("; ")),
            Verdict::Unknown(why) => write!(f, ": {why}"),
            Verdict::Valid => Ok(()),
        }
    }
}

/// Reads every set element back with strong scans, retrying until the
/// cluster answers (it has just been healed).
async fn read_set(client: &ShoalClient, prefix: &str) -> anyhow::Result<BTreeSet<u64>> {
    let options = ScanOptions {
        prefix: format!("{prefix}/set/").into_bytes(),
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
                        if e.key == set_key(prefix, element).into_bytes() {
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

/// The deliberate bug `--bug` turns on for `workload`: one its checker
/// must catch.
pub fn bug_failpoint(workload: Workload) -> &'static str {
    match workload {
        Workload::Pairs => "multi-get-torn",
        _ => "ack-before-commit",
    }
}

pub async fn run<T: Target>(target: &mut T, config: &RunConfig) -> anyhow::Result<RunReport> {
    std::fs::create_dir_all(&config.out_dir)?;
    if config.bug {
        for node in target.nodes() {
            target
                .set_failpoint(node, bug_failpoint(config.workload), "return")
                .await?;
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
    let verdict = match config.workload {
        Workload::Register | Workload::CasRegister => check_register(&ops, config.check_budget),
        Workload::Set => check_set(&ops, &read_set(&client, &prefix).await?),
        Workload::Bounded => check_fresh_reads(&ops, FreshnessRule::Bounded(BOUNDED_STALENESS)),
        Workload::Ryw => check_fresh_reads(&ops, FreshnessRule::OwnWrites),
        Workload::Pairs => check_pairs(&ops, config.check_budget),
        Workload::Ttl => check_no_resurrection(&ops),
    };
    recorder.write(&config.out_dir.join("history.jsonl"))?;
    let report = RunReport {
        workload: config.workload.name(),
        nemeses: config.nemeses.iter().map(|n| n.name()).collect(),
        composed: config.composed,
        seed: config.seed,
        duration_s: config.duration.as_secs_f64(),
        counts: Counts::of(&ops),
        verdict,
        nemesis_events: recorder.nemesis_events().len(),
    };
    std::fs::write(
        config.out_dir.join("verdict.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    Ok(report)
}
