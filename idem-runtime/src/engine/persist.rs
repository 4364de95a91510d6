//! Talking to the store on the request path: each call timed and bounded, writes retried with
//! backoff (docs/contract.md, "Persisting the response").

use std::future::Future;
use std::sync::Arc;

use futures_util::future::Either;
use tokio::time::Instant;

use crate::engine::handle::Store;
use crate::engine::job::Job;
use crate::engine::metrics::{self, StoreOp};
use crate::engine::record::Payload;
use crate::engine::store::{Ownership, Reply, StoreResult};
use crate::engine::timed::{attempt, timed};

/// Runs a write up to `retries` times in all, whatever the error, sleeping
/// `backoff.delay(attempt)` between attempts.
///
/// The first attempt is made when this is called; when the store answers it at once with
/// success (the memory store does), the future returned holds just that answer, and the
/// retry loop is made (boxed) only when it may be needed (benches/overhead.rs).
fn with_retries<'a>(
    store: &'a Store,
    job: &'a Job,
    op: StoreOp,
    mut call: impl FnMut() -> Reply<'a, Ownership> + Send + 'a,
) -> impl Future<Output = StoreResult<Ownership>> + Send + 'a {
    let started = Instant::now();
    let first = match call() {
        Reply::Ready(Ok(ownership)) => {
            metrics::store_time(op, started.elapsed());
            return Either::Left(std::future::ready(Ok(ownership)));
        }
        first => first,
    };
    Either::Right(Box::pin(async move {
        let settings = &job.settings;
        let mut result = match first {
            Reply::Ready(result) => {
                metrics::store_time(op, started.elapsed());
                result
            }
            Reply::Pending(future) => timed(op, settings.store_timeout, started, future).await,
        };
        for attempt_number in 1..settings.retries {
            let Err(error) = &result else { break };
            metrics::storage_retry(&job.claim.id.handler);
            let delay = settings.backoff.delay(attempt_number - 1, store.jitter());
            tracing::warn!(op = op.label(), attempt = attempt_number, ?delay, %error, "idempotency store write failed; retrying");
            // Boxed, so that the retry's timer does not widen this future (benches/overhead.rs).
            Box::pin(tokio::time::sleep(delay)).await;
            result = attempt(op, settings.store_timeout, &mut call).await;
        }
        result
    }))
}

/// Stores the payload; when every attempt fails, marks the record FAILED_STORAGE (also
/// retried). If even that fails, the record stays IN_PROGRESS and its lease expiry makes it
/// recoverable.
pub(crate) async fn persist(store: &Store, job: &Job, payload: &Arc<Payload>) {
    let backend = store.backend();
    let claim = &job.claim;
    let key_prefix = claim.id.key.prefix();
    let error = match with_retries(store, job, StoreOp::Complete, || {
        backend.complete(claim, payload)
    })
    .await
    {
        Ok(Ownership::Held) => return,
        Ok(Ownership::Lost) => {
            tracing::warn!(
                key_prefix,
                "the claim was lost before the result could be stored (its lease expired and another request took it over); this result was not stored"
            );
            return;
        }
        Err(error) => error,
    };
    metrics::storage_failure(&claim.id.handler);
    tracing::error!(
        key_prefix,
        attempts = job.settings.retries,
        %error,
        "the result could not be stored; marking the key FAILED_STORAGE so that a retry runs again"
    );
    if let Err(error) = with_retries(store, job, StoreOp::Fail, || backend.fail(claim)).await {
        tracing::error!(
            key_prefix,
            %error,
            "the key could not be marked FAILED_STORAGE either; it stays IN_PROGRESS until its lease expires"
        );
    }
}

/// Deletes the claim so that a retry runs again (5xx, `Err`, panic, oversized result). If
/// that fails, the lease expiry frees the key.
pub(crate) async fn release(store: &Store, job: &Job) {
    let backend = store.backend();
    let released = with_retries(store, job, StoreOp::Release, || backend.release(&job.claim)).await;
    if let Err(error) = released {
        tracing::warn!(
            key_prefix = job.claim.id.key.prefix(),
            %error,
            "the claim could not be released; the key is free again when its lease expires"
        );
    }
}
