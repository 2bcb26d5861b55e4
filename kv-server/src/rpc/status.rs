//! The one mapping from [`KvError`] to the wire: a gRPC status code, a
//! message, the stable `shoal-error` code and, when known, the leader hint.

use crate::error::KvError;
use shoal_proto::kv::ErrorCode;
use shoal_proto::{ERROR_CODE_METADATA, LEADER_HINT_METADATA};
use tonic::{Code, Status};

pub fn error_code(error: &KvError) -> ErrorCode {
    match error {
        KvError::NotLeader { .. } => ErrorCode::NotLeader,
        KvError::UnknownKeyspace(_) => ErrorCode::UnknownKeyspace,
        KvError::UnknownShard(_) => ErrorCode::UnknownShard,
        KvError::WrongShard { .. } => ErrorCode::WrongShard,
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
    }
}

fn grpc_code(code: ErrorCode) -> Code {
    match code {
        ErrorCode::NotLeader | ErrorCode::Unavailable | ErrorCode::StaleReplica => Code::Unavailable,
        ErrorCode::NotACounter => Code::FailedPrecondition,
        ErrorCode::UnknownKeyspace | ErrorCode::UnknownShard => Code::NotFound,
        ErrorCode::WrongShard | ErrorCode::StaleEpoch => Code::FailedPrecondition,
        ErrorCode::KeyTooLarge | ErrorCode::ValueTooLarge | ErrorCode::BatchTooLarge | ErrorCode::EmptyKey => {
            Code::InvalidArgument
        }
        ErrorCode::MalformedRequest => Code::InvalidArgument,
        ErrorCode::LeadershipLost | ErrorCode::RequestExpired => Code::Aborted,
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
    fn bad_input_is_invalid_argument() {
        let status = to_status(KvError::EmptyKey);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.metadata().get(ERROR_CODE_METADATA).unwrap(), "EMPTY_KEY");
    }
}
