//! `jepsen`: one fault-injection run with a verdict, against a fresh local
//! cluster of processes or the running docker-compose cluster. Exit status:
//! 0 valid, 1 invalid, 2 unknown, 3 the run failed.

use clap::Parser;
use jepsen_tests::compose::ComposeTarget;
use jepsen_tests::nemesis::Nemesis;
use jepsen_tests::run::{run, RunConfig, RunReport};
use jepsen_tests::target::{LocalTarget, Target};
use jepsen_tests::workload::Workload;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "jepsen",
    about = "Fault-injection run against a Shoal cluster, with a verdict"
)]
struct Args {
    /// local: start 5 kv-server processes and a shard manager on 127.0.0.1
    /// for this run; compose: the cluster of docker-compose.yml, already up.
    #[arg(long, default_value = "local")]
    cluster: String,
    /// register (linearizability per key), set (lost / unexpected
    /// elements), cas-register (linearizability with compare-and-set),
    /// bounded (no read older than its bound), ryw (sessions see their own
    /// writes, monotonic reads), pairs (batches read whole by multi-get and
    /// scan, linearizable), ttl (no key comes back after expiry, delete or
    /// overwrite; counters count each increment once) or fast-ack (set with
    /// fast-ack writes; losses counted).
    #[arg(long, default_value = "register")]
    workload: String,
    /// Comma-separated, one fault at a time: kill, quick-restart,
    /// power-kill, pause, partition, one-way, sm-partition, sm-kill,
    /// move-primary, drain, clock, node-clock-jump, move-ushard, split,
    /// merge; "all" for every one of them composed (up to three
    /// overlapping faults); or "none".
    #[arg(long, default_value = "kill,partition")]
    nemesis: String,
    /// Seconds of load and faults.
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// Fixes the nemesis schedule (and the clients' choices).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, default_value_t = 5)]
    clients: usize,
    /// Where history.jsonl and verdict.json go.
    #[arg(long, default_value = "jepsen-out")]
    out: PathBuf,
    /// Turn on a deliberate bug (under μshard moves: move-version-base-kept
    /// for bounded, move-activate-early otherwise; else multi-get-torn for
    /// pairs, read-clock-ahead for ttl, min-version-ignored for ryw,
    /// ack-before-commit otherwise): the verdict must then be invalid.
    #[arg(long)]
    bug: bool,
    /// Seconds the checker may search before saying "unknown".
    #[arg(long, default_value_t = 120)]
    check_seconds: u64,
}

fn config(args: &Args) -> anyhow::Result<RunConfig> {
    let (nemeses, composed) = Nemesis::parse_list(&args.nemesis)?;
    anyhow::ensure!(args.duration > 0, "--duration must be at least 1 second");
    anyhow::ensure!(args.clients > 0, "--clients must be at least 1");
    Ok(RunConfig {
        workload: Workload::parse(&args.workload)?,
        nemeses,
        composed,
        duration: Duration::from_secs(args.duration),
        seed: args.seed,
        clients: args.clients,
        out_dir: args.out.clone(),
        bug: args.bug,
        check_budget: Duration::from_secs(args.check_seconds),
    })
}

/// Runs, then leaves the target whole (or gone, for a local cluster).
async fn run_on<T: Target>(mut target: T, config: &RunConfig) -> anyhow::Result<RunReport> {
    let report = run(&mut target, config).await;
    target.stop().await;
    report
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let code = match config(&args) {
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(3);
        }
        Ok(config) => {
            let result = match args.cluster.as_str() {
                "local" => match LocalTarget::start(Nemesis::needs_power_loss(&config.nemeses)).await {
                    Ok(target) => run_on(target, &config).await,
                    Err(e) => Err(e),
                },
                "compose" => match ComposeTarget::attach().await {
                    Ok(target) => {
                        // Compose nodes do not run with
                        // faults.lose_unsynced_writes: a kill loses nothing.
                        let mut config = config.clone();
                        if config.nemeses.contains(&Nemesis::PowerKill) {
                            eprintln!("power-kill runs on the local target only; left out of this run");
                            config.nemeses.retain(|n| *n != Nemesis::PowerKill);
                        }
                        run_on(target, &config).await
                    }
                    Err(e) => Err(e),
                },
                other => Err(anyhow::anyhow!("--cluster {other:?}: local or compose")),
            };
            match result {
                Ok(report) => {
                    println!("{report}");
                    println!("history: {}", config.out_dir.join("history.jsonl").display());
                    println!(
                        "reproduce: jepsen --cluster {} --workload {} --nemesis {} --duration {} --seed {}{}",
                        args.cluster,
                        args.workload,
                        args.nemesis,
                        args.duration,
                        args.seed,
                        if args.bug { " --bug" } else { "" }
                    );
                    match report.verdict.name() {
                        "valid" => 0,
                        "invalid" => 1,
                        _ => 2,
                    }
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    3
                }
            }
        }
    };
    std::process::exit(code);
}
