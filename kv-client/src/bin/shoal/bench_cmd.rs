//! `shoal bench`: against a running cluster, or a fresh local one.

use crate::{client_config, Cli};
use kv_client::bench::{self, BenchOp, BenchSpec};
use kv_client::local_cluster::{LocalCluster, LocalClusterSpec};
use kv_client::{ClientConfig, ShoalClient};
use std::sync::Arc;
use std::time::Duration;

pub async fn remote(
    cli: &Cli,
    op: BenchOp,
    concurrency: usize,
    duration: Duration,
    value_bytes: usize,
    keys: u64,
) -> anyhow::Result<()> {
    let client = Arc::new(ShoalClient::connect(client_config(cli)?).await?);
    if op == BenchOp::Get {
        bench::preload(&client, keys, value_bytes).await?;
    }
    let spec = BenchSpec {
        op,
        concurrency,
        duration,
        value_bytes,
        keys,
    };
    println!("{}", bench::run(client, spec).await?);
    Ok(())
}

/// Starts a local cluster in a temp dir (same process tree as the load, so
/// CPU is shared fairly), runs ping, put and get at 1 and 64 clients, stops it.
pub async fn local(duration: Duration, value_bytes: usize, keys: u64) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cluster = LocalCluster::start(LocalClusterSpec::new(dir.path()))?;
    cluster.wait_for_leaders(Duration::from_secs(30)).await?;
    let config = ClientConfig {
        endpoints: cluster.endpoints(),
        ..ClientConfig::default()
    };
    let client = Arc::new(ShoalClient::connect(config).await?);
    bench::preload(&client, keys, value_bytes).await?;
    // Ratios against a bare round trip at the same concurrency, measured in
    // this run, stay comparable on a noisy shared machine.
    let mut baseline = std::collections::HashMap::new();
    for op in [BenchOp::Ping, BenchOp::Put, BenchOp::Get] {
        for concurrency in [1, 64] {
            let spec = BenchSpec {
                op,
                concurrency,
                duration,
                value_bytes,
                keys,
            };
            let report = bench::run(client.clone(), spec).await?;
            match baseline.get(&concurrency) {
                Some((ping_ops, ping_p50)) if op != BenchOp::Ping => println!(
                    "{report}  | vs ping: {:.2}x ops/s, {:.1}x p50",
                    report.ops_per_sec() / ping_ops,
                    report.p50.as_secs_f64() / Duration::as_secs_f64(ping_p50).max(1e-9)
                ),
                _ => println!("{report}"),
            }
            if op == BenchOp::Ping {
                baseline.insert(concurrency, (report.ops_per_sec(), report.p50));
            }
        }
    }
    cluster.stop_all(Duration::from_secs(10));
    Ok(())
}
