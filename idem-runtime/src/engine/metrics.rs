//! Metric names (docs/contract.md, "Observability") and the small functions that record them. Labels never
//! carry a key: `handler` is a function name or route, bounded by the code.
//!
//! Recording allocates nothing on the request path: the store histogram's keys are statics,
//! one per operation, and the request counter's keys are built once per handler and outcome
//! on each thread, then shared (their labels behind an `Arc`, their hash computed once):
//! `tests/benches/overhead.rs` (`oneshot`, and the callgrind recipe in `bench/notes.md`).
//! Every call still goes through the installed recorder, so a recorder installed later (or
//! only for a scope, as the tests do) sees everything from then on.
#![allow(clippy::ptr_arg)]

use std::borrow::Cow;
use std::cell::RefCell;
use std::time::Duration;

use metrics::{Key, Label, Level, Metadata};

use crate::engine::outcome::{OUTCOMES, Outcome};

/// Counter: requests by `handler` and `outcome`.
pub const REQUESTS_TOTAL: &str = "idempotency_requests_total";
/// Counter: responses that could not be stored after all attempts, by `handler`.
pub const STORAGE_FAILURE_TOTAL: &str = "idempotency_storage_failure_total";
/// Counter: store writes retried after a failure, by `handler`.
pub const STORAGE_RETRIES_TOTAL: &str = "idempotency_storage_retries_total";
/// Counter: claims whose lease renewal found them taken over or expired, by `handler`.
pub const LEASE_LOST_TOTAL: &str = "idempotency_lease_lost_total";
/// Counter: expired records removed by a background purge (`Store::purge_every`); no labels.
pub const PURGED_TOTAL: &str = "idempotency_purged_total";
/// Gauge: calls waiting for an in-flight result; no labels.
pub const WAITERS: &str = "idempotency_waiters";
/// Histogram: seconds per store operation, by `op`.
pub const STORE_SECONDS: &str = "idempotency_store_seconds";

/// What `metrics::counter!` and `metrics::histogram!` would attach here.
static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// A store operation: the `op` label of `idempotency_store_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoreOp {
    Claim,
    Complete,
    Fail,
    Release,
    Renew,
    Begin,
    Commit,
    Announce,
}

impl StoreOp {
    pub(crate) const fn label(self) -> &'static str {
        match self {
            StoreOp::Claim => "claim",
            StoreOp::Complete => "complete",
            StoreOp::Fail => "fail",
            StoreOp::Release => "release",
            StoreOp::Renew => "renew",
            StoreOp::Begin => "begin",
            StoreOp::Commit => "commit",
            StoreOp::Announce => "announce",
        }
    }

    fn key(self) -> &'static Key {
        static CLAIM: [Label; 1] = [Label::from_static_parts("op", StoreOp::Claim.label())];
        static COMPLETE: [Label; 1] = [Label::from_static_parts("op", StoreOp::Complete.label())];
        static FAIL: [Label; 1] = [Label::from_static_parts("op", StoreOp::Fail.label())];
        static RELEASE: [Label; 1] = [Label::from_static_parts("op", StoreOp::Release.label())];
        static RENEW: [Label; 1] = [Label::from_static_parts("op", StoreOp::Renew.label())];
        static BEGIN: [Label; 1] = [Label::from_static_parts("op", StoreOp::Begin.label())];
        static COMMIT: [Label; 1] = [Label::from_static_parts("op", StoreOp::Commit.label())];
        static ANNOUNCE: [Label; 1] = [Label::from_static_parts("op", StoreOp::Announce.label())];
        static KEYS: [Key; 8] = [
            Key::from_static_parts(STORE_SECONDS, &CLAIM),
            Key::from_static_parts(STORE_SECONDS, &COMPLETE),
            Key::from_static_parts(STORE_SECONDS, &FAIL),
            Key::from_static_parts(STORE_SECONDS, &RELEASE),
            Key::from_static_parts(STORE_SECONDS, &RENEW),
            Key::from_static_parts(STORE_SECONDS, &BEGIN),
            Key::from_static_parts(STORE_SECONDS, &COMMIT),
            Key::from_static_parts(STORE_SECONDS, &ANNOUNCE),
        ];
        &KEYS[self as usize]
    }
}

/// How many handlers' request keys a thread keeps; past that, keys are built per call.
const CACHED_HANDLERS: usize = 64;

/// A handler's `idempotency_requests_total` keys, by outcome, built when first used.
type HandlerKeys = (Cow<'static, str>, [Option<Key>; OUTCOMES.len()]);

thread_local! {
    static REQUEST_KEYS: RefCell<Vec<HandlerKeys>> = const { RefCell::new(Vec::new()) };
}

fn request_key(handler: &Cow<'static, str>, outcome: Outcome) -> Key {
    let build = || {
        let labels = vec![
            Label::new("handler", handler.clone()),
            Label::new("outcome", outcome.label()),
        ];
        Key::from_parts(REQUESTS_TOTAL, labels)
    };
    // Never a panic here: a thread whose cache is already torn down builds the key instead.
    let cached = REQUEST_KEYS.try_with(|cache| {
        let mut cache = cache.try_borrow_mut().ok()?;
        let at = match cache.iter().position(|(name, _)| name == handler) {
            Some(at) => at,
            None if cache.len() < CACHED_HANDLERS => {
                cache.push((handler.clone(), Default::default()));
                cache.len() - 1
            }
            None => return None,
        };
        let slot = cache[at].1.get_mut(outcome as usize)?;
        Some(slot.get_or_insert_with(|| build().to_retained()).clone())
    });
    cached.ok().flatten().unwrap_or_else(build)
}

pub(crate) fn outcome(handler: &Cow<'static, str>, outcome: Outcome) {
    let key = request_key(handler, outcome);
    metrics::with_recorder(|recorder| recorder.register_counter(&key, &METADATA)).increment(1);
}

pub(crate) fn storage_failure(handler: &Cow<'static, str>) {
    metrics::counter!(STORAGE_FAILURE_TOTAL, "handler" => handler.clone()).increment(1);
}

pub(crate) fn storage_retry(handler: &Cow<'static, str>) {
    metrics::counter!(STORAGE_RETRIES_TOTAL, "handler" => handler.clone()).increment(1);
}

pub(crate) fn lease_lost(handler: &Cow<'static, str>) {
    metrics::counter!(LEASE_LOST_TOTAL, "handler" => handler.clone()).increment(1);
}

pub(crate) fn waiters(change: f64) {
    metrics::gauge!(WAITERS).increment(change);
}

pub(crate) fn purged(records: u64) {
    metrics::counter!(PURGED_TOTAL).increment(records);
}

pub(crate) fn store_time(op: StoreOp, elapsed: Duration) {
    metrics::with_recorder(|recorder| recorder.register_histogram(op.key(), &METADATA))
        .record(elapsed.as_secs_f64());
}
