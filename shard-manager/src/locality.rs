//! Akkio-style locality as a pure judge (docs/moves.md, "Locality"): at the
//! end of each window, which μshards of akkio keyspaces should move to a
//! shard whose primary is in the region their traffic comes from.
//!
//! **A μshard moves only when one region's writes and strong reads beat
//! those of its primary's region by the margin (more than 1) for several
//! windows in a row, and not again within the cooldown**: even traffic
//! never moves anything, and traffic that alternates between regions
//! breaks every streak before it is long enough. A pin overrides traffic:
//! the μshard goes to its pinned region and stays there.
//!
//! Heat and streaks live in memory: a restarted shard manager starts them
//! afresh (it forgets cooldowns too, so a restart may let a μshard move
//! one cooldown early).

use shoal_config::manager::Locality;
use shoal_types::KeyspaceId;
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// A μshard: its keyspace's id and its number.
pub type UshardKey = (KeyspaceId, u32);

pub use shoal_types::heat::RegionCounts;

/// What the nodes counted since the window began, per μshard.
#[derive(Debug, Default)]
pub struct HeatWindow {
    counts: HashMap<UshardKey, RegionCounts>,
}

impl HeatWindow {
    /// Adds one node's counts for one μshard.
    pub fn add(&mut self, key: UshardKey, region: &str, ops: u64) {
        let regions = self.counts.entry(key).or_default();
        match regions.iter_mut().find(|(r, _)| r == region) {
            Some((_, n)) => *n += ops,
            None => {
                // As long as its regions: see kv-server's heat counters.
                regions.reserve_exact(1);
                regions.push((region.to_string(), ops));
            }
        }
    }

    /// The window's counts; the next window starts empty.
    pub fn take(&mut self) -> HashMap<UshardKey, RegionCounts> {
        std::mem::take(&mut self.counts)
    }

    /// Roughly how many heap bytes the window holds (table slots, region
    /// lists, region names), from their capacities.
    pub fn approx_heap_bytes(&self) -> usize {
        shoal_types::heat::heap_bytes(&self.counts)
    }

    pub fn len(&self) -> usize {
        self.counts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }
}

/// Where a μshard is, as the judge needs it.
#[derive(Clone, Debug, Default)]
pub struct Whereabouts {
    pub keyspace: String,
    /// The region of its owner shard's primary ("" when it has none).
    pub region: String,
    pub pinned: Option<String>,
    /// A move of it is under way: nothing is decided meanwhile.
    pub moving: bool,
    /// Regions where some shard of the keyspace (not retiring) has its
    /// primary: where it could go.
    pub reachable: BTreeSet<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Move it to `to_region`.
    Move,
    /// Leave it (the reason says why it was considered).
    Hold,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Move => "move",
            Action::Hold => "hold",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub ushard: UshardKey,
    pub keyspace: String,
    pub action: Action,
    pub from_region: String,
    pub to_region: String,
    pub reason: String,
}

#[derive(Debug)]
pub struct LocalityJudge {
    config: Locality,
    window_started: Option<Instant>,
    /// The region leading each μshard's traffic by the margin, and for how
    /// many windows in a row.
    streaks: HashMap<UshardKey, (String, u32)>,
    cool_until: HashMap<UshardKey, Instant>,
    /// The last hold reason said per μshard, so the log carries changes,
    /// not the same hold every window.
    last_hold: HashMap<UshardKey, String>,
}

impl LocalityJudge {
    pub fn new(config: Locality) -> LocalityJudge {
        LocalityJudge {
            config,
            window_started: None,
            streaks: HashMap::new(),
            cool_until: HashMap::new(),
            last_hold: HashMap::new(),
        }
    }

    /// Whether a window ends at `now` (the next one starts).
    pub fn window_over(&mut self, now: Instant) -> bool {
        match self.window_started {
            Some(started) if now.duration_since(started) < Duration::from_millis(self.config.window_ms) => false,
            None => {
                self.window_started = Some(now);
                false
            }
            Some(_) => {
                self.window_started = Some(now);
                true
            }
        }
    }

