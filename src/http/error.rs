//! Error replies of the HTTP API: one JSON shape for every failure, and
//! the one mapping from wire error codes to HTTP statuses.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::proto::{ErrorCode, ErrorReply};

/// A failed HTTP request: a status and the JSON body that explains it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The body.
    pub body: ErrorBody,
}

/// The JSON body of every error reply (proto-docs/http-api.md §2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorBody {
    /// An `ErrorCode` name as in proto-docs/errors.md (`WrongShard`), or
    /// one of the HTTP-only names: `NotFound`, `ConditionFailed`,
    /// `MethodNotAllowed`.
    pub error: String,
    /// For people; never parsed.
    pub message: String,
    /// Wait at least this long before retrying (also as `Retry-After`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    /// Where to send the request instead (`host:port`, a QUIC client address).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader_hint: Option<String>,
    /// With `ConditionFailed`: the key's version now (`null`: absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_version: Option<Option<u64>>,
}

impl ApiError {
    /// An error with an HTTP-only name (no `ErrorCode` says it).
    pub fn http(status: StatusCode, name: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            body: ErrorBody {
                error: name.to_string(),
                message: message.into(),
                retry_after_ms: None,
                leader_hint: None,
                current_version: None,
            },
        }
    }

    /// `400 BadRequest`: the request's URL, headers or body are invalid.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::from(ErrorReply::new(ErrorCode::BadRequest, message))
    }

    /// `404 NotFound`: no such key (or route).
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::http(StatusCode::NOT_FOUND, "NotFound", message)
    }

    /// `412 ConditionFailed`: a write's condition did not hold.
    pub fn condition_failed(current: Option<u64>) -> ApiError {
        let mut e = ApiError::http(
            StatusCode::PRECONDITION_FAILED,
            "ConditionFailed",
            match current {
                Some(v) => format!("the condition did not hold; the key's version is {v}"),
                None => "the condition did not hold; the key is absent".to_string(),
            },
        );
        e.body.current_version = Some(current);
        e
    }
}

/// The HTTP status a wire error code is answered with.
pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::BadRequest
        | ErrorCode::UnsupportedProtocol
        | ErrorCode::KeyTooLarge
        | ErrorCode::TooManyKeys => StatusCode::BAD_REQUEST,
        ErrorCode::FrameTooLarge | ErrorCode::ValueTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorCode::PermissionDenied => StatusCode::FORBIDDEN,
        ErrorCode::NotAnInteger | ErrorCode::Overflow | ErrorCode::WrongType => {
            StatusCode::CONFLICT
        }
        // Served elsewhere: `leader_hint` says where.
        ErrorCode::ReadOnlyReplica | ErrorCode::WrongShard | ErrorCode::NotLeader => {
            StatusCode::MISDIRECTED_REQUEST
        }
        ErrorCode::Overloaded => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::ShuttingDown | ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Timeout | ErrorCode::ReplicationTimeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorCode::StorageFailed | ErrorCode::Internal | ErrorCode::Unrecognized => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

/// The `ErrorCode` name clients see, as proto-docs/errors.md spells it.
pub fn code_name(code: ErrorCode) -> String {
    format!("{code:?}")
}

impl From<ErrorReply> for ApiError {
    fn from(e: ErrorReply) -> ApiError {
        ApiError {
            status: status_of(e.code),
            body: ErrorBody {
                error: code_name(e.code),
                message: e.message,
                retry_after_ms: e.retry_after_ms,
                leader_hint: e.leader_hint,
                current_version: None,
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let retry_after = self.body.retry_after_ms;
        let unauthenticated = self.status == StatusCode::UNAUTHORIZED;
        let mut response = (self.status, super::json(&self.body)).into_response();
        let headers = response.headers_mut();
        if let Some(ms) = retry_after {
            // Whole seconds, rounded up: never sooner than asked.
            headers.insert(header::RETRY_AFTER, HeaderValue::from(ms.div_ceil(1000)));
        }
        if unauthenticated {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"strata\""),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_status_and_its_documented_name() {
        for code in ErrorCode::ALL {
            let e = ApiError::from(ErrorReply::new(code, "x"));
            assert!(e.status.is_client_error() || e.status.is_server_error());
            assert!(!e.body.error.contains('_'), "{}", e.body.error);
        }
        assert_eq!(code_name(ErrorCode::WrongShard), "WrongShard");
        assert_eq!(
            status_of(ErrorCode::WrongShard),
            StatusCode::MISDIRECTED_REQUEST
        );
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up() {
        let e = ApiError::from(
            ErrorReply::new(ErrorCode::Overloaded, "busy").with_retry_after_ms(1500),
        );
        let r = e.into_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
    }
}
