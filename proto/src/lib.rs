//! Wire types of Shoal, generated from `proto/`.
//!
//! Layout:
//! - [`kv`]: the client key-value API (`shoal.kv.v1`).
//! - [`admin`]: node admin: layout and replica status (`shoal.admin.v1`).
//! - [`raft`]: the internal Raft transport (`shoal.raft.v1`), never exposed to clients.
//! - [`sm`]: the shard-manager API (`shoal.sm.v1`).
//! - [`mover`]: μshard moves between nodes (`shoal.mover.v1`), never exposed to clients.
//!
//! Domain types live in the crates that own them; conversions are theirs too.

/// The generated code, nested by package so that one package can use
/// another's messages (prost refers to them by relative path).
pub mod shoal {
    pub mod kv {
        pub mod v1 {
            tonic::include_proto!("shoal.kv.v1");
        }
    }
    pub mod admin {
        pub mod v1 {
            tonic::include_proto!("shoal.admin.v1");
        }
    }
    pub mod raft {
        pub mod v1 {
            tonic::include_proto!("shoal.raft.v1");
        }
    }
    pub mod sm {
        pub mod v1 {
            tonic::include_proto!("shoal.sm.v1");
        }
    }
    pub mod mover {
        pub mod v1 {
            tonic::include_proto!("shoal.mover.v1");
        }
    }
}

pub use shoal::admin::v1 as admin;
pub use shoal::kv::v1 as kv;
pub use shoal::mover::v1 as mover;
pub use shoal::raft::v1 as raft;
pub use shoal::sm::v1 as sm;

/// gRPC metadata key carrying the stable [`kv::ErrorCode`] name of a failed request.
pub const ERROR_CODE_METADATA: &str = "shoal-error";
/// gRPC metadata key carrying the node id of the current leader, when known.
pub const LEADER_HINT_METADATA: &str = "shoal-leader";
/// gRPC metadata key of a `WRONG_SHARD` answer: the shard that owns the
/// μshard by the answering node's map.
pub const OWNER_HINT_METADATA: &str = "shoal-owner";
/// gRPC metadata key of a `WRONG_SHARD` answer: the version of the map the
/// answering node judged by (a client holding an older one refreshes).
pub const MAP_VERSION_METADATA: &str = "shoal-map-version";

/// Reading the metadata Shoal puts on a failed call.
pub mod status_meta {
    /// The stable error code name (`shoal-error`) a failed call carries.
    pub fn error_code(status: &tonic::Status) -> Option<&str> {
        status.metadata().get(super::ERROR_CODE_METADATA)?.to_str().ok()
    }

    /// The node id a `NOT_LEADER` answer names as the leader (`shoal-leader`).
    pub fn leader_hint(status: &tonic::Status) -> Option<u64> {
        status
            .metadata()
            .get(super::LEADER_HINT_METADATA)?
            .to_str()
            .ok()?
            .parse()
            .ok()
    }
}

/// `Mover/TakeStep`'s refusal of an `ABANDON` at a destination that has
/// already activated: the move can only roll forward. Shared so that the
/// node's answer and the shard manager's reading of it cannot drift apart.
pub const REFUSED_ROLLS_FORWARD: &str = "activated already: the move rolls forward";

/// The scan resume cursor, shared by servers (which return it) and clients
/// (which merge pages across shards and resume after the last entry they
/// kept): `ushard:u32be` followed by the user key.
pub mod scan_cursor {
    pub fn encode(ushard: u32, key: &[u8]) -> Vec<u8> {
        let mut out = ushard.to_be_bytes().to_vec();
        out.extend_from_slice(key);
        out
    }

    /// `(ushard, key)`, or `None` when the bytes are not a cursor.
    pub fn decode(bytes: &[u8]) -> Option<(u32, Vec<u8>)> {
        let ushard = u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?);
        Some((ushard, bytes[4..].to_vec()))
    }
}

/// The routing contract shared by clients and servers: which micro-shard a
/// key belongs to when the application gives no routing key, and which shard
/// owns a micro-shard in a layout that names no map (the static mapping of
/// layouts written before maps were explicit).
pub mod routing {
    /// FNV-1a 64-bit of the key. Chosen because it is tiny, has no
    /// dependency, and is stable forever: changing it would move every key.
    pub fn hash_key(key: &[u8]) -> u64 {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in key {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        hash
    }

    /// The micro-shard of `key` in a keyspace with `ushard_count` micro-shards.
    pub fn ushard_for_key(key: &[u8], ushard_count: u32) -> u32 {
        (hash_key(key) % u64::from(ushard_count.max(1))) as u32
    }

    /// Index into a keyspace's shard list of the shard owning `ushard`.
    pub fn shard_index_for_ushard(ushard: u32, shard_count: usize) -> usize {
        ushard as usize % shard_count.max(1)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn hash_is_stable_across_releases() {
            // Known FNV-1a vectors: if these change, every stored key moves.
            assert_eq!(hash_key(b""), 0xcbf2_9ce4_8422_2325);
            assert_eq!(hash_key(b"a"), 0xaf63_dc4c_8601_ec8c);
            assert_eq!(hash_key(b"foobar"), 0x8594_4171_f739_67e8);
        }

        #[test]
        fn ushard_stays_in_range() {
            for i in 0..1000u32 {
                assert!(ushard_for_key(&i.to_be_bytes(), 7) < 7);
            }
        }
    }
}
