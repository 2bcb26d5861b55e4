//! How far this node's wall clock is from its peers'. Every Raft reply
//! carries the responder's wall clock; the sender estimates the offset
//! from the midpoint of its own send and receive times (error: half the
//! round trip).
//!
//! Why: a leader stamps every write with its wall clock, and the shard's
//! apply clock is the largest stamp ever applied. One proposal from a
//! leader whose clock jumped an hour ahead would move the apply clock an
//! hour ahead for good (TTL keys judged expired, exactly-once records
//! forgotten early), and its freshness stamps would vouch for an hour
//! ahead. So a leader stamps nothing (no timed proposal, no freshness
//! stamp) unless a majority of its voters, itself included, have clocks
//! within `max_clock_offset_ms` of its own: **a proposal's time never leads
//! (or trails) the clocks of a quorum by more than the offset budget.**

use dashmap::DashMap;
use std::time::{Duration, Instant};

/// Samples older than this say nothing about the clock now.
const SAMPLE_TTL: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug)]
struct Sample {
    /// Peer clock minus ours, ms, when measured.
    offset_ms: i64,
    /// Half the round trip: the offset is known to within this.
    error_ms: u64,
    /// When it was measured, on our monotonic and on our wall clock: if our
    /// wall clock steps later, the gap between the two shows by how much.
    at: Instant,
    wall_at_ms: u64,
}

impl Sample {
    /// The peer's offset from our clock as it reads at `now_wall_ms`: a
    /// step of our own clock since the sample moves the offset with it.
    fn offset_now(&self, now_wall_ms: u64) -> i64 {
        let wall_moved = now_wall_ms as i64 - self.wall_at_ms as i64;
        let time_passed = self.at.elapsed().as_millis() as i64;
        self.offset_ms - (wall_moved - time_passed)
    }
}

#[derive(Default)]
pub struct PeerClocks {
    samples: DashMap<u64, Sample>,
}

impl PeerClocks {
    /// Records a reply from `peer` carrying `peer_wall_ms`, to a request
    /// sent at `sent_wall_ms` on our wall clock and `sent_at` on our
    /// monotonic one. The round trip is measured on the monotonic clock, so
    /// a step of our wall clock while the request was out does not widen
    /// it; `offset_now` accounts for steps after the send.
    pub fn observe(&self, peer: u64, sent_wall_ms: u64, sent_at: Instant, peer_wall_ms: u64) {
        if peer_wall_ms == 0 {
            return;
        }
        let round_trip = sent_at.elapsed();
        let half = round_trip / 2;
        let midpoint_wall_ms = sent_wall_ms + half.as_millis() as u64;
        self.samples.insert(
            peer,
            Sample {
                offset_ms: peer_wall_ms as i64 - midpoint_wall_ms as i64,
                error_ms: (round_trip.as_millis() as u64).div_ceil(2),
                at: sent_at + half,
                wall_at_ms: midpoint_wall_ms,
            },
        );
    }

    /// Whether a majority of `voters` (this node, `me`, counts when it is
    /// one) have clocks within `max_offset_ms` of ours as it reads now
    /// (`now_wall_ms`), by fresh samples. The error names the disagreement.
    pub fn check_quorum(&self, me: u64, voters: &[u64], max_offset_ms: u64, now_wall_ms: u64) -> Result<(), String> {
        if voters.is_empty() {
            return Ok(());
        }
        let mut agree = 0usize;
        let mut seen = Vec::new();
        for voter in voters {
            if *voter == me {
                agree += 1;
                continue;
            }
            match self.samples.get(voter).map(|s| *s) {
                // A sample whose round trip alone exceeds the budget
                // proves nothing either way.
                Some(s) if s.at.elapsed() <= SAMPLE_TTL && s.error_ms <= max_offset_ms => {
                    let offset = s.offset_now(now_wall_ms);
                    if offset.unsigned_abs().saturating_sub(s.error_ms) <= max_offset_ms {
                        agree += 1;
                    }
                    seen.push(format!("node {voter}: {offset:+} ms"));
                }
                _ => seen.push(format!("node {voter}: unknown")),
            }
        }
        if agree * 2 > voters.len() {
            return Ok(());
        }
        Err(format!(
            "this node's clock is not within {max_offset_ms} ms of a quorum of its peers ({}): refusing to stamp writes with it",
            seen.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply that took no time: the peer's clock read `peer_wall_ms` as
    /// ours read `our_wall_ms`.
    fn observe_now(clocks: &PeerClocks, peer: u64, our_wall_ms: u64, peer_wall_ms: u64) {
        clocks.observe(peer, our_wall_ms, Instant::now(), peer_wall_ms);
    }

    #[test]
    fn a_clock_an_hour_ahead_of_both_peers_has_no_quorum() {
        let clocks = PeerClocks::default();
        observe_now(&clocks, 2, 3_600_001, 1);
        observe_now(&clocks, 3, 3_600_002, 2);
        let err = clocks.check_quorum(1, &[1, 2, 3], 250, 3_600_002).unwrap_err();
        assert!(err.contains("node 2: -36000"), "{err}");
    }

    #[test]
    fn one_peer_agreeing_makes_a_quorum_of_three() {
        let clocks = PeerClocks::default();
        observe_now(&clocks, 2, 1_000, 1_100);
        observe_now(&clocks, 3, 1_000, 9_000_000);
        clocks.check_quorum(1, &[1, 2, 3], 250, 1_000).unwrap();
        // ...but not of five.
        assert!(clocks.check_quorum(1, &[1, 2, 3, 4, 5], 250, 1_000).is_err());
    }

    #[test]
    fn a_lone_voter_and_unknown_peers() {
        let clocks = PeerClocks::default();
        clocks.check_quorum(1, &[1], 250, 0).unwrap();
        assert!(
            clocks.check_quorum(1, &[1, 2, 3], 250, 0).is_err(),
            "no samples, no quorum"
        );
    }

    #[test]
    fn a_slow_round_trip_proves_nothing() {
        let clocks = PeerClocks::default();
        // Sent 600 ms ago (monotonic): the peer's answer could be from any
        // time in that window.
        let sent_at = Instant::now() - std::time::Duration::from_millis(600);
        clocks.observe(2, 1_000, sent_at, 1_300);
        assert!(clocks.check_quorum(1, &[1, 2], 250, 1_600).is_err());
    }

    #[test]
    fn our_own_clock_stepping_moves_every_offset_at_once() {
        let clocks = PeerClocks::default();
        observe_now(&clocks, 2, 1_000, 1_001);
        observe_now(&clocks, 3, 1_000, 1_001);
        clocks.check_quorum(1, &[1, 2, 3], 250, 1_000).unwrap();
        // Our clock jumps an hour ahead before the next sample arrives.
        let err = clocks.check_quorum(1, &[1, 2, 3], 250, 3_601_000).unwrap_err();
        assert!(err.contains("node 3: -35999"), "{err}");
    }
}
