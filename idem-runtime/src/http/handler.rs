//! The HTTP adapter's entry: what `#[idempotent]` on a handler, and the tower layer, call.
//! It reads the key, hands the handler to the core's executor as a piece of work that
//! captures the response, and answers the verdict in HTTP (docs/contract.md, "What a request
//! meets").

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum_core::response::{IntoResponse, Response};
use futures_util::FutureExt;
use futures_util::future::Either;
use tracing::Instrument;

use crate::engine::admit::{Admission, admit};
use crate::engine::config::Config;
use crate::engine::detach::Detach;
use crate::engine::execute::{Lendable, Settle, Verdict, execute};
use crate::engine::handle::Store;
use crate::engine::job::Job;
use crate::engine::outcome::Outcome;
use crate::engine::record::Target;
use crate::http::problem::Problem;
use crate::http::request::RequestHead;
use crate::http::response::{self, Captured};

/// Runs one idempotent HTTP request: the entry point that `#[idempotent]` calls.
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
    let policy = *config;
    match prepare(&store, config, target, head) {
        Prepared::Unguarded => Either::Left(Either::Left(handler.map(IntoResponse::into_response))),
        Prepared::Refused(response) => Either::Left(Either::Right(std::future::ready(response))),
        Prepared::Job(job, span) => Either::Right(detach(
            execute(store, job.clone(), move |_| respond(handler, policy)),
            span,
            job,
        )),
    }
}

/// [`run`] for a transactional handler (`#[idempotent(transactional)]`): `handler` is called
/// with its `Tx`, a transaction on the store's database opened after the claim, and its writes
/// commit together with the stored response, or not at all (docs/contract.md, "Transactional
/// mode").
pub fn run_transactional<L, C, F>(
    store: Store,
    config: &Config,
    target: Target,
    head: RequestHead,
    handler: C,
) -> impl Future<Output = Response> + Send + use<L, C, F>
where
    L: Lendable,
    C: FnOnce(L) -> F + Send + 'static,
    F: Future + Send + 'static,
    F::Output: IntoResponse,
{
    let policy = *config;
    // A transactional handler always has a key: the attribute refuses `optional` with it.
    match prepare(&store, config, target, head) {
        Prepared::Job(job, span) => Either::Right(detach(
            execute(store, job.clone(), move |lent| async move {
                match lent.and_then(L::lend) {
                    Some(tx) => respond(handler(tx), policy).await,
                    None => {
                        tracing::error!(
                            "the handler's `Tx` is not for this store's database; nothing ran"
                        );
                        Settle::Release(Problem::HandlerPanicked.response(None, None))
                    }
                }
            }),
            span,
            job,
        )),
        Prepared::Refused(response) => Either::Left(std::future::ready(response)),
        Prepared::Unguarded => {
            Either::Left(std::future::ready(problem(Outcome::MissingKey, None, None)))
        }
    }
}

/// What a request's key makes of it.
enum Prepared {
    /// No key, and the handler's key is optional: it runs with no idempotency at all.
    Unguarded,
    /// Answered before any store access (a missing or invalid key).
    Refused(Response),
    /// An idempotent call to run, in its span.
    Job(Arc<Job>, tracing::Span),
}

/// Reads and checks the key, then the scope (counting a refusal), and prepares the claim.
fn prepare(store: &Store, config: &Config, target: Target, head: RequestHead) -> Prepared {
    let (key, fingerprint, parts) = head.key(config.header_value());
    match admit(store, config, target, key, parts.as_deref(), |_| {
        fingerprint
    }) {
        Admission::Unguarded => Prepared::Unguarded,
        Admission::Refused(outcome, detail) => {
            Prepared::Refused(problem(outcome, detail.as_deref(), None))
        }
        Admission::Admitted(job, span) => Prepared::Job(job, span),
    }
}

/// The executor's run as the request's answer, in its span, detached if the client hangs up.
fn detach(
    call: impl Future<Output = Verdict<Response>> + Send + 'static,
    span: tracing::Span,
    job: Arc<Job>,
) -> impl Future<Output = Response> + Send {
    Detach::new(call.map(answer).instrument(span), job, || {
        Problem::HandlerPanicked.response(None, None)
    })
}

/// Marks a response that stands for a failure of the wrapped service rather than its answer
/// (the tower layer's stand-in for a service error): it always releases the claim, whatever
/// the policy says about its status.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NotAnAnswer;

/// The handler's run as the executor's work: its response captured and kept, or released when
/// the handler's policy releases its status (`Config::keeps`: by default a 5xx), when it is
/// over the storable limit, or when its body fails (docs/contract.md, "What a request meets").
#[allow(clippy::manual_async_fn)] // an `async` block on purpose: tests/benches/overhead.rs
fn respond<F>(handler: F, policy: Config) -> impl Future<Output = Settle<Response>>
where
    F: Future,
    F::Output: IntoResponse,
{
    async move {
        let response = handler.await.into_response();
        if response.extensions().get::<NotAnAnswer>().is_some() {
            return Settle::Release(response);
        }
        let status = response.status().as_u16();
        if !policy.keeps(status) {
            tracing::info!(
                status,
                "the handler's policy releases this status: releasing the claim so a retry runs again"
            );
            return Settle::Release(response);
        }
        let limit = policy.max_stored_body_value();
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
}

/// The verdict, in HTTP.
fn answer(verdict: Verdict<Response>) -> Response {
    match verdict {
        Verdict::Ran(response) => response,
        Verdict::Panicked(_) => Problem::HandlerPanicked.response(None, None),
        Verdict::Replay(payload) => response::replay(&payload),
        Verdict::Mismatch => problem(Outcome::Mismatch, None, None),
        Verdict::Conflict { retry_after } => problem(Outcome::Conflict, None, Some(retry_after)),
        Verdict::OverQuota { retry_after } => {
            problem(Outcome::QuotaExceeded, None, Some(retry_after))
        }
        Verdict::Unavailable(_) => problem(
            Outcome::StoreUnavailable,
            None,
            Some(Duration::from_secs(1)),
        ),
        Verdict::CommitFailed => Problem::CommitFailed.response(None, Some(Duration::from_secs(1))),
    }
}

fn problem(outcome: Outcome, detail: Option<&str>, retry_after: Option<Duration>) -> Response {
    Problem::answering(outcome)
        .unwrap_or(Problem::HandlerPanicked)
        .response(detail, retry_after)
}
