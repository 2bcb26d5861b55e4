//! `shoal shard split SHARD` and `shoal shard merge SHARD INTO`: started in
//! the shard manager, then each of their μshard moves followed to its end
//! (docs/moves.md).

use crate::connect::shard_manager;
use crate::ushard::{progress_line, refusal, wait};
use crate::Cli;
use shoal_proto::sm::{GetShardMapRequest, MergeShardRequest, MoveState, SplitShardRequest};
use std::time::Duration;

pub async fn split(cli: &Cli, shard: u64, no_wait: bool) -> anyhow::Result<()> {
    let response = shard_manager(cli)
        .await?
        .split_shard(SplitShardRequest { shard_id: shard })
        .await
        .map_err(refusal)?
        .into_inner();
    println!(
        "splitting shard {shard}: new shard {} takes {} μshards",
        response.new_shard_id,
        response.moves.len()
    );
    follow(cli, &response.moves, no_wait).await
}

pub async fn merge(cli: &Cli, shard: u64, into: u64, no_wait: bool) -> anyhow::Result<()> {
    let response = shard_manager(cli)
        .await?
        .merge_shard(MergeShardRequest {
            shard_id: shard,
            into_shard_id: into,
        })
        .await
        .map_err(refusal)?
        .into_inner();
    println!(
        "merging shard {shard} into {into}: {} μshards move",
        response.moves.len()
    );
    follow(cli, &response.moves, no_wait).await?;
    if no_wait {
        return Ok(());
    }
    wait_retired(cli, shard).await
}

/// Shows each move, then (unless `no_wait`) follows each to its end; any
/// aborted move makes it fail.
async fn follow(cli: &Cli, moves: &[MoveState], no_wait: bool) -> anyhow::Result<()> {
    for m in moves {
        println!("{}", progress_line(m));
    }
    if no_wait {
        return Ok(());
    }
    for m in moves {
        wait(cli, m.move_id).await?;
    }
    Ok(())
}

/// Waits until the shard manager no longer lists `shard` in its map.
async fn wait_retired(cli: &Cli, shard: u64) -> anyhow::Result<()> {
    for _ in 0..150 {
        let map = shard_manager(cli)
            .await?
            .get_shard_map(GetShardMapRequest {})
            .await
            .map_err(refusal)?
            .into_inner();
        if !map.shards.iter().any(|s| s.shard_id == shard) {
            println!("shard {shard} retired");
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::bail!("shard {shard} owns no μshard but has not retired yet: see `shoal cluster status`")
}
