//! What happened to an idempotent call: the `outcome` label of `idempotency_requests_total`,
//! the same for every adapter.

use std::time::Duration;

/// What happened to an idempotent request: the `outcome` label of
/// `idempotency_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// A new key: the handler ran.
    Executed,
    /// An abandoned or FAILED_STORAGE record was taken over: the handler ran.
    Recovered,
    /// A stored response was replayed.
    Replayed,
    /// A duplicate waited for the first request's result, and was answered with it.
    ReplayedAfterWait,
    /// The key is in progress elsewhere: 409.
    Conflict,
    /// The key was used with another request: 422.
    Mismatch,
    /// The key is malformed: 400.
    InvalidKey,
    /// The key is missing: 400.
    MissingKey,
    /// The store could not be reached when claiming: 503.
    StoreUnavailable,
    /// The store scopes keys by caller and the request names none: 403.
    NoScope,
    /// The scope holds as many live records as its quota allows: 429.
    QuotaExceeded,
}

/// Every outcome, in table order.
pub const OUTCOMES: [Outcome; 11] = [
    Outcome::Executed,
    Outcome::Recovered,
    Outcome::Replayed,
    Outcome::ReplayedAfterWait,
    Outcome::Conflict,
    Outcome::Mismatch,
    Outcome::InvalidKey,
    Outcome::MissingKey,
    Outcome::StoreUnavailable,
    Outcome::NoScope,
    Outcome::QuotaExceeded,
];

impl Outcome {
    /// The metric label.
    pub const fn label(self) -> &'static str {
        match self {
            Outcome::Executed => "executed",
            Outcome::Recovered => "recovered",
            Outcome::Replayed => "replayed",
            Outcome::ReplayedAfterWait => "replayed_after_wait",
            Outcome::Conflict => "conflict",
            Outcome::Mismatch => "mismatch",
            Outcome::InvalidKey => "invalid_key",
            Outcome::MissingKey => "missing_key",
            Outcome::StoreUnavailable => "store_unavailable",
            Outcome::NoScope => "no_scope",
            Outcome::QuotaExceeded => "quota_exceeded",
        }
    }
}

impl From<&crate::engine::key::KeyError> for Outcome {
    /// `missing_key` for a missing key, `invalid_key` for every other key error.
    fn from(error: &crate::engine::key::KeyError) -> Self {
        if error.is_missing() {
            Outcome::MissingKey
        } else {
            Outcome::InvalidKey
        }
    }
}

/// Whole seconds for `Retry-After`: rounded up, at least 1.
pub fn retry_after_seconds(after: Duration) -> u64 {
    let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
    secs.max(1)
}
