//! The node's wall clock. It stamps proposals (which advance a shard's
//! apply clock, the one clock that judges TTL expiry) and TTL expiry times,
//! and dates the freshness a leader vouches for
//! (bounded-staleness reads). Leases do not read it: openraft measures them
//! on the monotonic clock, which a wall-clock jump cannot move.
//!
//! In builds with the `failpoints` feature, `Admin/SetClockOffset` shifts
//! it by a signed number of milliseconds (clock-skew fault tests). One node
//! is one process, so the offset is process-wide.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

static OFFSET_MS: AtomicI64 = AtomicI64::new(0);

/// Milliseconds since the Unix epoch on this node's (possibly skewed) clock.
pub fn wall_ms() -> u64 {
    let real = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    real.saturating_add_signed(OFFSET_MS.load(Ordering::Relaxed))
}

pub fn set_offset_ms(offset_ms: i64) {
    OFFSET_MS.store(offset_ms, Ordering::Relaxed);
}
