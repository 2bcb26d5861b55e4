//! Akkio-style locality on five nodes in two regions: a μshard whose
//! traffic comes from the other region than its primary's moves to a shard
//! whose primary is there, after the windows the config asks for; even
//! traffic from both regions then moves nothing; a pin moves it back and
//! holds it; bad pins get their codes and change nothing.

mod common;

use common::{must_start_spec, must_wait_for_map, two_region_spec};
use kv_client::{ClientConfig, Key, ShoalClient};
use local_cluster::probe::error_code;
use shoal_proto::sm::{CreateKeyspaceRequest, ShardMap};
use std::time::Duration;

const USHARDS: u32 = 16;

async fn client_in(endpoints: Vec<String>, region: &str) -> ShoalClient {
    ShoalClient::connect(ClientConfig {
        endpoints,
        keyspace: "geo".into(),
        timeout: Duration::from_secs(20),
        region: Some(region.into()),
        ..ClientConfig::default()
    })
    .await
    .expect("connect")
}

/// The shard owning `ushard` of `geo` by the map.
fn owner(map: &ShardMap, ushard: u32) -> u64 {
    let ks = map.keyspaces.iter().find(|k| k.name == "geo").unwrap();
    let mut owner = 0;
    for run in &ks.ushard_runs {
        if run.first_ushard <= ushard {
            owner = run.shard_id;
        }
    }
    owner
}

fn primary_of(map: &ShardMap, shard: u64) -> u64 {
    map.shards.iter().find(|s| s.shard_id == shard).unwrap().primary
}

/// Nodes 1-3 are east, 4-5 west.
fn region_of(node: u64) -> &'static str {
    if node <= 3 {
        "east"
    } else {
        "west"
    }
}

fn moves_of(map: &ShardMap, ushard: u32) -> usize {
    map.moves
        .iter()
        .filter(|m| m.keyspace == "geo" && m.ushard == ushard)
        .count()
}

/// `n` strong writes to μshard `routing` from `client`; returns how many
/// were served by a primary in `region` (by the map after each).
async fn write_from(client: &ShoalClient, routing: &str, n: u32, map: &ShardMap, region: &str) -> u32 {
    let mut local = 0;
    for i in 0..n {
        let ack = client
            .put(Key::routed(routing, format!("k{i}")), "v")
            .await
            .unwrap_or_else(|e| panic!("put k{i} to {routing}: {e}"));
        local += u32::from(region_of(primary_of(map, ack.shard)) == region);
    }
    local
}

