//! A call's run that is never cancelled halfway, for every adapter that answers a request
//! (docs/contract.md, "Decisions where the shared contract was silent": a hung-up client does
//! not cancel the handler).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::engine::job::Job;

/// The request's run, polled in the request's own task while the client waits, and moved into
/// a task of its own if the request is dropped first (the client hung up, or cancelled the
/// call): it is never cancelled halfway, so its answer is still stored. Running in place
/// spares a spawn per request; the future is boxed so that it can move without being moved.
/// A call that only waits for another's result is told of the hang-up (through its job), and
/// stops waiting. `broken` is the answer when the run itself panics outside the work (whose panics the
/// executor catches).
pub(crate) struct Detach<F: Future + Send + 'static>
where
    F::Output: Send,
{
    task: Option<Pin<Box<F>>>,
    job: Arc<Job>,
    broken: fn() -> F::Output,
}

impl<F: Future + Send + 'static> Detach<F>
where
    F::Output: Send,
{
    pub(crate) fn new(run: F, job: Arc<Job>, broken: fn() -> F::Output) -> Self {
        Detach {
            task: Some(Box::pin(run)),
            job,
            broken,
        }
    }
}

impl<F: Future + Send + 'static> Future for Detach<F>
where
    F::Output: Send,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let broken = self.broken;
        let Some(task) = self.task.as_mut() else {
            return Poll::Ready(broken());
        };
        // The handler's own panics are caught by the executor; this catches the rest, as a
        // task of its own would, and drops the broken future rather than running it on.
        match std::panic::catch_unwind(AssertUnwindSafe(|| task.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(answer)) => {
                self.task = None;
                Poll::Ready(answer)
            }
            Err(_) => {
                self.task = None;
                tracing::error!("the idempotent request's task ended abnormally");
                Poll::Ready(broken())
            }
        }
    }
}

impl<F: Future + Send + 'static> Drop for Detach<F>
where
    F::Output: Send,
{
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            self.job.caller.hang_up();
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn(task)),
                Err(_) => tracing::error!(
                    "an idempotent request was dropped outside a tokio runtime; its handler could not finish"
                ),
            }
        }
    }
}
