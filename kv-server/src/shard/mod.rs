//! The replicas a node hosts and the operations on them.

pub mod digest;
pub mod export;
pub mod freshness;
pub mod heat;
pub mod host;
pub mod membership;
pub mod mover;
pub mod replica;
pub mod scan;
pub mod txn_window;
pub mod view;
