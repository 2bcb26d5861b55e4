//! When a shard of a compact keyspace splits by itself: over the size
//! threshold at the end of a window, or over the load threshold for
//! several windows in a row; never again within the cooldown after a
//! split (either half). Pure: the move driver feeds it each window's
//! usage and asks the manager to split what it names (docs/moves.md).
//! Its memory (hot streaks, cooldowns) is not durable: a restarted shard
//! manager starts every streak and cooldown afresh.

use crate::model::ShardId;
use shoal_config::manager::SplitTriggers;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// One shard's load in a window, from its replicas' reports.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ShardUsage {
    /// The largest any replica reported.
    pub bytes: u64,
    /// Summed over the replicas (followers serve reads too).
    pub ops_per_sec: f64,
}

#[derive(Debug)]
pub struct SplitTrigger {
    config: SplitTriggers,
    window_started: Option<Instant>,
    /// Windows in a row each shard was over the load threshold.
    hot: HashMap<ShardId, u32>,
    /// Until when a shard may not split.
    cool_until: HashMap<ShardId, Instant>,
}

impl SplitTrigger {
    pub fn new(config: SplitTriggers) -> SplitTrigger {
        SplitTrigger {
            config,
            window_started: None,
            hot: HashMap::new(),
            cool_until: HashMap::new(),
        }
    }

    /// Called every tick with the usage of the shards that may split (of
    /// compact keyspaces, not retiring). At the end of each window,
    /// returns the shards to split with why, and counts them as split
    /// (their cooldown starts; the caller reports the new shard with
    /// [`SplitTrigger::split_into`]).
    pub fn observe(&mut self, now: Instant, usage: &HashMap<ShardId, ShardUsage>) -> Vec<(ShardId, String)> {
        if !self.window_over(now) {
            return Vec::new();
        }
        self.judge(now, usage)
    }

    /// Whether a window ends at `now` (then the next one starts). The
    /// caller gathers usage only then: every tick would copy every report.
    pub fn window_over(&mut self, now: Instant) -> bool {
        match self.window_started {
            None => {
                self.window_started = Some(now);
                false
            }
            Some(started) if now.duration_since(started) < Duration::from_millis(self.config.window_ms) => false,
            Some(_) => {
                self.window_started = Some(now);
                true
            }
        }
    }

    /// The end of a window: which shards split, by this window's usage.
    pub fn judge(&mut self, now: Instant, usage: &HashMap<ShardId, ShardUsage>) -> Vec<(ShardId, String)> {
        self.hot.retain(|shard, _| usage.contains_key(shard));
        let mut split = Vec::new();
        for (shard, u) in usage {
            let hot = self.config.max_shard_ops_per_sec > 0.0 && u.ops_per_sec > self.config.max_shard_ops_per_sec;
            let streak = self.hot.entry(*shard).or_insert(0);
            *streak = if hot { *streak + 1 } else { 0 };
            if self.cool_until.get(shard).is_some_and(|until| now < *until) {
                continue;
            }
            let reason = if self.config.max_shard_bytes > 0 && u.bytes > self.config.max_shard_bytes {
                format!("{} bytes over {}", u.bytes, self.config.max_shard_bytes)
            } else if *streak >= self.config.load_windows {
                format!(
                    "{:.0} ops/s over {:.0} for {} windows",
                    u.ops_per_sec, self.config.max_shard_ops_per_sec, streak
                )
            } else {
                continue;
            };
            split.push((*shard, reason));
        }
        split.sort_by_key(|(shard, _)| *shard);
        for (shard, _) in &split {
            self.hot.remove(shard);
            self.cool_until
                .insert(*shard, now + Duration::from_millis(self.config.cooldown_ms));
        }
        split
    }

    /// The new half of a split cools down too.
    pub fn split_into(&mut self, now: Instant, new_shard: ShardId) {
        self.cool_until
            .insert(new_shard, now + Duration::from_millis(self.config.cooldown_ms));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> SplitTriggers {
        SplitTriggers {
            max_shard_bytes: 1000,
            max_shard_ops_per_sec: 100.0,
            load_windows: 3,
            window_ms: 10,
            cooldown_ms: 100,
        }
    }

    fn usage(bytes: u64, ops_per_sec: f64) -> HashMap<ShardId, ShardUsage> {
        HashMap::from([(ShardId(1), ShardUsage { bytes, ops_per_sec })])
    }

    /// Feeds one usage per window, from t=0 every 10 ms; returns the
    /// windows (1-based) at whose end shard 1 split.
    fn windows(trigger: &mut SplitTrigger, start: Instant, usages: &[HashMap<ShardId, ShardUsage>]) -> Vec<usize> {
        trigger.observe(start, &usages[0]);
        let mut splits = Vec::new();
        for (i, u) in usages.iter().enumerate() {
            let at = start + Duration::from_millis(10 * (i as u64 + 1));
            if !trigger.observe(at, u).is_empty() {
                splits.push(i + 1);
            }
        }
        splits
    }

    #[test]
    fn a_shard_over_the_size_splits_at_the_end_of_the_window_then_cools_down() {
        let mut trigger = SplitTrigger::new(config());
        let start = Instant::now();
        let over = usage(5000, 0.0);
        // Windows end at 10, 20, ... ms; the cooldown of 100 ms ends after
        // window 11.
        let got = windows(&mut trigger, start, &vec![over; 12]);
        assert_eq!(got, vec![1, 11]);
    }

    #[test]
    fn load_must_stay_over_the_threshold_for_consecutive_windows() {
        let mut trigger = SplitTrigger::new(config());
        let (hot, cool) = (usage(0, 500.0), usage(0, 50.0));
        let got = windows(
            &mut trigger,
            Instant::now(),
            &[hot.clone(), hot.clone(), cool, hot.clone(), hot.clone(), hot],
        );
        assert_eq!(got, vec![6], "a cool window restarts the streak");
    }

    #[test]
    fn zero_thresholds_never_split_and_nothing_happens_mid_window() {
        let mut trigger = SplitTrigger::new(SplitTriggers {
            max_shard_bytes: 0,
            max_shard_ops_per_sec: 0.0,
            ..config()
        });
        let huge = usage(u64::MAX, f64::MAX);
        assert!(windows(&mut trigger, Instant::now(), &vec![huge.clone(); 10]).is_empty());
        let mut trigger = SplitTrigger::new(config());
        let start = Instant::now();
        trigger.observe(start, &huge);
        assert!(trigger.observe(start + Duration::from_millis(5), &huge).is_empty());
        assert_eq!(trigger.observe(start + Duration::from_millis(10), &huge).len(), 1);
    }

    #[test]
    fn the_new_half_cools_down_too() {
        let mut trigger = SplitTrigger::new(config());
        let start = Instant::now();
        trigger.split_into(start, ShardId(1));
        let got = windows(&mut trigger, start, &vec![usage(5000, 0.0); 12]);
        assert_eq!(got, vec![10], "not before the cooldown of 100 ms ends");
    }
}
