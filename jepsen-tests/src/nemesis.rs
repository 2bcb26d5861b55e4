//! Nemeses: the faults a run injects, one at a time, on a schedule fixed by
//! the seed. Each fault is applied, held for a while, then healed; the run
//! ends with everything healed.

use crate::history::Recorder;
use crate::target::Target;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Nemesis {
    /// kill -9 a node, restart it when healing.
    Kill,
    /// SIGSTOP a node, SIGCONT it when healing.
    Pause,
    /// Network partitions: a shard's primary isolated, a 2/3 split, or a
    /// bridge (two groups that only a middle node reaches).
    Partition,
    /// kill -9 the shard manager, restart it when healing.
    ShardManagerKill,
    /// Move a random shard's primary to another voter.
    MovePrimary,
    /// Drain a node (its primaries and replicas move away), then make it
    /// active again when healing, possibly mid-drain.
    Drain,
    /// Make the shard manager's clock jump forward or back by up to 90 s,
    /// then back to true time: its failure detector sees nodes go suspect
    /// or dead (primaries move, replicas may be rebuilt) or stay alive
    /// when they are not. At the same time one node's wall clock is
    /// skewed by up to ±120 ms, inside the 250 ms `max_clock_offset_ms`
    /// that bounded-staleness reads assume (TTLs and freshness stamps read
    /// it; leases use the monotonic clock).
    Clock,
}

impl Nemesis {
    pub const ALL: [Nemesis; 7] = [
        Nemesis::Kill,
        Nemesis::Pause,
        Nemesis::Partition,
        Nemesis::ShardManagerKill,
        Nemesis::MovePrimary,
        Nemesis::Drain,
        Nemesis::Clock,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Nemesis::Kill => "kill",
            Nemesis::Pause => "pause",
            Nemesis::Partition => "partition",
            Nemesis::ShardManagerKill => "sm-kill",
            Nemesis::MovePrimary => "move-primary",
            Nemesis::Drain => "drain",
            Nemesis::Clock => "clock",
        }
    }

    pub fn parse(name: &str) -> anyhow::Result<Nemesis> {
        Nemesis::ALL.into_iter().find(|n| n.name() == name).ok_or_else(|| {
            let known: Vec<&str> = Nemesis::ALL.iter().map(|n| n.name()).collect();
            anyhow::anyhow!("unknown nemesis {name:?}; known: {}", known.join(", "))
        })
    }
}

/// What must be undone after a fault.
enum Heal {
    Restart(u64),
    Resume(u64),
    Network,
    ShardManager,
    Activate(u64),
    /// With the shards' epochs and membership versions summed before the
    /// jump, and the node whose clock was skewed.
    Clock {
        epochs: u64,
        conf_vers: u64,
        node: u64,
    },
    Nothing,
}

/// Sums of the shards' epochs and membership versions: how much the
/// control plane changed between two looks.
fn churn(map: &shoal_proto::sm::ShardMap) -> (u64, u64) {
    (
        map.shards.iter().map(|s| s.epoch).sum(),
        map.shards.iter().map(|s| s.conf_ver).sum(),
    )
}

