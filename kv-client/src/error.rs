//! Client errors, each classified: may the caller retry, and is the outcome
//! of a write unknown?

use shoal_proto::kv::ErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The request was refused, by the server or by the client before
    /// sending it for the same reasons (bad input, unknown keyspace, a
    /// transaction over its limits, ...). Nothing was written. Whether a
    /// retry can succeed depends on the code: see [`Self::is_retryable`].
    #[error("{message} ({})", code.as_str_name())]
    Rejected { code: ErrorCode, message: String },
    /// A transaction's commit found that keys it read had changed since:
    /// nothing was written; run it again with fresh reads (`TXN_CONFLICT`).
    #[error("conflict on {} (TXN_CONFLICT)", show_keys(keys))]
    TxnConflict { keys: Vec<Vec<u8>> },
    /// No replica could serve the request before the deadline, and for a
    /// write nothing was sent that could have been applied.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A write was sent but its answer never came (timeout, connection cut,
    /// leadership lost after proposing): it may or may not have been applied.
    #[error("indeterminate: {0}")]
    Indeterminate(String),
    /// The client could not find its way: no endpoint answered, or the
    /// layout does not know the keyspace.
    #[error("routing: {0}")]
    Routing(String),
    /// Bad arguments given to the client itself.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl ClientError {
    /// Whether retrying the same request later can succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Rejected { code, .. } => matches!(
                code,
                ErrorCode::NotLeader
                    | ErrorCode::Unavailable
                    | ErrorCode::WrongShard
                    | ErrorCode::UnknownShard
                    | ErrorCode::Moving
                    | ErrorCode::TxnTooOld
                    | ErrorCode::EpochChanged
            ),
            ClientError::TxnConflict { .. } => true,
            ClientError::Unavailable(_) => true,
            // Retrying may apply the write twice; the caller decides.
            ClientError::Indeterminate(_) => false,
            ClientError::Routing(_) => true,
            ClientError::InvalidArgument(_) => false,
        }
    }

    /// Whether a write that failed with this error may have been applied.
    pub fn is_indeterminate(&self) -> bool {
        match self {
            ClientError::Indeterminate(_) => true,
            ClientError::Rejected { .. }
            | ClientError::TxnConflict { .. }
            | ClientError::Unavailable(_)
            | ClientError::Routing(_)
            | ClientError::InvalidArgument(_) => false,
        }
    }

    /// The server's stable error code, when the server answered.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Rejected { code, .. } => Some(*code),
            ClientError::TxnConflict { .. } => Some(ErrorCode::TxnConflict),
            _ => None,
        }
    }

    /// A refusal with a stable code, made by the client before sending.
    pub(crate) fn refused(code: ErrorCode, message: impl Into<String>) -> ClientError {
        ClientError::Rejected {
            code,
            message: message.into(),
        }
    }
}

/// Keys as a person reads them: UTF-8 as is, anything else escaped.
fn show_keys(keys: &[Vec<u8>]) -> String {
    keys.iter()
        .map(|key| key.escape_ascii().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

pub type ClientResult<T> = Result<T, ClientError>;
