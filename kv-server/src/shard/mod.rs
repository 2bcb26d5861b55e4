//! The replicas a node hosts and the operations on them.

pub mod digest;
pub mod freshness;
pub mod host;
pub mod membership;
pub mod replica;
pub mod scan;
pub mod view;