/// Applies one `nemesis` fault, chosen with `rng`.
async fn inject<T: Target>(
    target: &mut T,
    nemesis: Nemesis,
    rng: &mut StdRng,
    recorder: &Recorder,
) -> anyhow::Result<Heal> {
    let nodes = target.nodes();
    let victim = *nodes.choose(rng).expect("nodes");
    Ok(match nemesis {
        Nemesis::Kill => {
            recorder.nemesis(format!("kill -9 node {victim}"));
            target.kill(victim)?;
            Heal::Restart(victim)
        }
        Nemesis::Pause => {
            recorder.nemesis(format!("pause node {victim}"));
            target.pause(victim)?;
            Heal::Resume(victim)
        }
        Nemesis::Partition => {
            let mut shuffled = nodes.clone();
            shuffled.shuffle(rng);
            match rng.gen_range(0..3) {
                0 => {
                    let map = target.shard_map().await?;
                    let shard = map.shards.choose(rng).expect("shards");
                    recorder.nemesis(format!(
                        "isolate node {} (primary of shard {})",
                        shard.primary, shard.shard_id
                    ));
                    target.isolate(shard.primary).await?;
                }
                1 => {
                    let (minority, majority) = shuffled.split_at(2);
                    recorder.nemesis(format!("partition {minority:?} | {majority:?}"));
                    target.partition(minority, majority).await?;
                }
                _ => {
                    let (left, rest) = shuffled.split_at(2);
                    let (bridge, right) = rest.split_at(1);
                    recorder.nemesis(format!("bridge {left:?} - {bridge:?} - {right:?}"));
                    target.partition(left, right).await?;
                }
            }
            Heal::Network
        }
        Nemesis::ShardManagerKill => {
            recorder.nemesis("kill -9 the shard manager");
            target.kill_shard_manager()?;
            Heal::ShardManager
        }
        Nemesis::MovePrimary => {
            let map = target.shard_map().await?;
            let shard = map.shards.choose(rng).expect("shards");
            let others: Vec<u64> = shard.voters.iter().copied().filter(|v| *v != shard.primary).collect();
            if let Some(to) = others.choose(rng) {
                recorder.nemesis(format!("move primary of shard {} to node {to}", shard.shard_id));
                // Refused when the node is not alive: that is fine.
                if let Err(e) = target.move_primary(shard.shard_id, *to).await {
                    recorder.nemesis(format!("move refused: {e:#}"));
                }
            }
            Heal::Nothing
        }
        Nemesis::Drain => {
            recorder.nemesis(format!("drain node {victim}"));
            target.drain(victim).await?;
            Heal::Activate(victim)
        }
        Nemesis::Clock => {
            let magnitude = rng.gen_range(1_000..90_000i64);
            let offset = if rng.gen_bool(0.5) { magnitude } else { -magnitude };
            let (epochs, conf_vers) = churn(&target.shard_map().await?);
            let skew = rng.gen_range(-120..=120i64);
            recorder.nemesis(format!(
                "shard-manager clock jumps {:+.1} s; node {victim} clock skewed {skew:+} ms",
                offset as f64 / 1e3
            ));
            target.set_shard_manager_clock(offset).await?;
            target.set_node_clock(victim, skew).await?;
            Heal::Clock {
                epochs,
                conf_vers,
                node: victim,
            }
        }
    })
}

async fn heal<T: Target>(target: &mut T, heal: Heal, recorder: &Recorder) -> anyhow::Result<()> {
    match heal {
        Heal::Restart(node) => {
            recorder.nemesis(format!("restart node {node}"));
            target.restart(node)
        }
        Heal::Resume(node) => {
            recorder.nemesis(format!("resume node {node}"));
            target.resume(node)
        }
        Heal::Network => {
            recorder.nemesis("heal network");
            target.heal_network().await
        }
        Heal::ShardManager => {
            recorder.nemesis("restart the shard manager");
            target.restart_shard_manager()
        }
        Heal::Activate(node) => {
            // How far the drain got: replicas still on the node, moves in flight.
            let map = target.shard_map().await?;
            let held = map.nodes.iter().find(|n| n.node_id == node).map(|n| n.replica_count);
            let moving = map.shards.iter().filter(|s| s.removing == node).count();
            recorder.nemesis(format!(
                "activate node {node} (still holds {} replicas, {moving} moving)",
                held.unwrap_or(0)
            ));
            target.activate(node).await
        }
        Heal::Clock {
            epochs,
            conf_vers,
            node,
        } => {
            let (now_epochs, now_conf_vers) = churn(&target.shard_map().await?);
            recorder.nemesis(format!(
                "shard-manager and node {node} clocks back to true time (meanwhile: {} primary changes, {} membership steps)",
                now_epochs - epochs,
                now_conf_vers - conf_vers
            ));
            // A killed node comes back with true time anyway.
            let _ = target.set_node_clock(node, 0).await;
            target.set_shard_manager_clock(0).await
        }
        Heal::Nothing => Ok(()),
    }
}

/// Injects faults from `mix` until `duration` has passed: a quiet spell of
/// 1-4 s, a fault held 2-8 s, heal, again. Everything is healed on return.
pub async fn run_schedule<T: Target>(
    target: &mut T,
    mix: &[Nemesis],
    seed: u64,
    duration: Duration,
    recorder: &Recorder,
) -> anyhow::Result<()> {
    use rand::SeedableRng;
    let mut rng = StdRng::seed_from_u64(seed);
    let deadline = tokio::time::Instant::now() + duration;
    if mix.is_empty() {
        tokio::time::sleep_until(deadline).await;
        return Ok(());
    }
    loop {
        let quiet = Duration::from_millis(rng.gen_range(1_000..4_000));
        if tokio::time::Instant::now() + quiet >= deadline {
            tokio::time::sleep_until(deadline).await;
            return Ok(());
        }
        tokio::time::sleep(quiet).await;
        let nemesis = *mix.choose(&mut rng).expect("mix");
        let undo = inject(target, nemesis, &mut rng, recorder).await?;
        let hold = Duration::from_millis(rng.gen_range(2_000..8_000));
        tokio::time::sleep(hold.min(deadline.saturating_duration_since(tokio::time::Instant::now()))).await;
        heal(target, undo, recorder).await?;
    }
}
