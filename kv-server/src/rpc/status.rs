//! The one mapping from [`KvError`] to the wire: a gRPC status code, a
//! message, the stable `shoal-error` code and, when known, the leader hint.

use crate::error::KvError;
use shoal_proto::kv::ErrorCode;
use shoal_proto::{ERROR_CODE_METADATA, LEADER_HINT_METADATA, MAP_VERSION_METADATA, OWNER_HINT_METADATA};
use tonic::{Code, Status};

pub fn error_code(error: &KvError) -> ErrorCode {
    match error {
        KvError::NotLeader { .. } => ErrorCode::NotLeader,
        KvError::UnknownKeyspace(_) => ErrorCode::UnknownKeyspace,
        KvError::UnknownShard(_) => ErrorCode::UnknownShard,
        KvError::WrongShard { .. } | KvError::UshardMoved { .. } => ErrorCode::WrongShard,
        KvError::Moving { .. } => ErrorCode::Moving,
        KvError::MoveConflict(_) => ErrorCode::MoveConflict,
        KvError::StaleEpoch { .. } => ErrorCode::StaleEpoch,
        KvError::KeyTooLarge { .. } => ErrorCode::KeyTooLarge,
        KvError::ValueTooLarge { .. } => ErrorCode::ValueTooLarge,
        KvError::BatchTooLarge(_) => ErrorCode::BatchTooLarge,
        KvError::EmptyKey => ErrorCode::EmptyKey,
        KvError::Malformed(_) => ErrorCode::MalformedRequest,
        KvError::Unavailable(_) => ErrorCode::Unavailable,
        KvError::LeadershipLost { .. } => ErrorCode::LeadershipLost,
        KvError::Internal(_) => ErrorCode::Internal,
        KvError::StaleReplica(_) => ErrorCode::StaleReplica,
        KvError::NotACounter(_) => ErrorCode::NotACounter,
        KvError::RequestExpired { .. } => ErrorCode::RequestExpired,
        KvError::TxnTooOld { .. } => ErrorCode::TxnTooOld,
        KvError::EpochChanged { .. } => ErrorCode::EpochChanged,
        KvError::TxnTooLarge(_) => ErrorCode::TxnTooLarge,
        KvError::EmptyTxn => ErrorCode::EmptyTxn,
    }
}

fn grpc_code(code: ErrorCode) -> Code {
    match code {
        ErrorCode::NotLeader | ErrorCode::Unavailable | ErrorCode::StaleReplica => Code::Unavailable,
        ErrorCode::NotACounter => Code::FailedPrecondition,
        ErrorCode::UnknownKeyspace | ErrorCode::UnknownShard => Code::NotFound,
        ErrorCode::WrongShard | ErrorCode::StaleEpoch => Code::FailedPrecondition,
        ErrorCode::Moving => Code::Unavailable,
        ErrorCode::MoveConflict => Code::FailedPrecondition,
        ErrorCode::KeyTooLarge | ErrorCode::ValueTooLarge | ErrorCode::BatchTooLarge | ErrorCode::EmptyKey => {
            Code::InvalidArgument
        }
        ErrorCode::MalformedRequest => Code::InvalidArgument,
        ErrorCode::LeadershipLost | ErrorCode::RequestExpired => Code::Aborted,
        ErrorCode::TxnConflict | ErrorCode::TxnTooOld | ErrorCode::EpochChanged => Code::Aborted,
        ErrorCode::CrossShardTxn
        | ErrorCode::TxnTooLarge
        | ErrorCode::TxnFinished
        | ErrorCode::ReadOnlyTxn
        | ErrorCode::EmptyTxn => Code::InvalidArgument,
        ErrorCode::Internal | ErrorCode::Unspecified => Code::Internal,
    }
}

pub fn to_status(error: KvError) -> Status {
    let code = error_code(&error);
    let mut status = Status::new(grpc_code(code), error.to_string());
    if let Ok(value) = code.as_str_name().parse() {
        status.metadata_mut().insert(ERROR_CODE_METADATA, value);
    }
    let leader = match &error {
        KvError::NotLeader { leader, .. } | KvError::LeadershipLost { leader, .. } => *leader,
        _ => None,
    };
    if let Some(leader) = leader {
        if let Ok(value) = leader.0.to_string().parse() {
            status.metadata_mut().insert(LEADER_HINT_METADATA, value);
        }
    }
    let (owner, map_version) = match &error {
        KvError::WrongShard { owner, map_version, .. } => (Some(*owner), Some(*map_version)),
        // Found by the replica's own state, not the map.
        KvError::UshardMoved { owner, .. } => (Some(*owner), None),
        _ => (None, None),
    };
    if let Some(Ok(owner)) = owner.map(|o| o.0.to_string().parse()) {
        status.metadata_mut().insert(OWNER_HINT_METADATA, owner);
    }
    if let Some(Ok(version)) = map_version.map(|v| v.to_string().parse()) {
        status.metadata_mut().insert(MAP_VERSION_METADATA, version);
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_types::{NodeId, ShardId};

    #[test]
    fn not_leader_carries_code_and_hint() {
        let status = to_status(KvError::NotLeader {
            shard: ShardId(1),
            leader: Some(NodeId(3)),
        });
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(status.metadata().get(ERROR_CODE_METADATA).unwrap(), "NOT_LEADER");
        assert_eq!(status.metadata().get(LEADER_HINT_METADATA).unwrap(), "3");
    }

    #[test]
    fn wrong_shard_names_the_owner_and_the_map_version() {
        let status = to_status(KvError::WrongShard {
            keyspace: "default".into(),
            ushard: 5,
            shard: ShardId(1),
            owner: ShardId(2),
            map_version: 7,
        });
        assert_eq!(status.metadata().get(ERROR_CODE_METADATA).unwrap(), "WRONG_SHARD");
        assert_eq!(status.metadata().get(OWNER_HINT_METADATA).unwrap(), "2");
        assert_eq!(status.metadata().get(MAP_VERSION_METADATA).unwrap(), "7");
    }

    #[test]
    fn bad_input_is_invalid_argument() {
        let status = to_status(KvError::EmptyKey);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.metadata().get(ERROR_CODE_METADATA).unwrap(), "EMPTY_KEY");
    }
}
