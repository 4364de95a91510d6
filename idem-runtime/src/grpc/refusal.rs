//! One table from what the library answers itself to its gRPC status code, message and
//! retry hint (docs/contract.md, "The gRPC adapter"): the gRPC side of `http/problem.rs`.
//! Messages never contain the key or stored data.

use std::time::Duration;

use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use crate::engine::outcome::{Outcome, retry_after_seconds};

/// The metadata entry that carries a retry delay, in whole seconds (as HTTP's `Retry-After`).
pub const RETRY_AFTER_METADATA: &str = "retry-after";

/// A status the library itself answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No key.
    MissingKey,
    /// A malformed key, or the entry given twice.
    InvalidKey,
    /// The key was first used with another request.
    Mismatch,
    /// The key's first call is still running.
    Conflict,
    /// The store could not be reached when claiming.
    StoreUnavailable,
    /// The store's scope rule names no caller for the call.
    NoScope,
    /// A new key, its scope at its quota of live records.
    QuotaExceeded,
    /// A transactional method's commit failed; none of its writes happened.
    CommitFailed,
    /// The method panicked, or its stored answer could not be read back.
    Failed,
}

impl Refusal {
    /// The refusal an outcome answers with, if the library answers at all.
    pub(crate) const fn answering(outcome: Outcome) -> Option<Refusal> {
        match outcome {
            Outcome::Executed
            | Outcome::Recovered
            | Outcome::Replayed
            | Outcome::ReplayedAfterWait => None,
            Outcome::Conflict => Some(Refusal::Conflict),
            Outcome::Mismatch => Some(Refusal::Mismatch),
            Outcome::InvalidKey => Some(Refusal::InvalidKey),
            Outcome::MissingKey => Some(Refusal::MissingKey),
            Outcome::StoreUnavailable => Some(Refusal::StoreUnavailable),
            Outcome::NoScope => Some(Refusal::NoScope),
            Outcome::QuotaExceeded => Some(Refusal::QuotaExceeded),
        }
    }

    /// The code and the message of each refusal.
    const fn row(self) -> (Code, &'static str) {
        match self {
            Refusal::MissingKey => (
                Code::InvalidArgument,
                "this method is idempotent and needs an idempotency key in the request's metadata",
            ),
            Refusal::InvalidKey => (
                Code::InvalidArgument,
                "an idempotency key is one metadata value of 8 to 128 characters from A-Za-z0-9._:-",
            ),
            Refusal::Mismatch => (
                Code::FailedPrecondition,
                "this idempotency key was first used with a different request; use a new key for a new request",
            ),
            Refusal::Conflict => (
                Code::Aborted,
                "a call with this idempotency key is in progress; retry after the delay in the retry-after metadata",
            ),
            Refusal::StoreUnavailable => (
                Code::Unavailable,
                "the call was not processed because its idempotency key could not be recorded; retry with the same key",
            ),
            Refusal::NoScope => (
                Code::PermissionDenied,
                "idempotency keys on this service belong to a caller, and this call names none; nothing was recorded",
            ),
            Refusal::QuotaExceeded => (
                Code::ResourceExhausted,
                "this caller holds as many idempotency keys as the service keeps at once; retry after the delay in the retry-after metadata, or reuse a key",
            ),
            Refusal::CommitFailed => (
                Code::Unavailable,
                "none of the call's writes happened and nothing was stored for its idempotency key; retry with the same key",
            ),
            Refusal::Failed => (
                Code::Internal,
                "the method failed unexpectedly; nothing was stored, so a retry with the same key runs again",
            ),
        }
    }

    /// The status, with a `detail` (when given, replacing the message) and a retry delay in
    /// the `retry-after` metadata entry.
    pub(crate) fn status(self, detail: Option<&str>, retry_after: Option<Duration>) -> Status {
        let (code, message) = self.row();
        let mut status = Status::new(code, detail.unwrap_or(message));
        if let Some(after) = retry_after {
            status.metadata_mut().insert(
                RETRY_AFTER_METADATA,
                MetadataValue::from(retry_after_seconds(after)),
            );
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_grpc_conventions() {
        let code = |outcome| Refusal::answering(outcome).map(|r| r.status(None, None).code());
        assert_eq!(code(Outcome::MissingKey), Some(Code::InvalidArgument));
        assert_eq!(code(Outcome::InvalidKey), Some(Code::InvalidArgument));
        assert_eq!(code(Outcome::Mismatch), Some(Code::FailedPrecondition));
        assert_eq!(code(Outcome::Conflict), Some(Code::Aborted));
        assert_eq!(code(Outcome::StoreUnavailable), Some(Code::Unavailable));
        assert_eq!(code(Outcome::NoScope), Some(Code::PermissionDenied));
        assert_eq!(code(Outcome::QuotaExceeded), Some(Code::ResourceExhausted));
        assert_eq!(
            Refusal::CommitFailed.status(None, None).code(),
            Code::Unavailable
        );
        assert_eq!(code(Outcome::Replayed), None);
    }

    #[test]
    fn a_retry_delay_is_whole_seconds_in_metadata() {
        let status = Refusal::Conflict.status(None, Some(Duration::from_millis(1500)));
        assert_eq!(status.metadata().get(RETRY_AFTER_METADATA).unwrap(), "2");
        assert!(Refusal::Mismatch.status(None, None).metadata().is_empty());
    }
}
