//! What an idempotent plain function answers instead of running: the error that
//! `#[idempotent(key = "...")]` hands to the function's own error type through
//! `From<idem_runtime::Error>`.

use std::time::Duration;

use crate::engine::key::KeyError;
use crate::engine::store::StoreError;

/// Why an idempotent function did not run, or could not return its stored result.
///
/// A function under `#[idempotent(key = "...")]` returns `Result<T, E>`; each of these
/// becomes an `E` through `From<idem_runtime::Error>`. None of them means the function ran:
/// its side effects either happened once already, or not at all. Messages never contain
/// the key or stored data.
///
/// ```
/// use std::time::Duration;
/// use idem_runtime::Error;
///
/// #[derive(Debug)]
/// enum JobError {
///     /// Try again later: redeliver the message.
///     Retry(Duration),
///     /// Will never succeed: dead-letter the message.
///     Reject(String),
/// }
///
/// impl From<Error> for JobError {
///     fn from(error: Error) -> Self {
///         match error.retry_after() {
///             Some(after) => JobError::Retry(after),
///             None => JobError::Reject(error.to_string()),
///         }
///     }
/// }
///
/// let busy = Error::Conflict { retry_after: Duration::from_secs(3) };
/// assert!(matches!(JobError::from(busy), JobError::Retry(_)));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The key expression gave an empty or malformed key (8 to 128 characters from
    /// `A-Za-z0-9._:-`). Nothing was stored.
    #[error("invalid idempotency key: {0}")]
    InvalidKey(#[source] KeyError),
    /// The arguments could not be serialized, so they have no fingerprint. Nothing was
    /// stored.
    #[error("the arguments could not be serialized for the idempotency fingerprint: {0}")]
    Arguments(#[source] serde_json::Error),
    /// An earlier call with this key is still running (its lease is live); it did not run
    /// again. Retry after `retry_after`.
    #[error(
        "an earlier call with this idempotency key is still in progress; retry in {}s",
        crate::engine::outcome::retry_after_seconds(*retry_after)
    )]
    Conflict {
        /// Time left on the running call's lease.
        retry_after: Duration,
    },
    /// The key is new, and its scope already holds as many live records as the store's
    /// quota allows; the function did not run. Retry after `retry_after`, when one of the
    /// scope's records expires.
    #[error(
        "this scope holds as many idempotency keys as the store's quota allows; retry in {}s",
        crate::engine::outcome::retry_after_seconds(*retry_after)
    )]
    QuotaExceeded {
        /// When one of the scope's records expires.
        retry_after: Duration,
    },
    /// The store scopes keys by the request they came with (`Store::scope_by`), and a plain
    /// function has none: give the function a scope of its own (`scope = ...`), or
    /// `scope = none` for keys every caller shares. The function did not run.
    #[error(
        "the store scopes idempotency keys by request, and this call has none: give the function `scope = ...` or `scope = none`"
    )]
    NoScope,
    /// The key was first used with other arguments; the function did not run.
    #[error("this idempotency key was first used with different arguments; use a new key")]
    Mismatch,
    /// The store could not be reached to claim the key; the function did not run. Retry.
    #[error("the idempotency store is unavailable, so the call did not run: {0}")]
    StoreUnavailable(#[source] StoreError),
    /// A transactional call's commit failed (or found its claim taken over): none of its writes
    /// happened and nothing was stored. Retry.
    #[error("the call's transaction could not be committed, so none of its writes happened; retry")]
    CommitFailed,
    /// The key's result is stored but no longer reads as the function's `Ok` type (did the
    /// type change since?). The function already ran once under this key, so it does not
    /// run again; the record expires with its ttl.
    #[error(
        "the stored result of this idempotency key does not deserialize as the function's return type"
    )]
    Undecodable,
}

impl Error {
    /// When a retry can succeed, how long to wait first: `Some` for [`Error::Conflict`] and
    /// [`Error::StoreUnavailable`], `None` for errors that a retry with the same key and
    /// arguments meets again.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Conflict { retry_after } | Error::QuotaExceeded { retry_after } => {
                Some(*retry_after)
            }
            Error::StoreUnavailable(_) | Error::CommitFailed => Some(Duration::from_secs(1)),
            Error::InvalidKey(_)
            | Error::Arguments(_)
            | Error::Mismatch
            | Error::Undecodable
            | Error::NoScope => None,
        }
    }
}
