//! The HTTP adapter's entry: what `#[idempotent]` on a handler, and the tower layer, call.
//! It reads the key, hands the handler to the core's executor as a piece of work that
//! captures the response, and answers the verdict in HTTP (docs/contract.md, "What a request
//! meets").

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum_core::response::{IntoResponse, Response};
use futures_util::FutureExt;
use futures_util::future::Either;
use tracing::Instrument;

use crate::engine::config::Config;
use crate::engine::execute::{Settle, Verdict, execute};
use crate::engine::handle::Store;
use crate::engine::job::Job;
use crate::engine::key::KeyError;
use crate::engine::metrics;
use crate::engine::outcome::Outcome;
use crate::engine::record::Target;
use crate::http::problem::Problem;
use crate::http::request::RequestHead;
use crate::http::response::{self, Captured};

/// Runs one idempotent HTTP request: the single entry point that `#[idempotent]` calls.
///
/// `handler` is the handler's body as a future; it runs at most once per key and is never
/// cancelled halfway: if the client hangs up, the request moves into a task of its own and
/// finishes, so no half-finished claim is left behind and the response is stored whether or
/// not anyone still waits for it.
pub fn run<F>(
    store: Store,
    config: &Config,
    target: Target,
    head: RequestHead,
    handler: F,
) -> impl Future<Output = Response> + Send + use<F>
where
    F: Future + Send + 'static,
    F::Output: IntoResponse,
{
    let (key, fingerprint) = head.key(config.header_value());
    let key = match key {
        Ok(key) => key,
        Err(KeyError::Missing) if config.optional_value() => {
            return Either::Left(Either::Left(handler.map(IntoResponse::into_response)));
        }
        Err(error) => {
            let outcome = Outcome::from(&error);
            metrics::outcome(&target.handler, outcome);
            let detail = (!error.is_missing()).then(|| error.to_string());
            let response = problem(outcome, detail.as_deref(), None);
            return Either::Left(Either::Right(std::future::ready(response)));
        }
    };
    let span =
        tracing::info_span!("idempotent", handler = %target.handler, key_prefix = key.prefix());
    let job = Job::new(config, store.overrides(), target, key, fingerprint);
    let work = respond(handler, config.max_stored_body_value());
    let call = execute(store, job, work).map(answer);
    Either::Right(Detach(Some(Box::pin(call.instrument(span)))))
}

/// The handler's run as the executor's work: its response captured and kept, or released when
/// it is a 5xx, over `limit`, or its body fails.
async fn respond<F>(handler: F, limit: usize) -> Settle<Response>
where
    F: Future,
    F::Output: IntoResponse,
{
    let response = handler.await.into_response();
    if response.status().is_server_error() {
        tracing::info!(
            status = response.status().as_u16(),
            "server error: releasing the claim so a retry runs again"
        );
        return Settle::Release(response);
    }
    match response::capture(response, limit).await {
        Captured::Storable(payload, response) => Settle::Keep(payload, response),
        Captured::TooLarge(response) => {
            tracing::warn!(
                limit,
                "the response body is over the storable limit; sending it unstored and releasing the claim"
            );
            Settle::Release(response)
        }
        Captured::BodyFailed(error) => {
            tracing::error!(%error, "the response body failed while being read; releasing the claim");
            Settle::Release(Problem::HandlerPanicked.response(None, None))
        }
    }
}

/// The verdict, in HTTP.
fn answer(verdict: Verdict<Response>) -> Response {
    match verdict {
        Verdict::Ran(response) => response,
        Verdict::Panicked(_) => Problem::HandlerPanicked.response(None, None),
        Verdict::Replay(payload) => response::replay(&payload),
        Verdict::Mismatch => problem(Outcome::Mismatch, None, None),
        Verdict::Conflict { retry_after } => problem(Outcome::Conflict, None, Some(retry_after)),
        Verdict::Unavailable(_) => problem(
            Outcome::StoreUnavailable,
            None,
            Some(Duration::from_secs(1)),
        ),
    }
}

fn problem(outcome: Outcome, detail: Option<&str>, retry_after: Option<Duration>) -> Response {
    Problem::answering(outcome)
        .unwrap_or(Problem::HandlerPanicked)
        .response(detail, retry_after)
}

/// The request's run, polled in the request's own task while the client waits, and moved into
/// a task of its own if the request is dropped first (the client hung up): it is never
/// cancelled halfway, so its response is still stored. Running in place spares a spawn per
/// request; the future is boxed so that it can move without being moved.
struct Detach<F: Future<Output = Response> + Send + 'static>(Option<Pin<Box<F>>>);

impl<F: Future<Output = Response> + Send + 'static> Future for Detach<F> {
    type Output = Response;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Response> {
        let Some(task) = self.0.as_mut() else {
            return Poll::Ready(Problem::HandlerPanicked.response(None, None));
        };
        // The handler's own panics are caught by the executor; this catches the rest, as a
        // task of its own would, and drops the broken future rather than running it on.
        match std::panic::catch_unwind(AssertUnwindSafe(|| task.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(response)) => {
                self.0 = None;
                Poll::Ready(response)
            }
            Err(_) => {
                self.0 = None;
                tracing::error!("the idempotent request's task ended abnormally");
                Poll::Ready(Problem::HandlerPanicked.response(None, None))
            }
        }
    }
}

impl<F: Future<Output = Response> + Send + 'static> Drop for Detach<F> {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn(task)),
                Err(_) => tracing::error!(
                    "an idempotent request was dropped outside a tokio runtime; its handler could not finish"
                ),
            }
        }
    }
}
