//! One table from an outcome to its HTTP status, problem type and `Retry-After`.
//!
//! Problem bodies follow RFC 9457 (`application/problem+json`). They never contain the key
//! or stored data.

use std::time::Duration;

use axum_core::response::{IntoResponse, Response};
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, StatusCode};

use crate::engine::outcome::{Outcome, retry_after_seconds};

/// A response the library itself gives, as an RFC 9457 problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Problem {
    /// 400: no key.
    MissingKey,
    /// 400: malformed key.
    InvalidKey,
    /// 422: the key was first used with another request.
    Mismatch,
    /// 409: the key's first request is still in progress.
    Conflict,
    /// 503: the store is unreachable.
    StoreUnavailable,
    /// 403: the store scopes keys by caller and the request names none.
    NoScope,
    /// 429: the caller's scope holds as many live records as the store's quota allows.
    QuotaExceeded,
    /// 503: a transactional handler's commit failed; none of its writes happened.
    CommitFailed,
    /// 500: the handler panicked.
    HandlerPanicked,
    /// 413: the request body is over the application's body limit (axum's `DefaultBodyLimit`,
    /// or the library's own cap when that is disabled). Answered before any store access.
    BodyTooLarge,
    /// 400: the request body could not be read. Answered before any store access.
    BodyUnreadable,
}

struct Row {
    status: StatusCode,
    slug: &'static str,
    title: &'static str,
    detail: &'static str,
}

impl Problem {
    /// The problem an outcome answers with, if the library answers at all.
    pub const fn answering(outcome: Outcome) -> Option<Problem> {
        match outcome {
            Outcome::Executed
            | Outcome::Recovered
            | Outcome::Replayed
            | Outcome::ReplayedAfterWait => None,
            Outcome::Conflict => Some(Problem::Conflict),
            Outcome::Mismatch => Some(Problem::Mismatch),
            Outcome::InvalidKey => Some(Problem::InvalidKey),
            Outcome::MissingKey => Some(Problem::MissingKey),
            Outcome::StoreUnavailable => Some(Problem::StoreUnavailable),
            Outcome::NoScope => Some(Problem::NoScope),
            Outcome::QuotaExceeded => Some(Problem::QuotaExceeded),
        }
    }

    const fn row(self) -> Row {
        match self {
            Problem::MissingKey => Row {
                status: StatusCode::BAD_REQUEST,
                slug: "missing-key",
                title: "Idempotency key missing",
                detail: "This operation is idempotent and needs an idempotency key header.",
            },
            Problem::InvalidKey => Row {
                status: StatusCode::BAD_REQUEST,
                slug: "invalid-key",
                title: "Idempotency key invalid",
                detail: "An idempotency key is one header value of 8 to 128 characters from A-Za-z0-9._:- (optionally as an RFC 8941 string).",
            },
            Problem::Mismatch => Row {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                slug: "key-reused",
                title: "Idempotency key reused with a different request",
                detail: "This key was first used with a different method, path, query or body. Use a new key for a new request.",
            },
            Problem::Conflict => Row {
                status: StatusCode::CONFLICT,
                slug: "request-in-progress",
                title: "A request with this idempotency key is in progress",
                detail: "The first request with this key has not finished yet. Retry after the delay in Retry-After.",
            },
            Problem::StoreUnavailable => Row {
                status: StatusCode::SERVICE_UNAVAILABLE,
                slug: "store-unavailable",
                title: "Idempotency store unavailable",
                detail: "The request was not processed because its idempotency key could not be recorded. Retry with the same key.",
            },
            Problem::NoScope => Row {
                status: StatusCode::FORBIDDEN,
                slug: "no-scope",
                title: "Request not attributable to a caller",
                detail: "Idempotency keys on this service belong to a caller, and this request names none. Nothing was recorded.",
            },
            Problem::QuotaExceeded => Row {
                status: StatusCode::TOO_MANY_REQUESTS,
                slug: "quota-exceeded",
                title: "Too many idempotency keys in use",
                detail: "This caller holds as many idempotency keys as the service keeps at once. The request was not processed; retry after the delay in Retry-After, or reuse a key.",
            },
            Problem::CommitFailed => Row {
                status: StatusCode::SERVICE_UNAVAILABLE,
                slug: "commit-failed",
                title: "The request's transaction could not be committed",
                detail: "None of the request's writes happened and nothing was stored for its idempotency key. Retry with the same key.",
            },
            Problem::HandlerPanicked => Row {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                slug: "handler-panicked",
                title: "The request failed",
                detail: "The handler failed unexpectedly; nothing was stored, so a retry with the same key runs again.",
            },
            Problem::BodyTooLarge => Row {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                slug: "body-too-large",
                title: "Request body too large",
                detail: "The request body is larger than this endpoint accepts. Nothing was recorded for its idempotency key.",
            },
            Problem::BodyUnreadable => Row {
                status: StatusCode::BAD_REQUEST,
                slug: "body-unreadable",
                title: "Request body unreadable",
                detail: "The request body could not be read. Nothing was recorded for its idempotency key.",
            },
        }
    }

