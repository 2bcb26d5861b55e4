//! `shoal bench --locality-minutes N`: Akkio-style locality on a fresh
//! two-region local cluster (nodes 1-3 in `east`, 4-5 in `west`, a shard
//! manager with its default `[locality]` rules), one process tree.
//!
//! 1. A μshard led from the east gets strong writes from a client in the
//!    west: printed, the share of them a primary in the west served in
//!    each 10 s stretch, until it moved and for a stretch after.
//! 2. For N minutes, two μshards get even traffic (one write from each
//!    region in turn) and two get traffic that flips region every 20 s
//!    (shorter than the three windows a move needs): printed, how many
//!    moves each made (the aim is 0).

use kv_client::{ClientConfig, Key, ShoalClient};
use local_cluster::{LocalCluster, LocalClusterSpec, ShardManagerAt};
use shoal_proto::sm::{CreateKeyspaceRequest, ShardMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const KEYSPACE: &str = "geo";
const USHARDS: u32 = 16;
const STRETCH: Duration = Duration::from_secs(10);
const FLIP_EVERY: Duration = Duration::from_secs(20);

pub async fn locality(minutes: u64) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut spec = LocalClusterSpec::new(dir.path());
    spec.shard_manager = true;
    spec.nodes = 5;
    spec.regions = ["east", "east", "east", "west", "west"].map(String::from).to_vec();
    println!(
        "locality: window {} ms, margin {}, {} windows, min {} ops, cooldown {} ms",
        spec.locality.window_ms,
        spec.locality.margin,
        spec.locality.windows,
        spec.locality.min_ops,
        spec.locality.cooldown_ms
    );
    let mut cluster = LocalCluster::start(spec)?;
    let outcome = run(&cluster, minutes).await;
    cluster.stop_all(Duration::from_secs(10));
    outcome
}

fn region_of(node: u64) -> &'static str {
    if node <= 3 {
        "east"
    } else {
        "west"
    }
}

fn owner(map: &ShardMap, ushard: u32) -> u64 {
    let ks = map.keyspaces.iter().find(|k| k.name == KEYSPACE);
    let mut owner = 0;
    for run in ks.map(|k| k.ushard_runs.as_slice()).unwrap_or_default() {
        if run.first_ushard <= ushard {
            owner = run.shard_id;
        }
    }
    owner
}

fn primary_region(map: &ShardMap, shard: u64) -> &'static str {
    region_of(map.shards.iter().find(|s| s.shard_id == shard).map_or(0, |s| s.primary))
}

fn moves_of(map: &ShardMap, ushard: u32) -> usize {
    map.moves
        .iter()
        .filter(|m| m.keyspace == KEYSPACE && m.ushard == ushard)
        .count()
}

/// A routing key that lands in `ushard`.
fn routing_for(ushard: u32) -> String {
    (0..)
        .map(|i| format!("user-{i}"))
        .find(|r| shoal_proto::routing::ushard_for_key(r.as_bytes(), USHARDS) == ushard)
        .expect("some key lands in every μshard")
}

async fn client_in(cluster: &LocalCluster, region: &str) -> anyhow::Result<Arc<ShoalClient>> {
    Ok(Arc::new(
        ShoalClient::connect(ClientConfig {
            endpoints: cluster.endpoints(),
            keyspace: KEYSPACE.into(),
            timeout: Duration::from_secs(30),
            region: Some(region.into()),
            ..ClientConfig::default()
        })
        .await?,
    ))
}

