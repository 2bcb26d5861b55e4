//! `shoal ushard ...`: where a key's μshard lives, the μshard map, and
//! moving a μshard with a progress display (docs/moves.md).

use crate::connect::shard_manager;
use crate::{client_config, Cli};
use shoal_proto::sm::{GetShardMapRequest, MoveRequest, MoveState, MoveUshardRequest, PinUshardRequest, ShardMap};
use std::io::Write;
use std::time::Duration;

/// `shoal ushard show KEY`: the key's μshard, its shard, that shard's
/// primary, and the version of the map that says so.
pub async fn show(cli: &Cli, key: &str, routing_key: Option<&str>) -> anyhow::Result<()> {
    let config = client_config(cli)?;
    let layout = kv_client::routing::fetch_layout(&config.endpoints).await?;
    let routes = kv_client::routing::RoutingTable::from_layout(&layout);
    let at = routes
        .place(&cli.keyspace, key.as_bytes(), routing_key.map(str::as_bytes))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let primary = layout
        .shards
        .iter()
        .find(|s| s.shard_id == at.shard.0)
        .map(|s| {
            if s.primary == 0 {
                "-".to_string()
            } else {
                s.primary.to_string()
            }
        })
        .unwrap_or_else(|| "-".into());
    println!(
        "key {key:?} of keyspace {}: ushard {}, shard {}, primary node {primary} (map version {})",
        cli.keyspace,
        at.ushard,
        at.shard,
        routes.version()
    );
    Ok(())
}