    /// The HTTP status.
    pub const fn status(self) -> StatusCode {
        self.row().status
    }

    /// The problem `type` URI.
    pub fn type_uri(self) -> String {
        format!("urn:idem:problem:{}", self.row().slug)
    }

    /// The problem `title`.
    pub const fn title(self) -> &'static str {
        self.row().title
    }

    /// The response, with a `detail` (when given, replacing the default) and `Retry-After`.
    pub fn response(self, detail: Option<&str>, retry_after: Option<Duration>) -> Response {
        let row = self.row();
        let body = serde_json::json!({
            "type": self.type_uri(),
            "title": row.title,
            "status": row.status.as_u16(),
            "detail": detail.unwrap_or(row.detail),
        });
        let mut response = (row.status, body.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(after) = retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from(retry_after_seconds(after)));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_has_its_own_type() {
        let all = [
            Problem::MissingKey,
            Problem::InvalidKey,
            Problem::Mismatch,
            Problem::Conflict,
            Problem::StoreUnavailable,
            Problem::NoScope,
            Problem::QuotaExceeded,
            Problem::CommitFailed,
            Problem::HandlerPanicked,
            Problem::BodyTooLarge,
            Problem::BodyUnreadable,
        ];
        let types: std::collections::HashSet<_> = all.iter().map(|p| p.type_uri()).collect();
        assert_eq!(types.len(), all.len());
    }

    #[test]
    fn statuses_follow_the_ietf_draft() {
        assert_eq!(
            Problem::answering(Outcome::MissingKey).map(Problem::status),
            Some(StatusCode::BAD_REQUEST)
        );
        assert_eq!(
            Problem::answering(Outcome::InvalidKey).map(Problem::status),
            Some(StatusCode::BAD_REQUEST)
        );
        assert_eq!(
            Problem::answering(Outcome::Mismatch).map(Problem::status),
            Some(StatusCode::UNPROCESSABLE_ENTITY)
        );
        assert_eq!(
            Problem::answering(Outcome::Conflict).map(Problem::status),
            Some(StatusCode::CONFLICT)
        );
        assert_eq!(
            Problem::answering(Outcome::StoreUnavailable).map(Problem::status),
            Some(StatusCode::SERVICE_UNAVAILABLE)
        );
        assert_eq!(
            Problem::answering(Outcome::QuotaExceeded).map(Problem::status),
            Some(StatusCode::TOO_MANY_REQUESTS)
        );
        assert_eq!(
            Problem::answering(Outcome::NoScope).map(Problem::status),
            Some(StatusCode::FORBIDDEN)
        );
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_seconds(Duration::from_secs(30)), 30);
    }
}
