//! Which messages between two nodes get through, per direction: the
//! partitions and delays of the in-process test harness, where every node
//! of a cluster shares one filter (failpoints cannot do this there: they
//! are global to a process).
//!
//! A node started by [`crate::server::run`] gets an empty filter, which
//! lets everything through; the check is then one atomic load per message.
//!
//! The sender checks both directions of each call: `from → to` before the
//! request leaves (a cut link fails the call as unreachable, as a refused
//! connection would), `to → from` when the reply comes back (a cut link
//! drops the reply: the peer acted on the request, the sender never
//! learns). So a one-way cut `A → B` loses everything A sends to B: A's
//! requests to B and A's replies to B's requests, which is what a lost
//! route does; B's requests still reach A.
//!
//! The shard manager is peer [`SHARD_MANAGER`] here, but only heartbeats
//! pass the filter: a node cut from it stops heartbeating (as with the
//! `sm-heartbeat` failpoint), and so also stops fetching new maps, which it
//! does only after a heartbeat. Registration and the map fetch at start are
//! not filtered.

use shoal_types::NodeId;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The shard manager as a peer of the filter. Node ids start at 1.
pub const SHARD_MANAGER: NodeId = NodeId(0);

/// What happens to messages on one directed link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// Every message is lost.
    Cut,
    /// Every message arrives this much later.
    Delay(Duration),
}

/// Rules per directed link `(from, to)`; links without a rule pass.
#[derive(Debug, Default)]
pub struct TransportFilter {
    rules: RwLock<HashMap<(NodeId, NodeId), Link>>,
    /// Whether any rule is set: the fast path of a filter nobody uses.
    active: AtomicBool,
}

impl TransportFilter {
    /// A filter that lets everything through until rules are set.
    pub fn new() -> Arc<TransportFilter> {
        Arc::new(TransportFilter::default())
    }

    /// Sets the rule of the link `from → to` (one direction only).
    pub fn set(&self, from: NodeId, to: NodeId, link: Link) {
        let mut rules = self.rules.write().unwrap_or_else(|e| e.into_inner());
        rules.insert((from, to), link);
        self.active.store(true, Ordering::Release);
    }

    /// Cuts `from → to` only: a one-way partition.
    pub fn cut_one_way(&self, from: NodeId, to: NodeId) {
        self.set(from, to, Link::Cut);
    }

    /// Cuts both directions between `a` and `b`.
    pub fn cut(&self, a: NodeId, b: NodeId) {
        self.set(a, b, Link::Cut);
        self.set(b, a, Link::Cut);
    }

    /// Cuts `node` from each of `peers`, both ways.
    pub fn isolate(&self, node: NodeId, peers: impl IntoIterator<Item = NodeId>) {
        for peer in peers {
            if peer != node {
                self.cut(node, peer);
            }
        }
    }

    /// Delays every message `from → to` by `by`.
    pub fn delay(&self, from: NodeId, to: NodeId, by: Duration) {
        self.set(from, to, Link::Delay(by));
    }

    /// Removes the rules of both directions between `a` and `b`.
    pub fn heal_link(&self, a: NodeId, b: NodeId) {
        let mut rules = self.rules.write().unwrap_or_else(|e| e.into_inner());
        rules.remove(&(a, b));
        rules.remove(&(b, a));
        self.active.store(!rules.is_empty(), Ordering::Release);
    }

    /// Removes every rule.
    pub fn heal(&self) {
        let mut rules = self.rules.write().unwrap_or_else(|e| e.into_inner());
        rules.clear();
        self.active.store(false, Ordering::Release);
    }

    /// The rule of `from → to`, if any.
    pub fn link(&self, from: NodeId, to: NodeId) -> Option<Link> {
        if !self.active.load(Ordering::Acquire) {
            return None;
        }
        let rules = self.rules.read().unwrap_or_else(|e| e.into_inner());
        rules.get(&(from, to)).copied()
    }

    /// Waits as `from → to` says: `Ok` once a message may go on, `Err` when
    /// the link is cut.
    pub async fn pass(&self, from: NodeId, to: NodeId) -> Result<(), LinkCut> {
        match self.link(from, to) {
            None => Ok(()),
            Some(Link::Cut) => Err(LinkCut { from, to }),
            Some(Link::Delay(by)) => {
                tokio::time::sleep(by).await;
                Ok(())
            }
        }
    }
}

/// A message lost on a cut link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("transport filter: link {from} -> {to} is cut")]
pub struct LinkCut {
    pub from: NodeId,
    pub to: NodeId,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_one_way_cut_stops_one_direction_only() {
        let filter = TransportFilter::new();
        let (a, b, c) = (NodeId(1), NodeId(2), NodeId(3));
        assert!(filter.pass(a, b).await.is_ok());
        filter.cut_one_way(a, b);
        assert_eq!(filter.pass(a, b).await, Err(LinkCut { from: a, to: b }));
        assert!(filter.pass(b, a).await.is_ok());
        assert!(filter.pass(a, c).await.is_ok());
        filter.heal_link(b, a);
        assert!(filter.pass(a, b).await.is_ok());
        assert_eq!(filter.link(a, b), None);
    }

    #[tokio::test]
    async fn isolate_cuts_every_peer_both_ways_until_healed() {
        let filter = TransportFilter::new();
        let nodes = [NodeId(1), NodeId(2), NodeId(3), SHARD_MANAGER];
        filter.isolate(NodeId(1), nodes);
        for peer in [NodeId(2), NodeId(3), SHARD_MANAGER] {
            assert_eq!(filter.link(NodeId(1), peer), Some(Link::Cut));
            assert_eq!(filter.link(peer, NodeId(1)), Some(Link::Cut));
        }
        assert_eq!(filter.link(NodeId(1), NodeId(1)), None);
        assert_eq!(filter.link(NodeId(2), NodeId(3)), None);
        filter.heal();
        assert!(filter.pass(NodeId(1), NodeId(2)).await.is_ok());
    }

    #[tokio::test]
    async fn a_delayed_link_holds_each_message() {
        let filter = TransportFilter::new();
        filter.delay(NodeId(1), NodeId(2), Duration::from_millis(250));
        assert_eq!(filter.link(NodeId(2), NodeId(1)), None);
        let started = std::time::Instant::now();
        filter.pass(NodeId(1), NodeId(2)).await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(250));
    }
}