    /// Judges one window: every μshard that had traffic or is pinned, with
    /// where it is. Returns the decisions worth logging; `Move`s are for
    /// the caller to start (then [`LocalityJudge::moved`]).
    pub fn judge(
        &mut self,
        now: Instant,
        heat: &HashMap<UshardKey, RegionCounts>,
        candidates: Vec<(UshardKey, Whereabouts)>,
    ) -> Vec<Decision> {
        let mut decisions = Vec::new();
        let judged: BTreeSet<UshardKey> = candidates.iter().map(|(k, _)| *k).collect();
        self.streaks.retain(|k, _| judged.contains(k));
        self.last_hold.retain(|k, _| judged.contains(k));
        self.cool_until.retain(|_, until| now < *until);
        for (key, place) in candidates {
            if place.moving {
                continue;
            }
            let decision = |action, to: &str, reason: String| Decision {
                ushard: key,
                keyspace: place.keyspace.clone(),
                action,
                from_region: place.region.clone(),
                to_region: to.to_string(),
                reason,
            };
            if let Some(pin) = &place.pinned {
                self.streaks.remove(&key);
                if place.region == *pin {
                    continue;
                }
                let d = if place.reachable.contains(pin) {
                    decision(Action::Move, pin, format!("pinned to {pin}"))
                } else {
                    decision(
                        Action::Hold,
                        pin,
                        format!("pinned to {pin}, but no shard of the keyspace has its primary there"),
                    )
                };
                decisions.extend(self.say(d));
                continue;
            }
            let counts = heat.get(&key).map(Vec::as_slice).unwrap_or_default();
            let total: u64 = counts.iter().filter(|(r, _)| !r.is_empty()).map(|(_, n)| n).sum();
            let Some((leader, lead)) = leading_region(counts) else {
                self.streaks.remove(&key);
                continue;
            };
            let here = counts.iter().find(|(r, _)| *r == place.region).map_or(0, |(_, n)| *n);
            if total < self.config.min_ops || leader == place.region {
                self.streaks.remove(&key);
                continue;
            }
            let ratio = if here == 0 {
                f64::INFINITY
            } else {
                lead as f64 / here as f64
            };
            if ratio < self.config.margin {
                if self.streaks.remove(&key).is_some() {
                    let why = format!(
                        "{leader} leads {lead} to {here} ops in {}, under the margin {}: streak broken",
                        place.region, self.config.margin
                    );
                    decisions.extend(self.say(decision(Action::Hold, leader, why)));
                }
                continue;
            }
            if !place.reachable.contains(leader) {
                let why =
                    format!("{leader} leads {lead} to {here} ops, but no shard of the keyspace has its primary there");
                decisions.extend(self.say(decision(Action::Hold, leader, why)));
                continue;
            }
            let streak = match self.streaks.get(&key) {
                Some((region, n)) if region == leader => n + 1,
                _ => 1,
            };
            self.streaks.insert(key, (leader.to_string(), streak));
            let seen = format!(
                "{leader} {lead} ops vs {} {here} in window {streak} of {}",
                place.region, self.config.windows
            );
            if streak < self.config.windows {
                continue;
            }
            if self.cool_until.contains_key(&key) {
                decisions.extend(self.say(decision(
                    Action::Hold,
                    leader,
                    format!("{seen}; cooling down after a move"),
                )));
                continue;
            }
            self.streaks.remove(&key);
            decisions.push(decision(Action::Move, leader, seen));
        }
        decisions
    }

    /// A move of `key` started: it is left alone for the cooldown.
    pub fn moved(&mut self, now: Instant, key: UshardKey) {
        self.cool_until
            .insert(key, now + Duration::from_millis(self.config.cooldown_ms));
        self.last_hold.remove(&key);
    }

    /// `decision`, unless it is the same hold as the last one said.
    fn say(&mut self, decision: Decision) -> Option<Decision> {
        let kind = format!("{}:{}", decision.to_region, hold_kind(&decision.reason));
        if decision.action == Action::Hold && self.last_hold.get(&decision.ushard) == Some(&kind) {
            return None;
        }
        if decision.action == Action::Hold {
            self.last_hold.insert(decision.ushard, kind);
        }
        Some(decision)
    }
}

