//! `shoal bench --txn`: on a fresh local 3-node cluster (started from this
//! process tree, so CPU is shared fairly), the commit latency of a
//! transaction that read 10 keys and writes 2 against a single put, at 1
//! and 64 clients, and the abort rate of bank transfers on 10 accounts at
//! 1, 8 and 64 clients (docs/transactions.md).

use hdrhistogram::Histogram;
use kv_client::{ClientConfig, ClientError, Key, ShoalClient, TxnOptions};
use local_cluster::{LocalCluster, LocalClusterSpec};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Routing keys the transactions spread over: few enough conflicts at 64
/// clients that the figure is the commit's cost, not contention's.
const GROUPS: u64 = 1024;
const READS: u64 = 10;
const ACCOUNTS: u64 = 10;

fn group_key(group: u64, i: u64) -> Key {
    let routing = format!("bench-txn/{group:04}");
    Key::routed(routing.clone(), format!("{routing}/{i:02}"))
}

fn account(i: u64) -> Key {
    Key::routed("bench-bank", format!("bench-bank/{i:02}"))
}

struct Figures {
    histogram: Histogram<u64>,
    ok: u64,
    conflicts: u64,
    errors: u64,
}

impl Figures {
    fn new() -> Figures {
        Figures {
            histogram: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds"),
            ok: 0,
            conflicts: 0,
            errors: 0,
        }
    }

    fn record(&mut self, began: Instant, result: Result<(), ClientError>) {
        match result {
            Ok(()) => {
                self.ok += 1;
                let micros = began.elapsed().as_micros().clamp(1, 60_000_000) as u64;
                let _ = self.histogram.record(micros);
            }
            Err(ClientError::TxnConflict { .. }) => self.conflicts += 1,
            Err(_) => self.errors += 1,
        }
    }

    fn merge(&mut self, other: Figures) {
        let _ = self.histogram.add(&other.histogram);
        self.ok += other.ok;
        self.conflicts += other.conflicts;
        self.errors += other.errors;
    }

    fn p(&self, quantile: f64) -> f64 {
        self.histogram.value_at_quantile(quantile) as f64 / 1e3
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Load {
    /// One unconditional put of a random key: the baseline.
    Put,
    /// Read 10 keys of a group (one multi-get, not timed), write 2 of them,
    /// commit (timed).
    Commit,
    /// A bank transfer between two of 10 accounts, attempted once.
    Transfer,
}

async fn worker(client: Arc<ShoalClient>, load: Load, worker: u64, stop_at: Instant) -> Figures {
    let mut figures = Figures::new();
    let mut n = worker;
    while Instant::now() < stop_at {
        // Stride by a prime so workers spread over the groups.
        n = n.wrapping_add(7919);
        let group = n % GROUPS;
        match load {
            Load::Put => {
                let began = Instant::now();
                let result = client.put(group_key(group, n % READS), "v").await.map(|_| ());
                figures.record(began, result);
            }
            Load::Commit => {
                let mut txn = client.transaction();
                let keys = (0..READS).map(|i| group_key(group, i)).collect();
                if let Err(e) = txn.get_many(keys).await {
                    figures.record(Instant::now(), Err(e));
                    continue;
                }
                let writes = async {
                    txn.put(group_key(group, n % READS), "w").await?;
                    txn.put(group_key(group, (n + 1) % READS), "w").await?;
                    Ok::<(), ClientError>(())
                };
                if let Err(e) = writes.await {
                    figures.record(Instant::now(), Err(e));
                    continue;
                }
                let began = Instant::now();
                let result = txn.commit().await.map(|_| ());
                figures.record(began, result);
            }
            Load::Transfer => {
                let (from, to) = (n % ACCOUNTS, (n / ACCOUNTS + 1 + n) % ACCOUNTS);
                let to = if to == from { (to + 1) % ACCOUNTS } else { to };
                let began = Instant::now();
                let mut txn = client.transaction();
                let result = async {
                    let balance = |v: Option<Vec<u8>>| {
                        v.and_then(|v| String::from_utf8(v).ok()?.parse::<i64>().ok())
                            .unwrap_or(0)
                    };
                    let a = balance(txn.get(account(from)).await?);
                    let b = balance(txn.get(account(to)).await?);
                    txn.put(account(from), (a - 1).to_string()).await?;
                    txn.put(account(to), (b + 1).to_string()).await?;
                    txn.commit().await.map(|_| ())
                }
                .await;
                figures.record(began, result);
            }
        }
    }
    figures
}

async fn measure(client: &Arc<ShoalClient>, load: Load, clients: u64, duration: Duration) -> anyhow::Result<Figures> {
    let stop_at = Instant::now() + duration;
    let tasks: Vec<_> = (0..clients)
        .map(|w| tokio::spawn(worker(client.clone(), load, w, stop_at)))
        .collect();
    let mut all = Figures::new();
    for task in tasks {
        all.merge(task.await?);
    }
    Ok(all)
}

pub async fn run(duration: Duration) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cluster = LocalCluster::start(LocalClusterSpec::new(dir.path()))?;
    cluster.wait_for_leaders(Duration::from_secs(30)).await?;
    let client = Arc::new(
        ShoalClient::connect(ClientConfig {
            endpoints: cluster.endpoints(),
            ..ClientConfig::default()
        })
        .await?,
    );
    let mut setup = client.transaction_with(TxnOptions::default());
    for i in 0..ACCOUNTS {
        setup.put(account(i), "1000").await?;
    }
    setup.commit().await?;
    for clients in [1, 64] {
        let put = measure(&client, Load::Put, clients, duration).await?;
        let commit = measure(&client, Load::Commit, clients, duration).await?;
        println!(
            "clients={clients:<2} put    p50={:.2}ms p99={:.2}ms ok={} errors={}",
            put.p(0.5),
            put.p(0.99),
            put.ok,
            put.errors
        );
        println!(
            "clients={clients:<2} commit p50={:.2}ms p99={:.2}ms ok={} conflicts={} errors={}  | vs put: {:.2}x p50, {:.2}x p99",
            commit.p(0.5),
            commit.p(0.99),
            commit.ok,
            commit.conflicts,
            commit.errors,
            commit.p(0.5) / put.p(0.5).max(1e-9),
            commit.p(0.99) / put.p(0.99).max(1e-9)
        );
    }
    for clients in [1, 8, 64] {
        let bank = measure(&client, Load::Transfer, clients, duration).await?;
        let attempts = (bank.ok + bank.conflicts + bank.errors).max(1);
        println!(
            "clients={clients:<2} bank transfers on {ACCOUNTS} accounts: committed={} conflicts={} errors={} abort rate={:.1}% p50={:.2}ms p99={:.2}ms",
            bank.ok,
            bank.conflicts,
            bank.errors,
            100.0 * (bank.conflicts + bank.errors) as f64 / attempts as f64,
            bank.p(0.5),
            bank.p(0.99)
        );
    }
    cluster.stop_all(Duration::from_secs(10));
    Ok(())
}
