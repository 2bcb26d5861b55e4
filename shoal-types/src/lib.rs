//! Newtypes for the identifiers that flow between the server, the shard
//! manager and the client, so a shard id can never be passed where a node
//! id is expected, nor an epoch where a version is.
//!
//! They are plain numbers on the wire: the protobuf messages carry `u64` /
//! `u32`, and each crate converts at its one wire boundary (kv-server
//! `rpc/`, shard-manager `wire.rs`, kv-client `wire.rs` and `routing.rs`).
//! With the `serde` feature they serialize as the bare number
//! (`#[serde(transparent)]`), so stored formats are those of the numbers.

use std::fmt;

pub mod heat;
mod ushard_map;
pub use ushard_map::{Mapping, UshardMap, UshardRun};

macro_rules! id_newtype {
    ($(#[$doc:meta])* $name:ident($inner:ty)) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
        #[cfg_attr(feature = "serde", serde(transparent))]
        pub struct $name(pub $inner);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl $name {
            /// The one after this one: ids, epochs and versions are handed
            /// out in increasing order.
            pub fn next(self) -> $name {
                $name(self.0 + 1)
            }
        }

        impl From<$inner> for $name {
            fn from(raw: $inner) -> $name {
                $name(raw)
            }
        }

        impl From<$name> for $inner {
            fn from(id: $name) -> $inner {
                id.0
            }
        }
    };
}

id_newtype!(
    /// A shard: one Raft group.
    ShardId(u64)
);
id_newtype!(
    /// A kv-server process. Raft node ids are these; ids start at 1.
    NodeId(u64)
);
id_newtype!(
    /// Leadership number of a shard, handed out by the shard manager; it
    /// only ever grows. 0 until the shard manager has named a primary (and
    /// always 0 under a static layout).
    Epoch(u64)
);
id_newtype!(
    /// A micro-shard, the unit of placement, numbered within its keyspace.
    UshardId(u32)
);
id_newtype!(
    /// A keyspace's compact numeric id, used in the key layout instead of its name.
    KeyspaceId(u32)
);
id_newtype!(
    /// Version of a write: the Raft log index that applied it plus its
    /// shard's version base. Monotonic per shard, and per μshard for the
    /// life of its keyspace, across moves.
    Version(u64)
);

impl KeyspaceId {
    /// Keyspace ids from this one up are the server's own (its replicated
    /// per-shard state lives under the first); no user keyspace takes one.
    pub const FIRST_RESERVED: KeyspaceId = KeyspaceId(u32::MAX - 1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_show_and_convert_as_their_numbers() {
        assert_eq!(ShardId(7).to_string(), "7");
        assert_eq!(u64::from(NodeId(3)), 3);
        assert_eq!(UshardId::from(9u32), UshardId(9));
        assert_eq!(Epoch(4).next(), Epoch(5));
        assert!(Version(2) < Version(10));
    }
}
