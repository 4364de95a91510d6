//! Talking to the store on the request path: bounded, timed, retried with backoff.
#![allow(clippy::ptr_arg)] // handler names are `&Cow` so that labels clone for free

use std::borrow::Cow;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

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

/// One store operation, timed into `idempotency_store_seconds{op}` and bounded by
/// `timeout` (a timeout is a transient error).
pub(crate) async fn timed<T>(
    op: StoreOp,
    timeout: Duration,
    call: impl Future<Output = StoreResult<T>>,
) -> StoreResult<T> {
    let started = Instant::now();
    let result = match tokio::time::timeout(timeout, call).await {
        Ok(result) => result,
        Err(_) => Err(StoreError::transient(format!(
            "the store did not answer {} within {timeout:?}",
            op.label()
        ))),
    };
    metrics::store_time(op, started.elapsed());
    result
}

/// Runs `call` up to `settings.retries` times in all, sleeping
/// `backoff.delay(attempt)` between attempts. Permanent errors are not retried.
pub(crate) async fn with_retries<'a, T>(
    store: &'a Store,
    settings: &Settings,
    handler: &Cow<'static, str>,
    op: StoreOp,
    mut call: impl FnMut() -> BoxFuture<'a, StoreResult<T>>,
) -> StoreResult<T> {
    let mut attempt = 0;
    loop {
        match timed(op, settings.store_timeout, call()).await {
            Ok(value) => return Ok(value),
            Err(error) if error.is_transient() && attempt + 1 < settings.retries => {
                metrics::storage_retry(handler);
                let delay = settings.backoff.delay(attempt, store.jitter());
                tracing::warn!(op = op.label(), attempt = attempt + 1, ?delay, %error, "idempotency store write failed; retrying");
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            Err(error) => return Err(error),
        }
    }
}

/// Stores the response; when every attempt fails, marks the record FAILED_STORAGE (also
/// retried). If even that fails, the record stays IN_PROGRESS and its lease expiry makes it
/// recoverable.
pub(crate) async fn persist(
    store: &Store,
    settings: &Settings,
    claim: &Claim,
    key: &IdempotencyKey,
    response: &StoredResponse,
) {
    let handler = &claim.id.handler;
    let backend = store.backend();
    let completed = with_retries(store, settings, handler, StoreOp::Complete, || {
        backend.complete(claim, response)
    })
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
    let marked = with_retries(store, settings, handler, StoreOp::Fail, || {
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

/// Deletes the claim so that a retry runs the handler again (5xx, panic, oversized body).
/// If that fails, the lease expiry frees the key.
pub(crate) async fn release(
    store: &Store,
    settings: &Settings,
    claim: &Claim,
    key: &IdempotencyKey,
) {
    let backend = store.backend();
    let released = with_retries(store, settings, &claim.id.handler, StoreOp::Release, || {
        backend.release(claim)
    })
    .await;
    if let Err(error) = released {
        tracing::warn!(
            key_prefix = key.prefix(),
            %error,
            "the claim could not be released; the key is free again when its lease expires"
        );
    }
}

/// Runs `work` while renewing the claim's lease every third of the lease, so a slow handler
/// in a live process is never taken over.
pub(crate) async fn renewing<T>(
    store: &Store,
    settings: &Settings,
    claim: &Claim,
    work: impl Future<Output = T>,
) -> T {
    let every = (settings.lease / 3).max(Duration::from_millis(1));
    let mut ticks = tokio::time::interval_at(Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let renew = async {
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
    };
    tokio::pin!(work, renew);
    match futures_util::future::select(work, renew).await {
        futures_util::future::Either::Left((out, _)) => out,
        futures_util::future::Either::Right(((), work)) => work.await,
    }
}