/// μshards as compact ranges: "0-15,20,22-23".
fn ranges(ushards: &[u32]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < ushards.len() {
        let start = ushards[i];
        let mut end = start;
        while i + 1 < ushards.len() && ushards[i + 1] == end + 1 {
            i += 1;
            end = ushards[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    if out.is_empty() {
        "-".into()
    } else {
        out.join(",")
    }
}

fn mapping_name(raw: i32) -> &'static str {
    match shoal_proto::admin::UshardMapping::try_from(raw) {
        Ok(shoal_proto::admin::UshardMapping::Akkio) => "akkio",
        _ => "compact",
    }
}

/// Prints each keyspace's μshards per shard, and the moves the shard
/// manager knows (`shoal ushard list`, and part of `shoal cluster status`).
pub fn print_map(map: &ShardMap) {
    for ks in &map.keyspaces {
        println!(
            "keyspace {} ({} mapping, {} ushards), map version {}:",
            ks.name,
            mapping_name(ks.mapping),
            ks.ushard_count,
            map.version
        );
        for shard in &ks.shard_ids {
            let mut owned = Vec::new();
            for (i, run) in ks.ushard_runs.iter().enumerate() {
                let end = ks.ushard_runs.get(i + 1).map_or(ks.ushard_count, |r| r.first_ushard);
                if run.shard_id == *shard {
                    owned.extend(run.first_ushard..end);
                }
            }
            if ks.ushard_runs.is_empty() {
                let n = ks.shard_ids.len() as u32;
                let index = ks.shard_ids.iter().position(|s| s == shard).unwrap_or(0) as u32;
                owned.extend((0..ks.ushard_count).filter(|u| u % n == index));
            }
            println!("  shard {shard:<5} {:>4} ushards: {}", owned.len(), ranges(&owned));
        }
        if !ks.pins.is_empty() {
            let mut pins: Vec<(&u32, &String)> = ks.pins.iter().collect();
            pins.sort();
            let pins: Vec<String> = pins.iter().map(|(u, r)| format!("{u}→{r}")).collect();
            println!("  pinned: {}", pins.join(", "));
        }
    }
    print_moves(map);
    print_locality(map);
}

/// The latest locality decisions, newest last (at most this many).
const DECISIONS_SHOWN: usize = 10;

fn print_locality(map: &ShardMap) {
    if map.locality.is_empty() {
        return;
    }
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    println!(
        "locality decisions (latest {} of {}):",
        DECISIONS_SHOWN.min(map.locality.len()),
        map.locality.len()
    );
    println!(
        "{:>7} {:<12} {:<7} {:<6} {:<18} {:<6} reason",
        "ago_s", "keyspace", "ushard", "action", "from -> to", "move"
    );
    let skip = map.locality.len().saturating_sub(DECISIONS_SHOWN);
    for d in map.locality.iter().skip(skip) {
        let regions = format!("{} -> {}", or_dash(&d.from_region), or_dash(&d.to_region));
        let move_id = if d.move_id == 0 {
            "-".to_string()
        } else {
            d.move_id.to_string()
        };
        println!(
            "{:>7.1} {:<12} {:<7} {:<6} {:<18} {:<6} {}",
            now_ms.saturating_sub(d.at_ms) as f64 / 1e3,
            d.keyspace,
            d.ushard,
            d.action,
            regions,
            move_id,
            d.reason
        );
    }
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

fn print_moves(map: &ShardMap) {
    if map.moves.is_empty() {
        return;
    }
    println!(
        "{:<6} {:<12} {:<7} {:<6} {:<6} {:<10} {:<12} {:>10} {:<10} error",
        "move", "keyspace", "ushard", "from", "to", "phase", "step", "copied_kb", "reason"
    );
    for m in &map.moves {
        println!(
            "{:<6} {:<12} {:<7} {:<6} {:<6} {:<10} {:<12} {:>10} {:<10} {}",
            m.move_id,
            m.keyspace,
            m.ushard,
            m.from_shard,
            m.to_shard,
            m.phase,
            if m.step.is_empty() { "-" } else { &m.step },
            m.bytes_copied / 1024,
            m.reason,
            m.error
        );
    }
}

/// `shoal ushard pin KEYSPACE USHARD REGION` (an empty region unpins).
pub async fn pin(cli: &Cli, keyspace: &str, ushard: u32, region: &str) -> anyhow::Result<()> {
    let pins = shard_manager(cli)
        .await?
        .pin_ushard(PinUshardRequest {
            keyspace: keyspace.to_string(),
            ushard,
            region: region.to_string(),
        })
        .await
        .map_err(refusal)?
        .into_inner()
        .pins;
    if region.is_empty() {
        println!("ushard {ushard} of {keyspace} unpinned; locality may move it again");
    } else {
        println!(
            "ushard {ushard} of {keyspace} pinned to {region}: locality keeps it in a shard whose primary is there, moving it at the end of the next window if it is elsewhere"
        );
    }
    let mut pins: Vec<_> = pins.into_iter().collect();
    pins.sort();
    let shown: Vec<String> = pins.iter().map(|(u, r)| format!("{u}→{r}")).collect();
    println!(
        "pins of {keyspace}: {}",
        if shown.is_empty() {
            "none".to_string()
        } else {
            shown.join(", ")
        }
    );
    Ok(())
}

pub async fn list(cli: &Cli) -> anyhow::Result<()> {
    let map = shard_manager(cli)
        .await?
        .get_shard_map(GetShardMapRequest {})
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
        .into_inner();
    print_map(&map);
    Ok(())
}

pub(crate) fn progress_line(m: &MoveState) -> String {
    let step = if m.step.is_empty() {
        String::new()
    } else {
        format!(" / {}", m.step)
    };
    format!(
        "move {}: ushard {} of {}, shard {} -> {}: {}{step}, {:.1} KiB copied, {:.1} s",
        m.move_id,
        m.ushard,
        m.keyspace,
        m.from_shard,
        m.to_shard,
        m.phase,
        m.bytes_copied as f64 / 1024.0,
        m.elapsed_ms as f64 / 1e3
    )
}

/// `shoal ushard move KEYSPACE USHARD SHARD`: starts the move and, unless
/// `no_wait`, shows its progress until it is done; an aborted move exits
/// non-zero with the reason.
pub async fn start_move(cli: &Cli, keyspace: &str, ushard: u32, to: u64, no_wait: bool) -> anyhow::Result<()> {
    let mut sm = shard_manager(cli).await?;
    let started = sm
        .move_ushard(MoveUshardRequest {
            keyspace: keyspace.into(),
            ushard,
            to_shard: to,
        })
        .await
        .map_err(refusal)?
        .into_inner();
    println!("{}", progress_line(&started));
    if no_wait {
        return Ok(());
    }
    wait(cli, started.move_id).await
}

/// A refusal with its stable code, as the shard manager gave them.
pub(crate) fn refusal(status: tonic::Status) -> anyhow::Error {
    match shoal_proto::status_meta::error_code(&status) {
        Some(code) => anyhow::anyhow!("{code}: {}", status.message()),
        None => anyhow::anyhow!("{}", status.message()),
    }
}

/// Polls move `id` until it is done (Ok) or aborted (Err).
pub(crate) async fn wait(cli: &Cli, id: u64) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let mut last = String::new();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        // The shard manager may be restarting: keep asking.
        let state = match shard_manager(cli).await {
            Ok(mut sm) => sm.get_move(MoveRequest { move_id: id }).await.map(|r| r.into_inner()),
            Err(e) => Err(tonic::Status::unavailable(e.to_string())),
        };
        let state = match state {
            Ok(state) => state,
            Err(_) if started.elapsed() < Duration::from_secs(600) => continue,
            Err(s) => anyhow::bail!("move {id}: {}", s.message()),
        };
        let line = progress_line(&state);
        if line != last {
            println!("{line}");
            let _ = std::io::stdout().flush();
            last = line;
        }
        match state.phase.as_str() {
            "done" => {
                println!("move {id} done in {:.1} s", started.elapsed().as_secs_f64());
                return Ok(());
            }
            "aborted" => anyhow::bail!("move {id} was aborted: {}", state.error),
            _ => {}
        }
    }
}

/// `shoal ushard abort MOVE`.
pub async fn abort(cli: &Cli, id: u64) -> anyhow::Result<()> {
    let state = shard_manager(cli)
        .await?
        .abort_move(MoveRequest { move_id: id })
        .await
        .map_err(refusal)?
        .into_inner();
    println!("{}", progress_line(&state));
    Ok(())
}