/// Writes from `client` until `ushard` is owned by `shard` and no move is
/// under way; the map then.
async fn must_follow(
    tc: &common::TestCluster,
    client: &ShoalClient,
    routing: &str,
    map: &ShardMap,
    ushard: u32,
    shard: u64,
    what: &str,
) -> ShardMap {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        write_from(client, routing, 20, map, "west").await;
        let now = tc.cluster.shard_map().await.unwrap();
        if owner(&now, ushard) == shard && now.moves.iter().all(|m| m.phase == "done") {
            return now;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: {:#?}", now.locality);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ushard_follows_its_traffic_to_the_other_region_never_flaps_and_obeys_pins() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = two_region_spec(&dir, Duration::from_secs(30));
    spec.locality.window_ms = 400;
    spec.locality.windows = 3;
    spec.locality.min_ops = 20;
    spec.locality.cooldown_ms = 1_000;
    let tc = must_start_spec(spec, dir).await;
    let sm = tc.cluster.shard_manager().unwrap();
    sm.create_keyspace(CreateKeyspaceRequest {
        name: "geo".into(),
        replicas: 3,
        shards: 2,
        ushards: USHARDS,
        mapping: shoal_proto::admin::UshardMapping::Akkio as i32,
        ..Default::default()
    })
    .await
    .unwrap();
    // One shard led from each region: voters span both, so each shard has
    // a voter in each.
    let map = tc.cluster.shard_map().await.unwrap();
    let geo = map
        .keyspaces
        .iter()
        .find(|k| k.name == "geo")
        .unwrap()
        .shard_ids
        .clone();
    let voter_in = |shard: u64, region: &str| {
        let s = map.shards.iter().find(|s| s.shard_id == shard).unwrap();
        *s.voters.iter().find(|v| region_of(**v) == region).unwrap()
    };
    let (east_shard, west_shard) = (geo[0], geo[1]);
    tc.cluster
        .move_primary(east_shard, voter_in(east_shard, "east"))
        .await
        .unwrap();
    tc.cluster
        .move_primary(west_shard, voter_in(west_shard, "west"))
        .await
        .unwrap();
    must_wait_for_map(&tc.cluster, Duration::from_secs(30), "primaries in both regions", |m| {
        region_of(primary_of(m, east_shard)) == "east" && region_of(primary_of(m, west_shard)) == "west"
    })
    .await;
    // Every node has the map and every leader is where it says.
    let map = common::must_align(&tc.cluster).await;
    let ushard = (0..USHARDS).find(|u| owner(&map, *u) == east_shard).unwrap();
    let routing = (0..)
        .map(|i| format!("user-{i}"))
        .find(|r| shoal_proto::routing::ushard_for_key(r.as_bytes(), USHARDS) == ushard)
        .unwrap();

    // 1. Its traffic comes from the west: after three windows of it, it
    //    moves to the shard led from the west.
    let west = client_in(tc.cluster.endpoints(), "west").await;
    let east = client_in(tc.cluster.endpoints(), "east").await;
    let before = write_from(&west, &routing, 100, &map, "west").await;
    assert_eq!(before, 0, "served in the east before the move");
    let moved = must_follow(&tc, &west, &routing, &map, ushard, west_shard, "never moved").await;
    let after = write_from(&west, &routing, 100, &moved, "west").await;
    eprintln!("strong writes from the west served in the west: {before}/100 before, {after}/100 after");
    assert_eq!(after, 100);
    let decision = moved
        .locality
        .iter()
        .find(|d| d.action == "move" && d.ushard == ushard)
        .expect("the move is in the decision log");
    assert_eq!(
        (decision.from_region.as_str(), decision.to_region.as_str()),
        ("east", "west")
    );
    assert!(decision.reason.contains("window 3 of 3"), "{}", decision.reason);
    let record = moved.moves.iter().find(|m| m.move_id == decision.move_id).unwrap();
    assert!(record.reason.starts_with("locality"), "{}", record.reason);

    // 2. Even traffic from both regions, interleaved op by op, for many
    //    windows: never the margin, so nothing moves (the cooldown is
    //    shorter than this phase, so it is the margin that holds it).
    let even_started = std::time::Instant::now();
    let mut i = 0u32;
    while even_started.elapsed() < Duration::from_millis(15 * 400) {
        let from = if i.is_multiple_of(2) { &west } else { &east };
        from.put(Key::routed(routing.as_str(), format!("even{i}")), "v")
            .await
            .expect("put");
        i += 1;
    }
    eprintln!("{i} writes alternating west/east over 15 windows");
    assert!(i >= 15 * 20 * 2, "too slow to fill the windows with min_ops each: {i}");
    let even = tc.cluster.shard_map().await.unwrap();
    assert_eq!(owner(&even, ushard), west_shard);
    assert_eq!(
        moves_of(&even, ushard),
        1,
        "even traffic moved it: {:#?}",
        even.locality
    );

    // 3. Bad pins change nothing.
    sm.create_keyspace(CreateKeyspaceRequest {
        name: "flat".into(),
        replicas: 3,
        shards: 1,
        ushards: 4,
        mapping: shoal_proto::admin::UshardMapping::Compact as i32,
        ..Default::default()
    })
    .await
    .unwrap();
    for (keyspace, u, region, code) in [
        ("geo", ushard, "mars", "UNKNOWN_REGION"),
        ("geo", USHARDS, "east", "USHARD_OUT_OF_RANGE"),
        ("nope", ushard, "east", "UNKNOWN_KEYSPACE"),
        ("flat", 0, "east", "COMPACT_MAPPING"),
    ] {
        let refused = sm.pin_ushard(keyspace, u, region).await.unwrap_err();
        assert_eq!(error_code(&refused), code, "{refused:?}");
    }
    let unchanged = tc.cluster.shard_map().await.unwrap();
    assert!(unchanged.keyspaces.iter().all(|k| k.pins.is_empty()));

    // 4. Pinned east, it goes back despite its western traffic, and stays.
    let pins = sm.pin_ushard("geo", ushard, "east").await.unwrap();
    assert_eq!(pins.get(&ushard).map(String::as_str), Some("east"));
    let pinned = must_follow(
        &tc,
        &west,
        &routing,
        &moved,
        ushard,
        east_shard,
        "the pin did not move it",
    )
    .await;
    let pin_move = pinned
        .locality
        .iter()
        .rev()
        .find(|d| d.action == "move" && d.ushard == ushard)
        .unwrap();
    assert_eq!(pin_move.reason, "pinned to east");
    for _ in 0..10 {
        write_from(&west, &routing, 20, &pinned, "west").await;
    }
    let held = tc.cluster.shard_map().await.unwrap();
    assert_eq!(owner(&held, ushard), east_shard, "a pin holds against traffic");
    assert_eq!(moves_of(&held, ushard), 2);
    let pins = sm.pin_ushard("geo", ushard, "").await.unwrap();
    assert!(pins.is_empty());
    let mut tc = tc;
    tc.cluster.stop_all(Duration::from_secs(10));
}
