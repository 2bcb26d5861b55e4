//! Where a shard's transaction window begins: the version this replica had
//! applied `window_ms` ago, from samples of (time, applied version) taken
//! as time goes by. The leader proposes it as the new floor (see
//! [`crate::apply::txn`]). Every replica samples, so a new leader has a
//! history; a follower's applied version lags the leader's, which only
//! makes its floor lower (a longer window), never one that cuts short a
//! snapshot younger than the window.

use std::collections::VecDeque;

/// Samples of (wall-clock ms, applied version), oldest first.
#[derive(Debug, Default)]
pub struct FloorSamples {
    samples: VecDeque<(u64, u64)>,
}

impl FloorSamples {
    /// Records that `applied` was applied by `now_ms`, and forgets samples
    /// no floor at `window_ms` will need again (all but the newest one at
    /// least `window_ms` old).
    pub fn observe(&mut self, now_ms: u64, applied: u64, window_ms: u64) {
        if self.samples.back().is_none_or(|(at, _)| now_ms > *at) {
            self.samples.push_back((now_ms, applied));
        }
        let old_enough = |at: u64| at.saturating_add(window_ms) <= now_ms;
        while self.samples.len() > 1 && old_enough(self.samples[1].0) {
            self.samples.pop_front();
        }
    }

    /// The version applied `window_ms` before `now_ms`: the newest sample
    /// at least that old (None while there is none).
    pub fn floor_at(&self, now_ms: u64, window_ms: u64) -> Option<u64> {
        self.samples
            .iter()
            .rev()
            .find(|(at, _)| at.saturating_add(window_ms) <= now_ms)
            .map(|(_, applied)| *applied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_is_what_was_applied_a_window_ago_and_memory_stays_bounded() {
        let mut samples = FloorSamples::default();
        assert_eq!(samples.floor_at(0, 1_000), None);
        for second in 0..100u64 {
            samples.observe(second * 1_000, second * 10, 5_000);
        }
        assert_eq!(samples.floor_at(99_000, 5_000), Some(940));
        assert_eq!(samples.floor_at(99_500, 5_000), Some(940));
        assert!(samples.samples.len() <= 7, "{}", samples.samples.len());
        // A new leader with no history proposes nothing yet.
        let mut fresh = FloorSamples::default();
        fresh.observe(50_000, 400, 5_000);
        assert_eq!(fresh.floor_at(52_000, 5_000), None);
        assert_eq!(fresh.floor_at(55_000, 5_000), Some(400));
    }

    #[test]
    fn a_clock_that_goes_back_adds_no_sample() {
        let mut samples = FloorSamples::default();
        samples.observe(10_000, 5, 1_000);
        samples.observe(9_000, 7, 1_000);
        assert_eq!(samples.floor_at(11_000, 1_000), Some(5));
    }
}
