//! How a failed attempt is handled: redirect to the hinted leader,
//! refresh the map, try another replica, or fail, and whether a failed
//! write may have been applied. Pure functions of the status and the kind
//! of request.

use crate::consistency::ReadConsistency;
use crate::error::ClientError;
use shoal_proto::kv::ErrorCode;
use shoal_proto::status_meta;
use shoal_types::NodeId;

pub(crate) fn read_kind(consistency: ReadConsistency) -> Kind {
    if consistency.needs_primary() {
        Kind::Read
    } else {
        Kind::ReplicaRead
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Only the primary may answer.
    Read,
    /// Any replica may answer (bounded staleness, read-your-writes).
    ReplicaRead,
    /// A write that must not be retried once it may have been applied.
    Write,
    /// A write tagged for exactly-once: retried until answered.
    RetriableWrite,
}

/// How one failed attempt should be handled.
pub(crate) enum Next {
    /// Try the hinted leader right away.
    Redirect(NodeId),
    /// Our map is behind (stale epoch, wrong or unknown shard): fetch the
    /// map again, then retry.
    Refresh(String),
    /// Try the next replica after a backoff.
    TryAnother(String),
    Fail(ClientError),
}

pub(crate) fn error_code_of(status: &tonic::Status) -> Option<ErrorCode> {
    ErrorCode::from_str_name(status_meta::error_code(status)?)
}

pub(crate) fn leader_hint_of(status: &tonic::Status) -> Option<NodeId> {
    status_meta::leader_hint(status).map(NodeId)
}

/// Whether a transport failure happened while connecting, i.e. before the
/// request could have left. Anything else (reset, broken pipe, timeout) may
/// have happened after the server received it.
pub(crate) fn never_sent(status: &tonic::Status) -> bool {
    let text = format!("{status:?}").to_lowercase();
    [
        "tcp connect error",
        "connection refused",
        "error trying to connect",
        "dns error",
    ]
    .iter()
    .any(|marker| text.contains(marker))
}

/// Whether a failed write attempt may still have been applied: the server
/// proposed it (LEADERSHIP_LOST) or the answer was lost in transport.
pub(crate) fn may_have_applied(status: &tonic::Status) -> bool {
    matches!(error_code_of(status), None | Some(ErrorCode::LeadershipLost))
}

/// The code of an answer saying the request's μshard is no longer (or not
/// yet) the shard's: moved, moving, or the replica gone.
pub(crate) fn moved_away(status: &tonic::Status) -> Option<ErrorCode> {
    error_code_of(status).filter(|code| {
        matches!(
            code,
            ErrorCode::WrongShard | ErrorCode::Moving | ErrorCode::UnknownShard
        )
    })
}

pub(crate) fn classify(status: tonic::Status, kind: Kind) -> Next {
    match error_code_of(&status) {
        Some(ErrorCode::NotLeader) => match leader_hint_of(&status) {
            Some(leader) => Next::Redirect(leader),
            None => Next::TryAnother(status.message().to_string()),
        },
        // Either side's map may be behind: the replica may have moved away
        // (or not arrived yet), or the epoch changed. Refresh ours and retry.
        // A μshard being handed over (nothing was written): its new owner
        // shows in the map once the hand-off ends.
        Some(ErrorCode::UnknownShard | ErrorCode::WrongShard | ErrorCode::StaleEpoch | ErrorCode::Moving) => {
            Next::Refresh(status.message().to_string())
        }
        // This replica is behind what the read asked for: another may not be.
        Some(ErrorCode::StaleReplica) => Next::TryAnother(status.message().to_string()),
        // Proposed, outcome unknown: a tagged write is retried, and the
        // shard answers the retry as the first time if it was applied.
        Some(ErrorCode::LeadershipLost) if kind == Kind::RetriableWrite => {
            Next::TryAnother(status.message().to_string())
        }
        // A node that does not know the keyspace lags the shard map: ask another.
        Some(ErrorCode::Unavailable | ErrorCode::UnknownKeyspace) => Next::TryAnother(status.message().to_string()),
        Some(ErrorCode::LeadershipLost | ErrorCode::RequestExpired) => {
            Next::Fail(ClientError::Indeterminate(status.message().to_string()))
        }
        Some(code) => Next::Fail(ClientError::Rejected {
            code,
            message: status.message().to_string(),
        }),
        // No code: the failure is the transport's, not the server's answer.
        None if kind != Kind::Write || never_sent(&status) => Next::TryAnother(status.to_string()),
        None => Next::Fail(ClientError::Indeterminate(status.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::{ERROR_CODE_METADATA, LEADER_HINT_METADATA};

    fn status_with(code: &str, leader: Option<&str>) -> tonic::Status {
        let mut status = tonic::Status::unavailable("x");
        status.metadata_mut().insert(ERROR_CODE_METADATA, code.parse().unwrap());
        if let Some(leader) = leader {
            status
                .metadata_mut()
                .insert(LEADER_HINT_METADATA, leader.parse().unwrap());
        }
        status
    }

    #[test]
    fn not_leader_with_hint_redirects() {
        assert!(matches!(
            classify(status_with("NOT_LEADER", Some("3")), Kind::Write),
            Next::Redirect(NodeId(3))
        ));
        assert!(matches!(
            classify(status_with("NOT_LEADER", None), Kind::Write),
            Next::TryAnother(_)
        ));
    }

    #[test]
    fn leadership_lost_is_indeterminate() {
        match classify(status_with("LEADERSHIP_LOST", None), Kind::Write) {
            Next::Fail(e) => assert!(e.is_indeterminate() && !e.is_retryable()),
            _ => panic!("expected a final indeterminate error"),
        }
    }

    #[test]
    fn bad_input_is_final_and_not_indeterminate() {
        match classify(status_with("KEY_TOO_LARGE", None), Kind::Write) {
            Next::Fail(e) => {
                assert!(!e.is_indeterminate() && !e.is_retryable());
                assert_eq!(e.code(), Some(ErrorCode::KeyTooLarge));
            }
            _ => panic!("expected a final rejection"),
        }
    }

    #[test]
    fn broken_connection_makes_a_write_indeterminate_but_a_read_retryable() {
        let cut = || tonic::Status::unavailable("error reading a body from connection: connection reset");
        assert!(matches!(
            classify(cut(), Kind::Write),
            Next::Fail(ClientError::Indeterminate(_))
        ));
        assert!(matches!(classify(cut(), Kind::Read), Next::TryAnother(_)));
        let pipe = tonic::Status::unavailable("error writing to connection: broken pipe");
        assert!(matches!(
            classify(pipe, Kind::Write),
            Next::Fail(ClientError::Indeterminate(_))
        ));
        let refused = tonic::Status::unavailable("tcp connect error: Connection refused");
        assert!(matches!(classify(refused, Kind::Write), Next::TryAnother(_)));
    }
}
