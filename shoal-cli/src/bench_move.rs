//! `shoal bench --move-rounds N`: what a live μshard move costs. On a fresh
//! 3-node cluster with a shard manager, one μshard is loaded with
//! `--move-mb` MiB and moved back and forth N times while writers write to
//! it and to the other μshards. Printed: per move, the time to activation
//! and the longest write to the μshard that overlapped it (the write
//! pause: the client retries `MOVING` until the destination serves); over
//! all moves, pause p50/p99; and the other μshards' write throughput during
//! moves as a ratio of theirs before any move, in the same run.

use hdrhistogram::Histogram;
use kv_client::{ClientConfig, Key, ShoalClient};
use local_cluster::{LocalCluster, LocalClusterSpec};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ROUTING: &str = "bench-move";
const LOADED_VALUE_BYTES: usize = 4096;
const WRITERS_EACH_SIDE: usize = 4;

/// One acknowledged write: when it began and how long it took, from the
/// start of the run.
#[derive(Clone, Copy)]
struct Ack {
    began: Duration,
    took: Duration,
}

impl Ack {
    fn ended(&self) -> Duration {
        self.began + self.took
    }
}

/// A move as the bench saw it: from the request to the shard manager's
/// record leaving `copying`.
struct MoveWindow {
    from: Duration,
    to: Duration,
    bytes_copied: u64,
}

/// `bytes_per_sec`: the shard manager's copy budget (its default when None).
pub async fn moves(rounds: usize, megabytes: u64, bytes_per_sec: Option<u64>) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut spec = LocalClusterSpec::new(dir.path());
    spec.shard_manager = true;
    if let Some(rate) = bytes_per_sec {
        spec.moves.bytes_per_sec = rate;
    }
    println!("move budget {} bytes/s", spec.moves.bytes_per_sec);
    let mut cluster = LocalCluster::start(spec)?;
    let outcome = measure(&cluster, rounds, megabytes).await;
    cluster.stop_all(Duration::from_secs(10));
    outcome
}

