//! Metric names (SPEC section 5) and the small functions that record them. Labels never
//! carry a key: `handler` is a function name or route, bounded by the code.
//!
//! Handlers are passed as `&Cow<'static, str>` rather than `&str`: cloning a borrowed `Cow`
//! into a label costs nothing, where a `&str` would be copied for every request.
#![allow(clippy::ptr_arg)]

use std::borrow::Cow;
use std::time::Duration;

use crate::outcome::Outcome;

/// Counter: requests by `handler` and `outcome`.
pub const REQUESTS_TOTAL: &str = "idempotency_requests_total";
/// Counter: responses that could not be stored after all attempts, by `handler`.
pub const STORAGE_FAILURE_TOTAL: &str = "idempotency_storage_failure_total";
/// Counter: store writes retried after a failure, by `handler`.
pub const STORAGE_RETRIES_TOTAL: &str = "idempotency_storage_retries_total";
/// Histogram: seconds per store operation, by `op`.
pub const STORE_SECONDS: &str = "idempotency_store_seconds";

pub(crate) fn outcome(handler: &Cow<'static, str>, outcome: Outcome) {
    metrics::counter!(REQUESTS_TOTAL, "handler" => handler.clone(), "outcome" => outcome.label())
        .increment(1);
}

pub(crate) fn storage_failure(handler: &Cow<'static, str>) {
    metrics::counter!(STORAGE_FAILURE_TOTAL, "handler" => handler.clone()).increment(1);
}

pub(crate) fn storage_retry(handler: &Cow<'static, str>) {
    metrics::counter!(STORAGE_RETRIES_TOTAL, "handler" => handler.clone()).increment(1);
}

pub(crate) fn store_time(op: &'static str, elapsed: Duration) {
    metrics::histogram!(STORE_SECONDS, "op" => op).record(elapsed.as_secs_f64());
}
