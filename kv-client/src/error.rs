//! Client errors, each classified: may the caller retry, and is the outcome
//! of a write unknown?

use shoal_proto::kv::ErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server rejected the request for a reason retrying will not fix
    /// (bad input, unknown keyspace, ...). Nothing was written.
    #[error("{message} ({})", code.as_str_name())]
    Rejected { code: ErrorCode, message: String },
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
            ),
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
            | ClientError::Unavailable(_)
            | ClientError::Routing(_)
            | ClientError::InvalidArgument(_) => false,
        }
    }

    /// The server's stable error code, when the server answered.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Rejected { code, .. } => Some(*code),
            _ => None,
        }
    }
}

pub type ClientResult<T> = Result<T, ClientError>;