async fn measure(cluster: &LocalCluster, rounds: usize, megabytes: u64) -> anyhow::Result<()> {
    cluster.ensure_default_keyspace(Duration::from_secs(60)).await?;
    cluster.wait_for_leaders(Duration::from_secs(60)).await?;
    let manager = cluster.shard_manager()?;
    let client = Arc::new(
        ShoalClient::connect(ClientConfig {
            endpoints: cluster.endpoints(),
            timeout: Duration::from_secs(30),
            ..ClientConfig::default()
        })
        .await?,
    );
    let moving = client.routes().place("default", b"m", Some(ROUTING.as_bytes()))?.ushard;
    let loaded = load(&client, megabytes).await?;
    println!("loaded μshard {moving} with {loaded} records of {LOADED_VALUE_BYTES} bytes");

    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for worker in 0..WRITERS_EACH_SIDE * 2 {
        let on_moving = worker < WRITERS_EACH_SIDE;
        writers.push(tokio::spawn(write_until_stopped(
            client.clone(),
            stop.clone(),
            start,
            worker,
            on_moving.then_some(moving),
            moving,
        )));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let baseline = (Duration::from_millis(500), start.elapsed());
    let mut windows = Vec::new();
    for round in 0..rounds {
        let owner = client
            .routes()
            .place("default", b"m", Some(ROUTING.as_bytes()))?
            .shard
            .0;
        let map = manager.shard_map().await?;
        let keyspace = map
            .keyspaces
            .iter()
            .find(|k| k.name == "default")
            .ok_or_else(|| anyhow::anyhow!("no default keyspace"))?;
        let to = keyspace
            .shard_ids
            .iter()
            .copied()
            .find(|s| *s != owner)
            .ok_or_else(|| anyhow::anyhow!("one shard: nowhere to move"))?;
        let from = start.elapsed();
        let started = manager.move_ushard("default", moving, to).await?;
        let mut bytes_copied = 0;
        let activated = loop {
            let state = manager.get_move(started.move_id).await?;
            match state.phase.as_str() {
                "copying" => bytes_copied = bytes_copied.max(state.bytes_copied),
                "activated" | "done" => break start.elapsed(),
                other => anyhow::bail!("move {} ended {other}: {}", started.move_id, state.error),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        println!(
            "move {round}: shard {owner} -> {to}, activated after {:.0} ms ({bytes_copied} bytes copied)",
            (activated - from).as_secs_f64() * 1e3
        );
        windows.push(MoveWindow {
            from,
            to: activated,
            bytes_copied,
        });
        // One move per μshard at a time: the next starts once this is done.
        manager
            .wait_for_move(started.move_id, "done", Duration::from_secs(60))
            .await?;
    }
    stop.store(true, Ordering::Relaxed);
    let mut on_moving = Vec::new();
    let mut on_others = Vec::new();
    for (worker, task) in writers.into_iter().enumerate() {
        let acks = task.await??;
        if worker < WRITERS_EACH_SIDE {
            on_moving.extend(acks);
        } else {
            on_others.extend(acks);
        }
    }
    report(&windows, baseline, &on_moving, &on_others)
}

/// Writes `megabytes` MiB of records into the moved μshard.
async fn load(client: &Arc<ShoalClient>, megabytes: u64) -> anyhow::Result<u64> {
    let records = megabytes * 1024 * 1024 / LOADED_VALUE_BYTES as u64;
    let mut tasks = Vec::new();
    for worker in 0..16 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let value = vec![b'v'; LOADED_VALUE_BYTES];
            let mut i = worker;
            while i < records {
                client
                    .put(Key::routed(ROUTING, format!("m{i:08}")), value.clone())
                    .await?;
                i += 16;
            }
            Ok::<(), kv_client::ClientError>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(records)
}

/// One writer: to the moved μshard (`only`), or to keys of any other
/// μshard (`only` = None, skipping `moving`), until `stop`.
async fn write_until_stopped(
    client: Arc<ShoalClient>,
    stop: Arc<AtomicBool>,
    start: Instant,
    worker: usize,
    only: Option<u32>,
    moving: u32,
) -> anyhow::Result<Vec<Ack>> {
    let mut acks = Vec::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let key = match only {
            Some(_) => Key::routed(ROUTING, format!("w{worker}-{n}")),
            None => {
                let key = Key::from(format!("other/{worker}/{}", n % 1000));
                let placed = client.routes().place("default", &key.key, None)?;
                if placed.ushard == moving {
                    continue;
                }
                key
            }
        };
        let began = start.elapsed();
        client.put(key, vec![b'x'; 100]).await?;
        acks.push(Ack {
            began,
            took: start.elapsed() - began,
        });
    }
    Ok(acks)
}

fn report(
    windows: &[MoveWindow],
    baseline: (Duration, Duration),
    on_moving: &[Ack],
    on_others: &[Ack],
) -> anyhow::Result<()> {
    let millis = |d: Duration| d.as_secs_f64() * 1e3;
    let overlaps = |a: &Ack, w: &MoveWindow| a.began < w.to && a.ended() > w.from;
    // The longest write to the moved μshard that overlapped each move.
    let mut pauses = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    for w in windows {
        let pause = on_moving
            .iter()
            .filter(|a| overlaps(a, w))
            .map(|a| a.took)
            .max()
            .unwrap_or_default();
        pauses.record(pause.as_micros().max(1) as u64)?;
    }
    let mut moving_before = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    for a in on_moving
        .iter()
        .filter(|a| a.ended() > baseline.0 && a.ended() < baseline.1)
    {
        moving_before.record(a.took.as_micros().max(1) as u64)?;
    }
    let rate = |from: Duration, to: Duration| {
        let n = on_others.iter().filter(|a| a.ended() >= from && a.ended() < to).count();
        n as f64 / (to - from).as_secs_f64().max(1e-9)
    };
    let before = rate(baseline.0, baseline.1);
    let during_ops: f64 = windows
        .iter()
        .map(|w| rate(w.from, w.to) * (w.to - w.from).as_secs_f64())
        .sum();
    let during_secs: f64 = windows.iter().map(|w| (w.to - w.from).as_secs_f64()).sum();
    let during = during_ops / during_secs.max(1e-9);
    let mut activation = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    for w in windows {
        activation.record((w.to - w.from).as_micros().max(1) as u64)?;
    }
    let us = |v: u64| Duration::from_micros(v);
    let bytes = windows.iter().map(|w| w.bytes_copied).max().unwrap_or(0);
    println!(
        "{} moves of {:.1} MiB: time to activation p50 {:.0} ms, max {:.0} ms",
        windows.len(),
        bytes as f64 / (1024.0 * 1024.0),
        millis(us(activation.value_at_quantile(0.5))),
        millis(us(activation.max()))
    );
    println!(
        "write pause on the moved μshard per move: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms \
         (its writes before any move: p50 {:.2} ms, p99 {:.2} ms)",
        millis(us(pauses.value_at_quantile(0.5))),
        millis(us(pauses.value_at_quantile(0.99))),
        millis(us(pauses.max())),
        millis(us(moving_before.value_at_quantile(0.5))),
        millis(us(moving_before.value_at_quantile(0.99)))
    );
    println!(
        "other μshards' writes: {before:.0}/s before any move, {during:.0}/s during moves: {:.2}x",
        during / before.max(1e-9)
    );
    Ok(())
}
