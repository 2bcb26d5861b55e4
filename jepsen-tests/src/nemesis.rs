//! Nemeses: the faults a run injects, on a schedule fixed by the seed. Each
//! fault is applied, held for a while, then healed; the run ends with
//! everything healed. A composed schedule (`--nemesis all`) overlaps up to
//! three faults at once (a partition and a quick restart, a pause and a
//! kill, two kills), because holes hide where faults meet.

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
    /// kill -9 a node and restart it within 0-800 ms: inside the leader
    /// lease it may have promised before the crash.
    QuickRestart,
    /// kill -9 a node that loses every write it had not fsynced (a power
    /// loss; its nodes run with `faults.lose_unsynced_writes`), restart it
    /// within 0-2 s. In a run whose mix has it, every kill of the local
    /// target loses unsynced writes too.
    PowerKill,
    /// SIGSTOP a node, SIGCONT it when healing.
    Pause,
    /// Network partitions: a shard's primary isolated, a 2/3 split, or a
    /// bridge (two groups that only a middle node reaches).
    Partition,
    /// One direction only: a node (often a primary) cannot send to its
    /// peers, while their messages still reach it.
    OneWay,
    /// A node cut off from the shard manager only; its peers and clients
    /// still reach it.
    SmPartition,
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
    /// One node's wall clock jumps far beyond the offset budget (±1 s to
    /// ±1 h), back when healing: as a leader it may stamp nothing (its
    /// peers' clocks disagree), as a follower it proves no staleness.
    NodeClockJump,
    /// Move a few μshards of the keyspace (a quarter of them) to other
    /// shards, live, through the shard manager; composed with the other
    /// faults, kills, pauses and partitions land in every phase of a move.
    MoveUshard,
    /// Split a random shard of the keyspace (one with two μshards or more):
    /// a new shard takes half its μshards, moved live.
    Split,
    /// Merge a random shard of the keyspace into another (while it has
    /// more than two): its μshards move live, then it retires.
    Merge,
}

impl Nemesis {
    pub const ALL: [Nemesis; 15] = [
        Nemesis::Kill,
        Nemesis::QuickRestart,
        Nemesis::PowerKill,
        Nemesis::Pause,
        Nemesis::Partition,
        Nemesis::OneWay,
        Nemesis::SmPartition,
        Nemesis::ShardManagerKill,
        Nemesis::MovePrimary,
        Nemesis::Drain,
        Nemesis::Clock,
        Nemesis::NodeClockJump,
        Nemesis::MoveUshard,
        Nemesis::Split,
        Nemesis::Merge,
    ];

    /// Whether a run of `mix` needs nodes that lose unsynced writes when
    /// killed (power-kill is in it).
    pub fn needs_power_loss(mix: &[Nemesis]) -> bool {
        mix.contains(&Nemesis::PowerKill)
    }

    /// Whether this fault may lose acknowledged fast-ack writes: it kills
    /// a primary, cuts it off from its peers, or makes the shard manager
    /// give up on a live one (its clock, a partition from it), inside the
    /// fast-ack loss window (docs/consistency.md). Moving a primary,
    /// draining, the shard manager's death and node clock jumps lose none.
    pub fn may_lose_fast_acks(self) -> bool {
        !matches!(
            self,
            Nemesis::MovePrimary
                | Nemesis::Drain
                | Nemesis::ShardManagerKill
                | Nemesis::NodeClockJump
                | Nemesis::MoveUshard
                | Nemesis::Split
                | Nemesis::Merge
        )
    }

    /// Whether this fault moves μshards between shards (a move, a split, a
    /// merge).
    pub fn moves_ushards(self) -> bool {
        matches!(self, Nemesis::MoveUshard | Nemesis::Split | Nemesis::Merge)
    }

