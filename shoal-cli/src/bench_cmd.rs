//! `shoal bench`: against a running cluster, or a fresh local one.

use crate::bench::{self, BenchOp, BenchSpec};
use crate::{client_config, Cli};
use kv_client::{ClientConfig, ShoalClient};
use local_cluster::probe::fully_replicated_without;
use local_cluster::{LocalCluster, LocalClusterSpec};
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
    if matches!(op, BenchOp::Get | BenchOp::BoundedGet) {
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
/// CPU is shared fairly), runs ping, quorum and fast-ack puts, strong and
/// bounded gets at 1 and 64 clients, stops it.
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
    for op in [
        BenchOp::Ping,
        BenchOp::Put,
        BenchOp::FastPut,
        BenchOp::Get,
        BenchOp::BoundedGet,
    ] {
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

/// A fresh cluster for the fault measurements: a shard manager with repair
/// grace period `grace`, 5 nodes in 2 regions, 5 shards; and a client.
async fn start_five_nodes(dir: &std::path::Path, grace: Duration) -> anyhow::Result<(LocalCluster, ShoalClient)> {
    use local_cluster::LocalClusterSpec;
    let mut spec = LocalClusterSpec::new(dir);
    spec.nodes = 5;
    spec.shards = 5;
    spec.shard_manager = true;
    spec.regions = vec!["east".into(), "west".into()];
    spec.dead_after = grace;
    let cluster = LocalCluster::start(spec)?;
    cluster.ensure_default_keyspace(Duration::from_secs(60)).await?;
    cluster.wait_for_leaders(Duration::from_secs(60)).await?;
    let config = ClientConfig {
        endpoints: cluster.endpoints(),
        timeout: Duration::from_secs(30),
        ..ClientConfig::default()
    };
    let client = ShoalClient::connect(config).await?;
    Ok((cluster, client))
}

/// Kills the node holding a primary `kills` times, each time timing how long
/// until a write to that shard is acknowledged again, and how long until the
/// shard manager has recorded a new primary. Uses a fresh local cluster with
/// a shard manager (5 nodes, 2 regions). Prints p50 and max.
pub async fn failover(kills: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (mut cluster, client) = start_five_nodes(dir.path(), Duration::from_secs(10)).await?;
    // One key per shard, so "a write to the shard" is a put of its key.
    let mut key_of_shard = std::collections::HashMap::new();
    for i in 0..10_000 {
        let key = format!("probe/{i}");
        let shard = client.routes().place("default", key.as_bytes(), None)?.shard.0;
        key_of_shard.entry(shard).or_insert(key);
        if key_of_shard.len() == 5 {
            break;
        }
    }
    let mut write_resume = Vec::new();
    let mut primary_moved = Vec::new();
    for round in 0..kills {
        let map = cluster.shard_map().await?;
        let shard = &map.shards[round % map.shards.len()];
        let (victim, old_epoch) = (shard.primary, shard.epoch);
        let key = key_of_shard[&shard.shard_id].clone();
        client.put(key.clone(), "warm").await?;
        let killed = std::time::Instant::now();
        cluster.kill(victim)?;
        // Write resumption: retry until acknowledged (indeterminate counts as not yet).
        loop {
            if client.put(key.clone(), format!("r{round}")).await.is_ok() {
                break;
            }
        }
        write_resume.push(killed.elapsed());
        loop {
            let now = cluster.shard_map().await?;
            let s = now.shards.iter().find(|s| s.shard_id == shard.shard_id).expect("shard");
            if s.primary != victim && s.epoch > old_epoch {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        primary_moved.push(killed.elapsed());
        println!(
            "kill {:>2}: node {victim} (shard {}): writes resumed after {:>6.0} ms, new primary after {:>6.0} ms",
            round + 1,
            shard.shard_id,
            write_resume.last().unwrap().as_secs_f64() * 1e3,
            primary_moved.last().unwrap().as_secs_f64() * 1e3
        );
        cluster.start_node(victim)?;
        cluster.wait_for_leaders(Duration::from_secs(60)).await?;
        // Let the node rejoin and the shard manager see it alive again.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    print_summary("writes resumed", write_resume);
    print_summary("new primary recorded", primary_moved);
    cluster.stop_all(Duration::from_secs(10));
    Ok(())
}

fn print_summary(name: &str, mut v: Vec<Duration>) {
    v.sort();
    println!(
        "{name}: p50 {:.2} s, max {:.2} s over {} runs",
        v[v.len() / 2].as_secs_f64(),
        v[v.len() - 1].as_secs_f64(),
        v.len()
    );
}

/// Loads `keys` values of `value_bytes`, then `kills` times kill -9s the
/// node holding the most replicas and times how long until every shard is
/// fully replicated again without it: in all, and from the first rebuild
/// step (after the grace period) on. The killed node then restarts, deletes
/// what it no longer owns, and is the spare for the next round.
pub async fn repair(kills: usize, keys: u64, value_bytes: usize, grace: Duration) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (mut cluster, client) = start_five_nodes(dir.path(), grace).await?;
    let client = std::sync::Arc::new(client);
    let value = vec![b'x'; value_bytes];
    let loaders: Vec<_> = (0..16u64)
        .map(|t| {
            let (client, value) = (client.clone(), value.clone());
            tokio::spawn(async move {
                for i in (t..keys).step_by(16) {
                    client.put(format!("repair/{i:08}"), value.clone()).await?;
                }
                Ok::<_, kv_client::ClientError>(())
            })
        })
        .collect();
    for loader in loaders {
        loader.await??;
    }
    println!(
        "loaded {keys} keys of {value_bytes} bytes ({:.1} MiB); grace period {grace:?}",
        (keys as f64 * value_bytes as f64) / (1 << 20) as f64
    );
    let mut total = Vec::new();
    let mut rebuild = Vec::new();
    for round in 0..kills {
        let map = cluster.shard_map().await?;
        let victim = (1..=5u64)
            .max_by_key(|n| map.shards.iter().filter(|s| s.voters.contains(n)).count())
            .expect("nodes");
        let held = map.shards.iter().filter(|s| s.voters.contains(&victim)).count();
        let killed = std::time::Instant::now();
        cluster.kill(victim)?;
        let mut first_step = None;
        loop {
            let now = cluster.shard_map().await?;
            if first_step.is_none() && now.shards.iter().any(|s| s.removing == victim) {
                first_step = Some(killed.elapsed());
            }
            if fully_replicated_without(&now, victim, 3) {
                break;
            }
            anyhow::ensure!(
                killed.elapsed() < Duration::from_secs(600),
                "no full replication in 10 minutes"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let took = killed.elapsed();
        let started = first_step.unwrap_or(took);
        total.push(took);
        rebuild.push(took - started);
        println!(
            "kill {:>2}: node {victim} held {held} replicas: first rebuild step after {:.2} s, full replication after {:.2} s",
            round + 1,
            started.as_secs_f64(),
            took.as_secs_f64()
        );
        cluster.start_node(victim)?;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while cluster
            .replica_status(victim)
            .await
            .map(|s| !s.replicas.is_empty())
            .unwrap_or(true)
        {
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "node {victim} kept its old replicas"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    print_summary("full replication after kill -9", total);
    print_summary("rebuild, first step to full replication", rebuild);
    cluster.stop_all(Duration::from_secs(10));
    Ok(())
}

/// How many acknowledged writes a kill -9 of a primary loses, fast-ack
/// against quorum: on a fresh local 3-node cluster, 16 writers put unique
/// keys for 3 s while the leader of one shard is killed after 1 s; the node
/// is restarted, and every acknowledged key is read back strongly. One round
/// per mode per kill.
pub async fn fast_ack_loss(kills: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cluster = LocalCluster::start(LocalClusterSpec::new(dir.path()))?;
    cluster.wait_for_leaders(Duration::from_secs(30)).await?;
    let config = ClientConfig {
        endpoints: cluster.endpoints(),
        timeout: Duration::from_secs(10),
        ..ClientConfig::default()
    };
    let client = Arc::new(ShoalClient::connect(config).await?);
    for round in 0..kills {
        for fast_ack in [true, false] {
            let mode = if fast_ack { "fast-ack" } else { "quorum" };
            let (acked, lost) = loss_round(&mut cluster, &client, round, fast_ack).await?;
            println!(
                "kill {:>2} {mode:>8}: {acked:>6} acknowledged, {lost:>4} lost",
                round + 1
            );
        }
    }
    cluster.stop_all(Duration::from_secs(10));
    Ok(())
}

async fn loss_round(
    cluster: &mut LocalCluster,
    client: &Arc<ShoalClient>,
    round: usize,
    fast_ack: bool,
) -> anyhow::Result<(usize, usize)> {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..16 {
        let (client, stop) = (client.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let options = kv_client::PutOptions {
                fast_ack,
                ..kv_client::PutOptions::default()
            };
            let mut acked = Vec::new();
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let key = format!("loss/{round}/{fast_ack}/{w}/{i}");
                i += 1;
                if client.put_with(key.clone(), "v", &options).await.is_ok() {
                    acked.push(key);
                }
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let leaders = cluster.wait_for_leaders(Duration::from_secs(30)).await?;
    let victim = *leaders.values().next().ok_or_else(|| anyhow::anyhow!("no leaders"))?;
    cluster.kill(victim)?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acked = Vec::new();
    for writer in writers {
        acked.extend(writer.await?);
    }
    cluster.start_node(victim)?;
    cluster.wait_for_leaders(Duration::from_secs(60)).await?;
    let mut lost = 0;
    for chunk in acked.chunks(100) {
        let keys = chunk.iter().map(|k| kv_client::Key::from(k.as_str())).collect();
        lost += client.multi_get(keys).await?.iter().filter(|v| v.is_none()).count();
    }
    Ok((acked.len(), lost))
}