/// One shard of the keyspace led from each region.
async fn set_up(cluster: &LocalCluster, manager: &ShardManagerAt) -> anyhow::Result<(u64, u64)> {
    cluster.ensure_default_keyspace(Duration::from_secs(60)).await?;
    manager
        .create_keyspace(CreateKeyspaceRequest {
            name: KEYSPACE.into(),
            replicas: 3,
            shards: 2,
            ushards: USHARDS,
            mapping: shoal_proto::admin::UshardMapping::Akkio as i32,
            ..Default::default()
        })
        .await?;
    let map = manager.shard_map().await?;
    let shards = map
        .keyspaces
        .iter()
        .find(|k| k.name == KEYSPACE)
        .map(|k| k.shard_ids.clone())
        .unwrap_or_default();
    let [east, west] = shards[..] else {
        anyhow::bail!("expected two shards, got {shards:?}");
    };
    for (shard, region) in [(east, "east"), (west, "west")] {
        let record = map.shards.iter().find(|s| s.shard_id == shard).unwrap();
        let voter = record
            .voters
            .iter()
            .copied()
            .find(|v| region_of(*v) == region)
            .ok_or_else(|| anyhow::anyhow!("shard {shard} has no voter in {region}"))?;
        manager.move_primary(shard, voter).await?;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let map = manager.shard_map().await?;
        if primary_region(&map, east) == "east" && primary_region(&map, west) == "west" {
            return Ok((east, west));
        }
        anyhow::ensure!(Instant::now() < deadline, "primaries did not settle");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn run(cluster: &LocalCluster, minutes: u64) -> anyhow::Result<()> {
    let manager = cluster.shard_manager()?;
    let (east_shard, west_shard) = set_up(cluster, &manager).await?;
    let west = client_in(cluster, "west").await?;
    let east = client_in(cluster, "east").await?;

    // 1. The flip: strong writes from the west to a μshard led from the east.
    let map = manager.shard_map().await?;
    let flipped = (0..USHARDS).find(|u| owner(&map, *u) == east_shard).unwrap();
    let routing = routing_for(flipped);
    println!("ushard {flipped} (shard {east_shard}, led from the east) gets strong writes from the west:");
    let started = Instant::now();
    let mut moved_at = None;
    let mut after_stretches = 0;
    while after_stretches < 2 && started.elapsed() < Duration::from_secs(180) {
        let stretch = Instant::now();
        let (mut ops, mut local) = (0u64, 0u64);
        let mut map = manager.shard_map().await?;
        while stretch.elapsed() < STRETCH {
            let ack = west.put(Key::routed(routing.as_str(), format!("k{ops}")), "v").await?;
            ops += 1;
            if ops.is_multiple_of(50) {
                map = manager.shard_map().await?;
            }
            local += u64::from(primary_region(&map, ack.shard) == "west");
        }
        let now = manager.shard_map().await?;
        if moved_at.is_none() && owner(&now, flipped) == west_shard {
            moved_at = Some(started.elapsed());
        }
        if moved_at.is_some() {
            after_stretches += 1;
        }
        println!(
            "  {:>4.0} s: {ops} writes, {:.0}% served by a primary in the west",
            started.elapsed().as_secs_f64(),
            local as f64 * 100.0 / ops.max(1) as f64
        );
    }
    match moved_at {
        Some(at) => println!(
            "  moved to shard {west_shard} (led from the west) {:.0} s after the flip",
            at.as_secs_f64()
        ),
        None => println!("  never moved"),
    }

    // 2. Even and alternating traffic for `minutes`.
    let map = manager.shard_map().await?;
    let quiet: Vec<u32> = (0..USHARDS).filter(|u| *u != flipped).take(4).collect();
    let before: Vec<usize> = quiet.iter().map(|u| moves_of(&map, *u)).collect();
    println!(
        "{minutes} min: ushards {:?} get even traffic, {:?} traffic that flips region every {} s",
        &quiet[..2],
        &quiet[2..],
        FLIP_EVERY.as_secs()
    );
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for (i, ushard) in quiet.iter().enumerate() {
        let (west, east, stop, routing) = (west.clone(), east.clone(), stop.clone(), routing_for(*ushard));
        let even = i < 2;
        writers.push(tokio::spawn(async move {
            let start = Instant::now();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let from_west = if even {
                    n.is_multiple_of(2)
                } else {
                    (start.elapsed().as_secs() / FLIP_EVERY.as_secs()).is_multiple_of(2)
                };
                let client = if from_west { &west } else { &east };
                client.put(Key::routed(routing.as_str(), format!("q{n}")), "v").await?;
                n += 1;
                // About 50 writes a second per μshard: well over min_ops.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            anyhow::Ok(n)
        }));
    }
    tokio::time::sleep(Duration::from_secs(minutes * 60)).await;
    stop.store(true, Ordering::Relaxed);
    let mut writes = 0;
    for task in writers {
        writes += task.await??;
    }
    let map = manager.shard_map().await?;
    let holds = map
        .locality
        .iter()
        .filter(|d| quiet.contains(&d.ushard) && d.action == "hold")
        .count();
    for (i, ushard) in quiet.iter().enumerate() {
        let kind = if i < 2 { "even" } else { "alternating" };
        println!(
            "  ushard {ushard} ({kind}): {} moves",
            moves_of(&map, *ushard) - before[i]
        );
    }
    println!("  {writes} writes; {holds} hold decisions logged for them");
    Ok(())
}
