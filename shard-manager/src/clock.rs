//! The shard manager's clock. Every judgment that depends on elapsed time —
//! heartbeat ages (alive, suspect, dead) and the grace periods after a
//! start — reads time here, so a fault test can make it jump: in builds
//! with the `failpoints` feature, `SetClockOffset` shifts it by a signed
//! number of milliseconds (docs/failpoints.md).

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub struct Clock {
    offset_ms: AtomicI64,
}

impl Clock {
    pub fn now(&self) -> Instant {
        let offset = self.offset_ms.load(Ordering::Relaxed);
        let base = Instant::now();
        let shift = Duration::from_millis(offset.unsigned_abs());
        if offset >= 0 {
            base + shift
        } else {
            // Before the process's own start the platform may have no
            // Instant to give: stop at now rather than panic.
            base.checked_sub(shift).unwrap_or(base)
        }
    }

    /// Time since `earlier` on this clock; zero when the clock jumped back
    /// past it.
    pub fn since(&self, earlier: Instant) -> Duration {
        self.now().saturating_duration_since(earlier)
    }

    pub fn set_offset_ms(&self, offset_ms: i64) {
        self.offset_ms.store(offset_ms, Ordering::Relaxed);
    }

    pub fn offset_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jumps_forward_and_back_without_going_negative() {
        let clock = Clock::default();
        let start = clock.now();
        clock.set_offset_ms(5_000);
        assert!(clock.since(start) >= Duration::from_secs(5));
        clock.set_offset_ms(-5_000);
        assert_eq!(clock.since(start + Duration::from_secs(1)), Duration::ZERO);
        clock.set_offset_ms(0);
        assert!(clock.since(start) < Duration::from_secs(5));
    }
}
