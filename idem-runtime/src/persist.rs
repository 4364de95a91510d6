//! Talking to the store on the request path: bounded, timed, retried with backoff.
//!
//! These are plain functions returning `async move` blocks rather than `async fn`s: an
//! `async fn` keeps its arguments twice in its future (as received, and moved into the body),
//! and these futures are part of every request's, which is boxed and moved.
#![allow(clippy::ptr_arg)] // handler names are `&Cow` so that labels clone for free
#![allow(clippy::manual_async_fn)] // on purpose: see above

use std::borrow::Cow;
use std::convert::Infallible;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures_util::future::Either;
use tokio::time::{Instant, Sleep};

use crate::backoff::Backoff;
use crate::config::Config;
use crate::engine::Target;
use crate::fingerprint::Fingerprint;
use crate::key::IdempotencyKey;
use crate::metrics::{self, StoreOp};
use crate::record::{Claim, OwnerToken, RecordId, StoredResponse};
use crate::store::{BoxFuture, Store, StoreError, StoreResult};

/// The settings of one request, after the store's process-wide overrides.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    pub retries: u32,
    pub backoff: Backoff,
    pub lease: Duration,
    pub ttl: Duration,
    pub store_timeout: Duration,
}

impl Settings {
    pub(crate) fn new(config: &Config, store: &Store) -> Self {
        Settings {
            retries: store
                .retries_override()
                .unwrap_or(config.retries_value())
                .max(1),
            backoff: config.backoff_value(),
            lease: store.lease_override().unwrap_or(config.lease_value()),
            ttl: config.ttl_value(),
            store_timeout: config.store_timeout_value(),
        }
    }
}

impl Settings {
    /// A fresh claim of `key` for `target`, with a new owner token.
    pub(crate) fn claim(
        &self,
        target: Target,
        key: IdempotencyKey,
        fingerprint: Fingerprint,
    ) -> Claim {
        Claim {
            id: RecordId::new(target.scope, target.handler, key),
            fingerprint,
            token: OwnerToken::random(),
            lease: self.lease,
            ttl: self.ttl,
        }
    }
}

/// A store operation answered at once (see
/// [`IdempotencyStore::claim_now`](crate::IdempotencyStore::claim_now)), timed into
/// `idempotency_store_seconds{op}`; `None` when the store has to be waited for.
fn answered<T>(
    op: StoreOp,
    now: impl FnOnce() -> Option<StoreResult<T>>,
) -> Option<StoreResult<T>> {
    let started = Instant::now();
    let result = now()?;
    metrics::store_time(op, started.elapsed());
    Some(result)
}

/// One attempt at a store operation: answered at once when the store can, otherwise waited for
/// with [`timed`], boxed (a store that has to be waited for costs a round trip anyway, and this
/// future is part of every request's).
pub(crate) async fn store_call<T, F: Future<Output = StoreResult<T>>>(
    op: StoreOp,
    timeout: Duration,
    now: impl FnOnce() -> Option<StoreResult<T>>,
    call: impl FnOnce() -> F,
) -> StoreResult<T> {
    match answered(op, now) {
        Some(result) => result,
        None => Box::pin(timed(op, timeout, call())).await,
    }
}

/// One store operation that has to be waited for, timed into `idempotency_store_seconds{op}`
/// and bounded by `timeout` (a timeout is a transient error). The clock is read twice: the
/// start (which also sets the deadline) and the end. The timer is made only if the store does
/// not answer in the first poll; a timeout too long to be a deadline is none, as with
/// `tokio::time::timeout`.
pub(crate) fn timed<T>(
    op: StoreOp,
    timeout: Duration,
    call: impl Future<Output = StoreResult<T>>,
) -> impl Future<Output = StoreResult<T>> {
    async move {
        let started = Instant::now();
        let deadline = started.checked_add(timeout);
        let mut call = pin!(call);
        // Boxed: a store that makes a timer waits for a round trip anyway.
        let mut timer: Option<Pin<Box<Sleep>>> = None;
        let result = std::future::poll_fn(|cx| {
            if let Poll::Ready(result) = call.as_mut().poll(cx) {
                return Poll::Ready(result);
            }
            if let (None, Some(deadline)) = (&timer, deadline) {
                timer = Some(Box::pin(tokio::time::sleep_until(deadline)));
            }
            match timer.as_mut().map(|timer| timer.as_mut().poll(cx)) {
                Some(Poll::Ready(())) => Poll::Ready(Err(StoreError::transient(format!(
                    "the store did not answer {} within {timeout:?}",
                    op.label()
                )))),
                _ => Poll::Pending,
            }
        })
        .await;
        metrics::store_time(op, started.elapsed());
        result
    }
}

/// For the operations off the fast path: no answer at once, call the store.
fn waits<T>() -> Option<StoreResult<T>> {
    None
}

/// Runs `call` (or `now`, when it answers) up to `settings.retries` times in all, sleeping
/// `backoff.delay(attempt)` between attempts. Permanent errors are not retried.
///
/// The first attempt is made when this is called. When `now` answers it with success (the
/// memory store always does), the future returned holds just that answer: the retry loop,
/// its timers and the store's own future are made (boxed) only when they may be needed, so
/// that the future of every request stays small.
pub(crate) fn with_retries<'a, T: Send + 'a>(
    store: &'a Store,
    settings: &'a Settings,
    handler: &'a Cow<'static, str>,
    op: StoreOp,
    mut now: impl FnMut() -> Option<StoreResult<T>> + Send + 'a,
    call: impl FnMut() -> BoxFuture<'a, StoreResult<T>> + Send + 'a,
) -> impl Future<Output = StoreResult<T>> + Send + 'a {
    match answered(op, &mut now) {
        Some(Ok(value)) => Either::Left(std::future::ready(Ok(value))),
        first => Either::Right(Box::pin(retrying(
            store, settings, handler, op, first, now, call,
        ))),
    }
}