/// A hold reason without its counts (they change every window).
fn hold_kind(reason: &str) -> &str {
    ["under the margin", "no shard", "cooling down", "pinned"]
        .into_iter()
        .find(|k| reason.contains(k))
        .unwrap_or(reason)
}

/// The region with the most operations, if exactly one has the most
/// (clients that name no region count for none).
fn leading_region(counts: &[(String, u64)]) -> Option<(&str, u64)> {
    let named = || counts.iter().filter(|(r, _)| !r.is_empty());
    let max = named().map(|(_, n)| *n).max()?;
    let mut at_max = named().filter(|(_, n)| *n == max);
    let (region, n) = at_max.next()?;
    at_max.next().is_none().then_some((region.as_str(), *n))
}

#[cfg(test)]
mod tests {
    use super::*;

    const U: UshardKey = (KeyspaceId(1), 5);

    fn config() -> Locality {
        Locality {
            window_ms: 1000,
            min_ops: 10,
            cooldown_ms: 10_000,
            ..Locality::default()
        }
    }

    fn at(region: &str) -> Whereabouts {
        Whereabouts {
            keyspace: "k".into(),
            region: region.into(),
            reachable: ["east", "west"].map(String::from).into(),
            ..Default::default()
        }
    }

    fn heat(east: u64, west: u64) -> HashMap<UshardKey, RegionCounts> {
        HashMap::from([(U, vec![("east".to_string(), east), ("west".to_string(), west)])])
    }

    /// Feeds one window per entry of `traffic` while the μshard sits in
    /// `region` (following its moves); returns each window's moves.
    fn run(judge: &mut LocalityJudge, start: Instant, traffic: &[(u64, u64)], region: &mut String) -> Vec<usize> {
        let mut moves = Vec::new();
        for (i, (east, west)) in traffic.iter().enumerate() {
            let now = start + Duration::from_millis(1000 * i as u64);
            for d in judge.judge(now, &heat(*east, *west), vec![(U, at(region))]) {
                if d.action == Action::Move {
                    moves.push(i);
                    *region = d.to_region.clone();
                    judge.moved(now, U);
                }
            }
        }
        moves
    }

    #[test]
    fn traffic_from_another_region_moves_it_after_the_windows_then_it_stays() {
        let mut judge = LocalityJudge::new(config());
        let mut region = "east".to_string();
        // West leads 90 to 10 from window 0: the third window moves it.
        let moves = run(&mut judge, Instant::now(), &[(10, 90); 8], &mut region);
        assert_eq!(moves, vec![2]);
        assert_eq!(region, "west");
    }

    #[test]
    fn even_alternating_and_thin_traffic_never_move_anything() {
        let start = Instant::now();
        let mut region = "east".to_string();
        let mut judge = LocalityJudge::new(config());
        assert!(run(&mut judge, start, &[(50, 50); 20], &mut region).is_empty(), "50/50");
        // Just under the margin (1.5x), for ever.
        assert!(
            run(&mut judge, start, &[(40, 59); 20], &mut region).is_empty(),
            "under margin"
        );
        // Alternating: west leads one window, east the next.
        let alternating: Vec<(u64, u64)> = (0..20).map(|i| if i % 2 == 0 { (10, 90) } else { (90, 10) }).collect();
        assert!(
            run(&mut judge, start, &alternating, &mut region).is_empty(),
            "alternating"
        );
        // Two windows of west, one of east, and so on: no streak of 3.
        let bursts: Vec<(u64, u64)> = (0..21).map(|i| if i % 3 == 2 { (90, 10) } else { (10, 90) }).collect();
        assert!(run(&mut judge, start, &bursts, &mut region).is_empty(), "bursts");
        assert!(
            run(&mut judge, start, &[(0, 9); 20], &mut region).is_empty(),
            "under min_ops"
        );
        // Clients that name no region say nothing about where to go.
        let unnamed = HashMap::from([(U, vec![(String::new(), 1000), ("west".to_string(), 5)])]);
        for i in 0..5 {
            let now = start + Duration::from_millis(1000 * i);
            assert!(judge.judge(now, &unnamed, vec![(U, at(&region))]).is_empty());
        }
        assert_eq!(region, "east");
    }

