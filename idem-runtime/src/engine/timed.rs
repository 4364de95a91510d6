//! One store call on the request path: timed into `idempotency_store_seconds{op}` and
//! bounded by the store timeout.

use std::future::Future;
use std::pin::{Pin, pin};
use std::task::Poll;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use crate::engine::metrics::{self, StoreOp};
use crate::engine::store::{Reply, StoreError, StoreResult};

/// One attempt at a store operation, timed into `idempotency_store_seconds{op}`. A ready
/// reply is taken as it is; a pending one is waited for, bounded by `timeout` (a timeout is a
/// transient error).
pub(crate) async fn attempt<'a, T>(
    op: StoreOp,
    timeout: Duration,
    call: impl FnOnce() -> Reply<'a, T>,
) -> StoreResult<T> {
    let started = Instant::now();
    match call() {
        Reply::Ready(result) => {
            metrics::store_time(op, started.elapsed());
            result
        }
        // Boxed: a store that has to be waited for costs a round trip anyway, and this
        // future is part of every request's (benches/overhead.rs).
        Reply::Pending(future) => Box::pin(timed(op, timeout, started, future)).await,
    }
}

/// A pending store operation, bounded by `timeout` from `started`. The timer is made only if
/// the store does not answer in the first poll; a timeout too long to be a deadline is none,
/// as with `tokio::time::timeout`.
pub(crate) async fn timed<T>(
    op: StoreOp,
    timeout: Duration,
    started: Instant,
    call: impl Future<Output = StoreResult<T>>,
) -> StoreResult<T> {
    let deadline = started.checked_add(timeout);
    let mut call = pin!(call);
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
