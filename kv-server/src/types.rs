//! Newtypes for the identifiers that flow through the server, so a shard id
//! can never be passed where a node id is expected.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! id_newtype {
    ($(#[$doc:meta])* $name:ident($inner:ty)) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub $inner);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_newtype!(
    /// A shard: one Raft group.
    ShardId(u64)
);
id_newtype!(
    /// A kv-server process. Raft node ids are these.
    NodeId(u64)
);
id_newtype!(
    /// Leadership number of a shard, handed out by the shard manager. 0 until it exists.
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
    /// Version of a write: the Raft log index that applied it. Monotonic per shard.
    Version(u64)
);