    pub fn name(self) -> &'static str {
        match self {
            Nemesis::Kill => "kill",
            Nemesis::QuickRestart => "quick-restart",
            Nemesis::Pause => "pause",
            Nemesis::Partition => "partition",
            Nemesis::OneWay => "one-way",
            Nemesis::SmPartition => "sm-partition",
            Nemesis::ShardManagerKill => "sm-kill",
            Nemesis::MovePrimary => "move-primary",
            Nemesis::Drain => "drain",
            Nemesis::Clock => "clock",
            Nemesis::PowerKill => "power-kill",
            Nemesis::NodeClockJump => "node-clock-jump",
            Nemesis::MoveUshard => "move-ushard",
            Nemesis::Split => "split",
            Nemesis::Merge => "merge",
        }
    }

    /// Faults that filter the network: a composed round has at most one,
    /// since each replaces the filters the last one set.
    fn is_network(self) -> bool {
        matches!(self, Nemesis::Partition | Nemesis::OneWay | Nemesis::SmPartition)
    }

    /// Faults that may appear twice in one composed round (on two nodes).
    fn may_repeat(self) -> bool {
        matches!(
            self,
            Nemesis::Kill | Nemesis::QuickRestart | Nemesis::PowerKill | Nemesis::Pause
        )
    }

    /// A `--nemesis` value: `none`, `all` (every nemesis, composed), or a
    /// comma-separated list run one fault at a time. Returns the mix and
    /// whether to compose it.
    pub fn parse_list(spec: &str) -> anyhow::Result<(Vec<Nemesis>, bool)> {
        match spec.trim() {
            "none" => Ok((Vec::new(), false)),
            "all" => Ok((Nemesis::ALL.to_vec(), true)),
            list => Ok((
                list.split(',')
                    .map(|n| Nemesis::parse(n.trim()))
                    .collect::<anyhow::Result<Vec<_>>>()?,
                false,
            )),
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
    /// A node's wall clock back to true time.
    NodeClock(u64),
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
/// control plane changed between two looks (a shard retired in between
/// takes its share out of the sums).
fn churn(map: &shoal_proto::sm::ShardMap) -> (u64, u64) {
    (
        map.shards.iter().map(|s| s.epoch).sum(),
        map.shards.iter().map(|s| s.conf_ver).sum(),
    )
}

/// The shard owning `ushard` by the keyspace's map as the shard manager
/// shows it.
fn owner_in(keyspace: &shoal_proto::sm::KeyspaceState, ushard: u32) -> Option<u64> {
    keyspace
        .ushard_runs
        .iter()
        .take_while(|r| r.first_ushard <= ushard)
        .last()
        .map(|r| r.shard_id)
}

/// Applies one `nemesis` fault, chosen with `rng`. Its victim is a node
/// not in `busy` (the nodes other faults of this round hold), and is added
/// to it.
async fn inject<T: Target>(
    target: &mut T,
    nemesis: Nemesis,
    rng: &mut StdRng,
    recorder: &Recorder,
    busy: &mut Vec<u64>,
) -> anyhow::Result<Heal> {
    let nodes = target.nodes();
    let free: Vec<u64> = nodes.iter().copied().filter(|n| !busy.contains(n)).collect();
    let Some(victim) = free.choose(rng).copied() else {
        return Ok(Heal::Nothing);
    };
    busy.push(victim);
    Ok(match nemesis {
        Nemesis::Kill => {
            recorder.nemesis(format!("kill -9 node {victim}"));
            target.kill(victim)?;
            Heal::Restart(victim)
        }
        Nemesis::QuickRestart => {
            let after = Duration::from_millis(rng.gen_range(0..800));
            recorder.nemesis(format!("kill -9 node {victim}, restart after {} ms", after.as_millis()));
            target.kill(victim)?;
            tokio::time::sleep(after).await;
            target.restart(victim)?;
            Heal::Nothing
        }
        Nemesis::PowerKill => {
            let after = Duration::from_millis(rng.gen_range(0..2_000));
            recorder.nemesis(format!(
                "power-kill node {victim} (unsynced writes lost), restart after {} ms",
                after.as_millis()
            ));
            target.kill(victim)?;
            tokio::time::sleep(after).await;
            target.restart(victim)?;
            Heal::Nothing
        }
        Nemesis::NodeClockJump => {
            let magnitude = rng.gen_range(1_000..3_600_000i64);
            let offset = if rng.gen_bool(0.5) { magnitude } else { -magnitude };
            recorder.nemesis(format!(
                "node {victim} clock jumps {:+.1} s (beyond the offset budget)",
                offset as f64 / 1e3
            ));
            target.set_node_clock(victim, offset).await?;
            Heal::NodeClock(victim)
        }
        Nemesis::OneWay => {
            // Half the time a primary: it can still hear, but not lead.
            let from = if rng.gen_bool(0.5) {
                let map = target.shard_map().await?;
                map.shards
                    .choose(rng)
                    .map(|s| s.primary)
                    .filter(|p| !busy[..busy.len() - 1].contains(p))
            } else {
                None
            }
            .unwrap_or(victim);
            let to: Vec<u64> = nodes.iter().copied().filter(|n| *n != from).collect();
            recorder.nemesis(format!("node {from} cannot send to {to:?} (one way)"));
            target.cut_one_way(&[from], &to).await?;
            Heal::Network
        }
        Nemesis::SmPartition => {
            recorder.nemesis(format!("node {victim} cut off from the shard manager"));
            target.cut_from_shard_manager(victim).await?;
            Heal::Network
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
        Nemesis::MoveUshard => {
            let map = target.shard_map().await?;
            let keyspace = map.keyspaces.iter().find(|k| k.name == "default").cloned();
            if let Some(keyspace) = keyspace {
                let ushards: Vec<u32> = (0..keyspace.ushard_count).collect();
                for ushard in ushards.choose_multiple(rng, (keyspace.ushard_count as usize / 4).max(1)) {
                    let owner = owner_in(&keyspace, *ushard);
                    let others: Vec<u64> = keyspace
                        .shard_ids
                        .iter()
                        .copied()
                        .filter(|s| Some(*s) != owner)
                        .collect();
                    let Some(to) = others.choose(rng).copied() else {
                        continue;
                    };
                    match target.move_ushard(*ushard, to).await {
                        Ok(id) => recorder.nemesis(format!("move ushard {ushard} to shard {to} (move {id})")),
                        // A μshard still moving, a shard manager down: fine.
                        Err(e) => recorder.nemesis(format!("move of ushard {ushard} refused: {e:#}")),
                    }
                }
            }
            Heal::Nothing
        }
        Nemesis::Split => {
            let map = target.shard_map().await?;
            if let Some(keyspace) = map.keyspaces.iter().find(|k| k.name == "default") {
                let splittable: Vec<u64> = keyspace
                    .shard_ids
                    .iter()
                    .copied()
                    .filter(|s| {
                        (0..keyspace.ushard_count)
                            .filter(|u| owner_in(keyspace, *u) == Some(*s))
                            .count()
                            >= 2
                    })
                    .collect();
                if let Some(shard) = splittable.choose(rng).copied() {
                    match target.split_shard(shard).await {
                        Ok(new_shard) => recorder.nemesis(format!("split shard {shard} into new shard {new_shard}")),
                        // Busy with a move, a shard manager down: fine.
                        Err(e) => recorder.nemesis(format!("split of shard {shard} refused: {e:#}")),
                    }
                }
            }
            Heal::Nothing
        }
        Nemesis::Merge => {
            let map = target.shard_map().await?;
            if let Some(keyspace) = map.keyspaces.iter().find(|k| k.name == "default") {
                let live: Vec<u64> = keyspace
                    .shard_ids
                    .iter()
                    .copied()
                    .filter(|s| !keyspace.retiring_shard_ids.contains(s))
                    .collect();
                if live.len() > 2 {
                    let picked: Vec<u64> = live.choose_multiple(rng, 2).copied().collect();
                    let (shard, into) = (picked[0], picked[1]);
                    match target.merge_shard(shard, into).await {
                        Ok(moves) => recorder.nemesis(format!("merge shard {shard} into {into} ({moves} moves)")),
                        Err(e) => recorder.nemesis(format!("merge of shard {shard} refused: {e:#}")),
                    }
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
            let map = shard_map_soon(target).await?;
            let held = map.nodes.iter().find(|n| n.node_id == node).map(|n| n.replica_count);
            let moving = map.shards.iter().filter(|s| s.removing == node).count();
            recorder.nemesis(format!(
                "activate node {node} (still holds {} replicas, {moving} moving)",
                held.unwrap_or(0)
            ));
            // The shard manager may have been restarted a moment ago.
            let mut tries = 0;
            loop {
                match target.activate(node).await {
                    Err(_) if tries < SM_RETRIES => tries += 1,
                    done => return done,
                }
                tokio::time::sleep(SM_RETRY_EVERY).await;
            }
        }
        Heal::Clock {
            epochs,
            conf_vers,
            node,
        } => {
            let (now_epochs, now_conf_vers) = churn(&shard_map_soon(target).await?);
            recorder.nemesis(format!(
                "shard-manager and node {node} clocks back to true time (meanwhile: {} primary changes, {} membership steps)",
                // A shard retired by a merge meanwhile takes its epochs out
                // of the sum: then the count is a lower bound.
                now_epochs.saturating_sub(epochs),
                now_conf_vers.saturating_sub(conf_vers)
            ));
            // A killed node comes back with true time anyway, and so does a
            // restarted shard manager.
            let _ = target.set_node_clock(node, 0).await;
            let mut tries = 0;
            loop {
                match target.set_shard_manager_clock(0).await {
                    Err(_) if tries < SM_RETRIES => tries += 1,
                    done => return done,
                }
                tokio::time::sleep(SM_RETRY_EVERY).await;
            }
        }
        Heal::NodeClock(node) => {
            recorder.nemesis(format!("node {node} clock back to true time"));
            // A node killed meanwhile came back with true time anyway.
            let _ = target.set_node_clock(node, 0).await;
            Ok(())
        }
        Heal::Nothing => Ok(()),
    }
}

/// How long a heal waits for a shard manager that was just restarted.
const SM_RETRIES: u32 = 50;
const SM_RETRY_EVERY: Duration = Duration::from_millis(200);

/// The shard map, waiting up to 10 s for a shard manager that was just
/// restarted in the same round.
async fn shard_map_soon<T: Target>(target: &T) -> anyhow::Result<shoal_proto::sm::ShardMap> {
    let mut tries = 0;
    loop {
        match target.shard_map().await {
            Err(_) if tries < SM_RETRIES => tries += 1,
            done => return done,
        }
        tokio::time::sleep(SM_RETRY_EVERY).await;
    }
}

/// The faults of one round: one from `mix`, or with `composed` one to
/// three, at most one of them a network fault (which goes first, while
/// every node is up to take its filters). A shard-manager kill goes last,
/// so the faults that ask the shard manager (clock, drain, move-primary,
/// one-way's choice of a primary) find it up; healing runs in reverse, so
/// it is back before they are undone.
fn pick_round(mix: &[Nemesis], composed: bool, rng: &mut StdRng) -> Vec<Nemesis> {
    let first = *mix.choose(rng).expect("mix");
    if !composed {
        return vec![first];
    }
    let mut round = vec![first];
    for _ in 1..rng.gen_range(1..=3) {
        let next = *mix.choose(rng).expect("mix");
        let clashes = round
            .iter()
            .any(|n| (n.is_network() && next.is_network()) || (*n == next && !next.may_repeat()));
        if !clashes {
            round.push(next);
        }
    }
    round.sort_by_key(|n| (!n.is_network(), *n == Nemesis::ShardManagerKill));
    round
}

/// Injects faults from `mix` until `duration` has passed: a quiet spell of
/// 1-4 s, a round of faults (one, or with `composed` up to three at once)
/// held 2-8 s, heal them in reverse order, again. Everything is healed on
/// return.
pub async fn run_schedule<T: Target>(
    target: &mut T,
    mix: &[Nemesis],
    composed: bool,
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
        let mut busy = Vec::new();
        let mut undo = Vec::new();
        for nemesis in pick_round(mix, composed, &mut rng) {
            match inject(target, nemesis, &mut rng, recorder, &mut busy).await {
                Ok(heal) => undo.push(heal),
                Err(e) => {
                    // Heal what this round did before giving up.
                    for heal_step in undo.into_iter().rev() {
                        let _ = heal(target, heal_step, recorder).await;
                    }
                    return Err(e);
                }
            }
            // Overlapping, not simultaneous: the next fault lands mid-way.
            if composed {
                tokio::time::sleep(Duration::from_millis(rng.gen_range(0..1_500))).await;
            }
        }
        let hold = Duration::from_millis(rng.gen_range(2_000..8_000));
        tokio::time::sleep(hold.min(deadline.saturating_duration_since(tokio::time::Instant::now()))).await;
        for heal_step in undo.into_iter().rev() {
            heal(target, heal_step, recorder).await?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn composed_rounds_overlap_faults_but_never_two_network_filters() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut sizes = [0usize; 4];
        for _ in 0..500 {
            let round = pick_round(&Nemesis::ALL, true, &mut rng);
            sizes[round.len()] += 1;
            assert!(round.iter().filter(|n| n.is_network()).count() <= 1, "{round:?}");
            if round.iter().any(|n| n.is_network()) {
                assert!(round[0].is_network(), "network faults go first: {round:?}");
            }
            if let Some(i) = round.iter().position(|n| *n == Nemesis::ShardManagerKill) {
                assert_eq!(i, round.len() - 1, "the shard manager dies last: {round:?}");
            }
        }
        assert!(sizes[2] > 0 && sizes[3] > 0, "rounds of 2 and 3 faults: {sizes:?}");
        let single = pick_round(&Nemesis::ALL, false, &mut rng);
        assert_eq!(single.len(), 1);
    }

    #[test]
    fn all_means_every_nemesis_composed() {
        let (mix, composed) = Nemesis::parse_list("all").unwrap();
        assert_eq!(mix.len(), Nemesis::ALL.len());
        assert!(composed);
        let (mix, composed) = Nemesis::parse_list("kill, quick-restart,one-way").unwrap();
        assert_eq!(mix, vec![Nemesis::Kill, Nemesis::QuickRestart, Nemesis::OneWay]);
        assert!(!composed);
        assert!(Nemesis::parse_list("kil").is_err());
        assert_eq!(Nemesis::parse_list("none").unwrap().0, vec![]);
    }
}
