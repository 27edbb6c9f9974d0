//! The top-level error of a node, and the one mapping from internal errors
//! to the wire's [`ErrorCode`].

use crate::config::ConfigError;
use crate::net::tls::TlsError;
use crate::proto::{ErrorCode, ErrorReply, RequestError};
use crate::store::StoreError;

/// Why a node could not start or had to stop.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// TLS set-up failed.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The storage engine failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A socket could not be bound or used.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
}

impl From<&StoreError> for ErrorCode {
    fn from(e: &StoreError) -> ErrorCode {
        match e {
            StoreError::Limit(e) => ErrorCode::from(e),
            StoreError::InvalidArgument(_) | StoreError::ReservedKey | StoreError::NanScore => {
                ErrorCode::BadRequest
            }
            StoreError::WrongType => ErrorCode::WrongType,
            StoreError::NotAnInteger => ErrorCode::NotAnInteger,
            StoreError::Overflow => ErrorCode::Overflow,
            StoreError::Closed => ErrorCode::ShuttingDown,
            StoreError::Overloaded { .. } => ErrorCode::Overloaded,
            StoreError::Cancelled => ErrorCode::Timeout,
            StoreError::Poisoned(_)
            | StoreError::Wal(_)
            | StoreError::Disk(_)
            | StoreError::Io { .. } => ErrorCode::StorageFailed,
            StoreError::DamagedValue { .. }
            | StoreError::WalGap { .. }
            | StoreError::Locked { .. }
            | StoreError::ReplicationGap { .. }
            | StoreError::NotRetained { .. }
            | StoreError::Config { .. }
            | StoreError::OldLayout { .. }
            | StoreError::NewerLayout { .. }
            | StoreError::InterruptedUpgrade { .. }
            | StoreError::UnfinishedInstall { .. } => ErrorCode::Internal,
        }
    }
}

/// How long a client shed for a full commit queue should wait: a few
/// commit batches' worth, so that retries do not arrive in one wave.
pub const OVERLOADED_RETRY_AFTER_MS: u64 = 50;

impl From<&StoreError> for ErrorReply {
    fn from(e: &StoreError) -> ErrorReply {
        let reply = ErrorReply::new(ErrorCode::from(e), e.to_string());
        match e {
            StoreError::Overloaded { .. } => reply.with_retry_after_ms(OVERLOADED_RETRY_AFTER_MS),
            _ => reply,
        }
    }
}

impl From<&RequestError> for ErrorCode {
    fn from(e: &RequestError) -> ErrorCode {
        match e {
            RequestError::KeyTooLarge { .. } => ErrorCode::KeyTooLarge,
            RequestError::ValueTooLarge { .. } => ErrorCode::ValueTooLarge,
            RequestError::TooManyKeys { .. } => ErrorCode::TooManyKeys,
            RequestError::ZeroTtl
            | RequestError::ZeroDeadline
            | RequestError::EmptyBatch { .. }
            | RequestError::NotMembers { .. }
            | RequestError::NanScore { .. }
            | RequestError::UnsupportedCondition { .. } => ErrorCode::BadRequest,
        }
    }
}