/// The loop of [`with_retries`], given the first attempt's answer if the store gave one at once.
fn retrying<'a, T: Send + 'a>(
    store: &'a Store,
    settings: &'a Settings,
    handler: &'a Cow<'static, str>,
    op: StoreOp,
    first: Option<StoreResult<T>>,
    mut now: impl FnMut() -> Option<StoreResult<T>> + Send + 'a,
    mut call: impl FnMut() -> BoxFuture<'a, StoreResult<T>> + Send + 'a,
) -> impl Future<Output = StoreResult<T>> + Send + 'a {
    async move {
        let mut attempt = 0;
        let mut result = match first {
            Some(result) => result,
            None => timed(op, settings.store_timeout, call()).await,
        };
        loop {
            match result {
                Ok(value) => return Ok(value),
                Err(error) if error.is_transient() && attempt + 1 < settings.retries => {
                    metrics::storage_retry(handler);
                    let delay = settings.backoff.delay(attempt, store.jitter());
                    tracing::warn!(op = op.label(), attempt = attempt + 1, ?delay, %error, "idempotency store write failed; retrying");
                    // Boxed, so that the retry's timer does not widen this future.
                    Box::pin(tokio::time::sleep(delay)).await;
                    attempt += 1;
                    result = store_call(op, settings.store_timeout, &mut now, &mut call).await;
                }
                Err(error) => return Err(error),
            }
        }
    }
}

/// Stores the response; when every attempt fails, marks the record FAILED_STORAGE (also
/// retried). If even that fails, the record stays IN_PROGRESS and its lease expiry makes it
/// recoverable.
pub(crate) fn persist(
    store: &Store,
    settings: &Settings,
    claim: &Claim,
    key: &IdempotencyKey,
    response: &Arc<StoredResponse>,
) -> impl Future<Output = ()> {
    async move {
        let handler = &claim.id.handler;
        let backend = store.backend();
        let completed = with_retries(
            store,
            settings,
            handler,
            StoreOp::Complete,
            || backend.complete_now(claim, response),
            || backend.complete(claim, response),
        )
        .await;
        let error = match completed {
            Ok(true) => return,
            Ok(false) => {
                tracing::warn!(
                    key_prefix = key.prefix(),
                    "the claim was lost before the response could be stored (its lease expired and another request took it over); this response was not stored"
                );
                return;
            }
            Err(error) => error,
        };
        metrics::storage_failure(handler);
        tracing::error!(
            key_prefix = key.prefix(),
            attempts = settings.retries,
            %error,
            "the response could not be stored; marking the key FAILED_STORAGE so that a retry runs the handler again"
        );
        let marked = with_retries(store, settings, handler, StoreOp::Fail, waits, || {
            backend.fail(claim)
        })
        .await;
        if let Err(error) = marked {
            tracing::error!(
                key_prefix = key.prefix(),
                %error,
                "the key could not be marked FAILED_STORAGE either; it stays IN_PROGRESS until its lease expires"
            );
        }
    }
}

/// Deletes the claim so that a retry runs the handler again (5xx, panic, oversized body).
/// If that fails, the lease expiry frees the key.
pub(crate) fn release(
    store: &Store,
    settings: &Settings,
    claim: &Claim,
    key: &IdempotencyKey,
) -> impl Future<Output = ()> {
    async move {
        let backend = store.backend();
        let released = with_retries(
            store,
            settings,
            &claim.id.handler,
            StoreOp::Release,
            waits,
            || backend.release(claim),
        )
        .await;
        if let Err(error) = released {
            tracing::warn!(
                key_prefix = key.prefix(),
                %error,
                "the claim could not be released; the key is free again when its lease expires"
            );
        }
    }
}

/// Runs `work` while renewing the claim's lease every third of the lease, so a slow handler
/// in a live process is never taken over.
///
/// `work` is pinned by the caller, so that this future holds a pointer to it rather than a
/// second copy. Most handlers finish in their first poll: the renewals (a timer and a store
/// call, boxed) are made only when the work is still pending after it.
pub(crate) fn renewing<'a, W: Future + 'a>(
    store: &'a Store,
    settings: &'a Settings,
    claim: &'a Claim,
    mut work: Pin<&'a mut W>,
) -> impl Future<Output = W::Output> + 'a {
    let every = (settings.lease / 3).max(Duration::from_millis(1));
    let first = Instant::now() + every;
    let mut renewals = None;
    std::future::poll_fn(move |cx| {
        if let Poll::Ready(out) = work.as_mut().poll(cx) {
            return Poll::Ready(out);
        }
        let renewals = renewals
            .get_or_insert_with(|| Box::pin(renew_every(store, settings, claim, first, every)));
        // Renewals never end: polling them only sets the wake-up for the next one.
        match renewals.as_mut().poll(cx) {
            Poll::Ready(never) => match never {},
            Poll::Pending => Poll::Pending,
        }
    })
}

/// Renews the claim's lease at `first`, then every `every`, for as long as it is polled.
async fn renew_every(
    store: &Store,
    settings: &Settings,
    claim: &Claim,
    first: Instant,
    every: Duration,
) -> Infallible {
    let mut ticks = tokio::time::interval_at(first, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match timed(
            StoreOp::Renew,
            settings.store_timeout,
            store.backend().renew(claim),
        )
        .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(
                    "the claim's lease could not be renewed: the record is no longer owned by this request"
                );
            }
            Err(error) => tracing::warn!(%error, "the claim's lease could not be renewed"),
        }
    }
}
