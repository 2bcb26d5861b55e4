//! When a fast-ack write may be acknowledged: once the leader's log holds
//! its entry. `client_write_ff` returns as soon as the request is queued
//! for the Raft core, which may still refuse it (a leadership transfer in
//! progress, a lapsed lease); acknowledging then would lose the write with
//! no crash at all. So a fast-ack proposal carries a ticket
//! ([`crate::apply::command::Command::Mutate`]'s `accept_ticket`, never
//! encoded) and the log store reports the ticket when it appends the entry.

use dashmap::DashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::oneshot;

/// The fast-ack proposals of one shard still waiting for their append.
#[derive(Default)]
pub struct Acceptances {
    next_ticket: AtomicU64,
    waiting: DashMap<u64, oneshot::Sender<u64>>,
}

impl Acceptances {
    /// A new ticket (never 0) and where its log index will arrive.
    pub fn register(&self) -> (u64, oneshot::Receiver<u64>) {
        let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = oneshot::channel();
        self.waiting.insert(ticket, tx);
        (ticket, rx)
    }

    /// Drops a ticket whose proposal ended another way.
    pub fn forget(&self, ticket: u64) {
        self.waiting.remove(&ticket);
    }

    /// The entry with `ticket` is in the log at `index`.
    pub fn accepted(&self, ticket: u64, index: u64) {
        if let Some((_, tx)) = self.waiting.remove(&ticket) {
            let _ = tx.send(index);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_is_answered_once_with_its_index() {
        let acceptances = Acceptances::default();
        let (first, mut first_rx) = acceptances.register();
        let (second, mut second_rx) = acceptances.register();
        assert_ne!(first, 0);
        assert_ne!(first, second);
        acceptances.accepted(second, 7);
        acceptances.accepted(second, 8);
        assert_eq!(second_rx.try_recv().unwrap(), 7);
        assert!(first_rx.try_recv().is_err(), "nothing for a ticket not yet appended");
        acceptances.forget(first);
        acceptances.accepted(first, 9);
        assert!(first_rx.try_recv().is_err());
    }
}