    #[test]
    fn the_cooldown_holds_it_and_says_so_once() {
        let mut judge = LocalityJudge::new(config());
        let start = Instant::now();
        let mut region = "east".to_string();
        assert_eq!(run(&mut judge, start, &[(10, 90); 3], &mut region), vec![2]);
        // Traffic flips back at once: the cooldown (10 windows) holds it.
        let later = start + Duration::from_millis(3000);
        let mut holds = 0;
        for i in 0..6 {
            let now = later + Duration::from_millis(1000 * i);
            for d in judge.judge(now, &heat(90, 10), vec![(U, at(&region))]) {
                assert_eq!(d.action, Action::Hold, "{d:?}");
                assert!(d.reason.contains("cooling down"), "{}", d.reason);
                holds += 1;
            }
        }
        assert_eq!(holds, 1, "the same hold is said once");
        // East kept leading through the cooldown: once it is over, the
        // first window moves it back.
        let after = start + Duration::from_millis(20_000);
        assert_eq!(run(&mut judge, after, &[(90, 10); 3], &mut region), vec![0]);
        assert_eq!(region, "east");
    }

    #[test]
    fn a_pin_overrides_traffic_and_an_unreachable_region_is_a_hold() {
        let mut judge = LocalityJudge::new(config());
        let now = Instant::now();
        let mut pinned = at("east");
        pinned.pinned = Some("west".into());
        let d = judge.judge(now, &heat(1000, 0), vec![(U, pinned.clone())]);
        assert_eq!((d[0].action, d[0].to_region.as_str()), (Action::Move, "west"));
        // In its pinned region it stays, whatever the traffic.
        pinned.region = "west".into();
        for _ in 0..5 {
            assert!(judge.judge(now, &heat(1000, 0), vec![(U, pinned.clone())]).is_empty());
        }
        // Traffic from a region with no primary of the keyspace: a hold.
        let mut lonely = at("east");
        lonely.reachable = ["east"].map(String::from).into();
        let d = judge.judge(now, &heat(0, 100), vec![(U, lonely.clone())]);
        assert_eq!(d[0].action, Action::Hold);
        assert!(d[0].reason.contains("no shard"), "{}", d[0].reason);
        // A move under way: nothing.
        let mut moving = at("east");
        moving.moving = true;
        assert!(judge.judge(now, &heat(0, 100), vec![(U, moving)]).is_empty());
    }

    /// The figure docs/moves.md quotes: a window holding 10,000 μshards
    /// with traffic from two regions (the judge's streaks hold at most one
    /// entry per μshard that leads elsewhere, far fewer in practice).
    #[test]
    fn a_window_of_ten_thousand_ushards_in_two_regions_takes_under_a_megabyte_and_a_half() {
        let mut window = HeatWindow::default();
        for u in 0..10_000 {
            window.add((KeyspaceId(1), u), "us-east-1", 40);
            window.add((KeyspaceId(1), u), "eu-west-1", 2);
        }
        let bytes = window.approx_heap_bytes();
        eprintln!(
            "shard-manager heat window, 10,000 μshards x 2 regions: {bytes} bytes ({} per μshard)",
            bytes / 10_000
        );
        assert!(bytes < 3 << 19, "{bytes} bytes");
    }

    #[test]
    fn heat_windows_add_up_per_region_and_start_afresh() {
        let mut window = HeatWindow::default();
        window.add(U, "east", 3);
        window.add(U, "east", 4);
        window.add(U, "west", 1);
        assert_eq!(
            window.take().remove(&U).unwrap(),
            vec![("east".to_string(), 7), ("west".to_string(), 1)]
        );
        assert!(window.is_empty());
    }
}
