//! Exactly-once retries: every write of a client carries (client id, seq),
//! and a shard applies each pair at most once, answering retries with the
//! first answer. The client also says which seqs are all answered, so
//! shards can forget them.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub struct RequestIds {
    client_id: u64,
    next_seq: AtomicU64,
    in_flight: Mutex<BTreeSet<u64>>,
}

/// One write's id; finishing it (drop) lets shards forget it.
pub struct RequestTicket {
    ids: Arc<RequestIds>,
    pub client_id: u64,
    pub seq: u64,
    pub first_incomplete: u64,
}

impl RequestIds {
    /// A fresh random client id: two clients never share one.
    pub fn new() -> Arc<RequestIds> {
        let mut client_id = 0;
        while client_id == 0 {
            client_id = rand::random::<u64>();
        }
        Arc::new(RequestIds {
            client_id,
            next_seq: AtomicU64::new(1),
            in_flight: Mutex::new(BTreeSet::new()),
        })
    }

    pub fn begin(self: &Arc<Self>) -> RequestTicket {
        // The seq is taken under the lock: taken outside it, a later seq
        // could be registered first and report an earlier, still
        // unanswered one as answered.
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        in_flight.insert(seq);
        let first_incomplete = in_flight.first().copied().unwrap_or(seq);
        RequestTicket {
            ids: self.clone(),
            client_id: self.client_id,
            seq,
            first_incomplete,
        }
    }
}

impl Drop for RequestTicket {
    fn drop(&mut self) {
        self.ids
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_incomplete_stays_below_every_unanswered_request() {
        let ids = RequestIds::new();
        let a = ids.begin();
        let b = ids.begin();
        assert_eq!((a.seq, a.first_incomplete), (1, 1));
        assert_eq!((b.seq, b.first_incomplete), (2, 1));
        drop(a);
        let c = ids.begin();
        assert_eq!((c.seq, c.first_incomplete), (3, 2));
        drop(b);
        drop(c);
        let d = ids.begin();
        assert_eq!(d.first_incomplete, 4);
    }
}
