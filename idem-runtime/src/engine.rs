//! The state machine of SPEC section 2: what a request meets, decided in one place.
//!
//! ```text
//! key?  ── missing ──────────────► 400 missing-key (or run plainly when `optional`)
//!   │  ── invalid ──────────────► 400 invalid-key
//!   ▼
//! claim ── store error ─────────► 503 store-unavailable + Retry-After
//!   │  ── acquired (new, expired, abandoned, FAILED_STORAGE) ──► run handler, renewing the lease
//!   │        ├── 5xx / panic / body over the limit ──► release the claim, send
//!   │        └── otherwise ──► store it (retried; else FAILED_STORAGE), then send
//!   └─ existing record:
//!        other fingerprint ─────► 422 key-reused
//!        COMPLETED ─────────────► replay stored bytes + Idempotent-Replayed: true
//!        IN_PROGRESS, live lease ► 409 request-in-progress + Retry-After
//! ```

use std::borrow::Cow;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum_core::response::{IntoResponse, Response};
use futures_util::FutureExt;
use futures_util::future::Either;
use http::{HeaderMap, HeaderName};
use tracing::Instrument;

use crate::capture::{self, Captured};
use crate::config::Config;
use crate::fingerprint::Fingerprint;
use crate::key::{IdempotencyKey, KeyError};
use crate::metrics;
use crate::outcome::{Outcome, Problem};
use crate::persist::{self, Settings};
use crate::record::{Acquired, Claim, ClaimOutcome, Record, RecordState, StoredResponse};
use crate::store::{Store, StoreError};

/// What the engine does with a request once the store has answered its claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The claim is ours: run the handler.
    Execute(Acquired),
    /// Send the stored response again.
    Replay(StoredResponse),
    /// The key was first used with another request: 422.
    Mismatch,
    /// The key's first request is still running: 409, retry after the given time.
    Conflict {
        /// Time left on the owner's lease.
        retry_after: Duration,
    },
}

impl Decision {
    /// The metric outcome of this decision.
    pub fn outcome(&self) -> Outcome {
        match self {
            Decision::Execute(Acquired::New) => Outcome::Executed,
            Decision::Execute(Acquired::Abandoned | Acquired::FailedStorage) => Outcome::Recovered,
            Decision::Replay(_) => Outcome::Replayed,
            Decision::Mismatch => Outcome::Mismatch,
            Decision::Conflict { .. } => Outcome::Conflict,
        }
    }
}

/// Decides from a claim's result and the request's fingerprint.
pub fn decide(claimed: ClaimOutcome, fingerprint: &Fingerprint) -> Decision {
    match claimed {
        ClaimOutcome::Acquired(how) => Decision::Execute(how),
        ClaimOutcome::Existing(Record {
            fingerprint: first, ..
        }) if first != *fingerprint => Decision::Mismatch,
        ClaimOutcome::Existing(Record { state, .. }) => match state {
            RecordState::Completed(response) => Decision::Replay(response),
            RecordState::InProgress { lease_remaining } => Decision::Conflict {
                retry_after: lease_remaining,
            },
            // A store hands back a FAILED_STORAGE record of the same fingerprint only when a
            // racing duplicate took it over first: that duplicate is now in progress.
            RecordState::FailedStorage => Decision::Conflict {
                retry_after: Duration::from_secs(1),
            },
        },
    }
}

/// The first step of every idempotent call: claim the key (one store round trip) and decide,
/// counting the outcome. A store error is counted as `store_unavailable`.
#[allow(clippy::manual_async_fn)] // its arguments held once, as in `persist`
pub(crate) fn claim_and_decide(
    store: &Store,
    settings: &Settings,
    claim: &Claim,
) -> impl Future<Output = Result<Decision, StoreError>> {
    async move {
        let backend = store.backend();
        let claimed = persist::store_call(
            metrics::StoreOp::Claim,
            settings.store_timeout,
            || backend.claim_now(claim),
            || backend.claim(claim),
        )
        .await;
        let decision = claimed.map(|claimed| decide(claimed, &claim.fingerprint));
        let outcome = decision
            .as_ref()
            .map_or(Outcome::StoreUnavailable, Decision::outcome);
        metrics::outcome(&claim.id.handler, outcome);
        decision
    }
}

/// What the engine needs to know of an HTTP request, gathered before the handler runs.
#[derive(Debug, Clone)]
pub struct RequestHead {
    key: KeyHeader,
    fingerprint: Fingerprint,
}

/// Where the key is read from.
#[derive(Debug, Clone)]
enum KeyHeader {
    /// Every header of the request: the key header is chosen later (boxed: the common case
    /// is the one below, and this type is part of every request's future).
    All(Box<HeaderMap>),
    /// The key, read and checked from the one header that carries it: no copy of the other
    /// headers, nor of the key header's value.
    One {
        name: &'static str,
        key: Result<IdempotencyKey, KeyError>,
    },
}

impl RequestHead {
    /// The request's headers (the key is read from them) and its fingerprint.
    pub fn new(headers: HeaderMap, fingerprint: Fingerprint) -> Self {
        RequestHead {
            key: KeyHeader::All(Box::new(headers)),
            fingerprint,
        }
    }

    /// The values of the key header `name` only, when it is known before the request is
    /// handed on; the engine must then be asked for that same header.
    pub fn with_key_header(
        headers: &HeaderMap,
        name: &'static str,
        fingerprint: Fingerprint,
    ) -> Self {
        // The default header's name is built once, not parsed from `name` for every request.
        const DEFAULT: HeaderName = HeaderName::from_static("idempotency-key");
        let values = if name.eq_ignore_ascii_case(DEFAULT.as_str()) {
            headers.get_all(&DEFAULT)
        } else {
            headers.get_all(name)
        };
        RequestHead {
            key: KeyHeader::One {
                name,
                key: IdempotencyKey::from_header_values(values.iter()),
            },
            fingerprint,
        }
    }

    /// The request's fingerprint.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    fn key(self, header: &str) -> (Result<IdempotencyKey, KeyError>, Fingerprint) {
        let key = match self.key {
            KeyHeader::All(headers) => {
                IdempotencyKey::from_header_values(headers.get_all(header).iter())
            }
            KeyHeader::One { name, key } if name.eq_ignore_ascii_case(header) => key,
            // Only a caller that kept another header than it configured gets here.
            KeyHeader::One { .. } => Err(KeyError::Missing),
        };
        (key, self.fingerprint)
    }
}

/// Where an idempotent request is going: its handler and scope.
#[derive(Debug, Clone)]
pub struct Target {
    /// The fully qualified handler name, or the matched route.
    pub handler: Cow<'static, str>,
    /// The scope (empty for none).
    pub scope: String,
}

/// Runs one idempotent HTTP request: the single entry point that `#[idempotent]` calls.
///
/// `handler` is the handler's body as a future; it runs at most once per key and is never
/// cancelled halfway: if the client hangs up, it moves into a task of its own and finishes,
/// so no half-finished claim is left behind and the response is stored whether or not anyone
/// still waits for it.
///
/// The key is read and the claim prepared when `run` is called; the future it returns holds
/// the handler's future once and nothing of the request but the claim.
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
    let settings = Settings::new(config, &store);
    let job = Box::new(Job {
        claim: settings.claim(target, key, fingerprint),
        settings,
        limit: config.max_stored_body_value(),
    });
    Either::Right(claim_and_answer(store, job, handler).instrument(span))
}

/// What an idempotent request's steps share once its claim is prepared. Boxed, so that the
/// request's futures (its own, and the boxed run of its handler) hold a pointer, not 250 bytes:
/// both stay small enough for the allocator's per-thread cache.
struct Job {
    settings: Settings,
    claim: Claim,
    /// The largest response body stored.
    limit: usize,
}

/// Claims, then runs the handler, replays or refuses. (A plain function returning an `async
/// move` block, so that its future holds its arguments once: see `persist`.)
#[allow(clippy::manual_async_fn)]
fn claim_and_answer<F>(
    store: Store,
    job: Box<Job>,
    handler: F,
) -> impl Future<Output = Response> + Send
where
    F: Future + Send + 'static,
    F::Output: IntoResponse,
{
    async move {
        let decision = match claim_and_decide(&store, &job.settings, &job.claim).await {
            Ok(decision) => decision,
            Err(error) => {
                tracing::warn!(%error, "the idempotency store could not be reached; answering 503");
                return problem(
                    Outcome::StoreUnavailable,
                    None,
                    Some(Duration::from_secs(1)),
                );
            }
        };
        match decision {
            Decision::Execute(how) => {
                tracing::debug!(?how, "claimed; running the handler");
                let task = execute(store, job, handler).in_current_span();
                Detach(Some(Box::pin(task))).await
            }
            Decision::Replay(stored) => capture::replay(stored),
            Decision::Mismatch => problem(Outcome::Mismatch, None, None),
            Decision::Conflict { retry_after } => {
                problem(Outcome::Conflict, None, Some(retry_after))
            }
        }
    }
}

fn problem(outcome: Outcome, detail: Option<&str>, retry_after: Option<Duration>) -> Response {
    match outcome.problem() {
        Some(problem) => problem.response(detail, retry_after),
        None => Problem::HandlerPanicked.response(None, None),
    }
}

/// The handler's run, polled in the request's own task while the client waits, and moved
/// into a task of its own if the request is dropped first (the client hung up): it is never
/// cancelled halfway, so its response is still stored. Running in place spares a spawn per
/// request; the future is boxed so that it can move without being moved.
struct Detach<F: Future<Output = Response> + Send + 'static>(Option<Pin<Box<F>>>);

impl<F: Future<Output = Response> + Send + 'static> Future for Detach<F> {
    type Output = Response;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Response> {
        let Some(task) = self.0.as_mut() else {
            return Poll::Ready(Problem::HandlerPanicked.response(None, None));
        };
        // The handler's own panics are caught inside `execute`; this catches the rest, as a
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

/// Runs the handler under a renewed lease, then stores or releases its response. (A plain
/// function returning an `async move` block, so that its future, boxed for every executed
/// request, holds its arguments once: see `persist`.)
#[allow(clippy::manual_async_fn)]
fn execute<F>(store: Store, job: Box<Job>, handler: F) -> impl Future<Output = Response>
where
    F: Future + Send,
    F::Output: IntoResponse,
{
    async move {
        let Job {
            settings,
            claim,
            limit,
        } = &*job;
        let (limit, key) = (*limit, &claim.id.key);
        persist::renewing(&store, settings, claim, std::pin::pin!(async {
            let output = AssertUnwindSafe(handler).catch_unwind().await;
            let response = match output.map(IntoResponse::into_response) {
                Ok(response) => response,
                Err(_) => {
                    tracing::error!("the handler panicked; releasing the claim");
                    persist::release(&store, settings, claim, key).await;
                    return Problem::HandlerPanicked.response(None, None);
                }
            };
            if response.status().is_server_error() {
                tracing::info!(status = response.status().as_u16(), "server error: releasing the claim so a retry runs again");
                persist::release(&store, settings, claim, key).await;
                return response;
            }
            match capture::capture(response, limit).await {
                Captured::Storable(stored, response) => {
                    persist::persist(&store, settings, claim, key, &stored).await;
                    response
                }
                Captured::TooLarge(response) => {
                    tracing::warn!(
                        limit,
                        "the response body is over the storable limit; sending it unstored and releasing the claim"
                    );
                    persist::release(&store, settings, claim, key).await;
                    response
                }
                Captured::BodyFailed(error) => {
                    tracing::error!(%error, "the response body failed while being read; releasing the claim");
                    persist::release(&store, settings, claim, key).await;
                    Problem::HandlerPanicked.response(None, None)
                }
            }
        }))
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn fp(n: u8) -> Fingerprint {
        Fingerprint::from_bytes([n; 32])
    }

    fn existing(n: u8, state: RecordState) -> ClaimOutcome {
        ClaimOutcome::Existing(Record {
            fingerprint: fp(n),
            state,
        })
    }

    #[test]
    fn acquired_claims_execute() {
        for how in [Acquired::New, Acquired::Abandoned, Acquired::FailedStorage] {
            assert_eq!(
                decide(ClaimOutcome::Acquired(how), &fp(1)),
                Decision::Execute(how)
            );
        }
        assert_eq!(
            Decision::Execute(Acquired::New).outcome(),
            Outcome::Executed
        );
        assert_eq!(
            Decision::Execute(Acquired::Abandoned).outcome(),
            Outcome::Recovered
        );
    }

    #[test]
    fn another_fingerprint_is_a_mismatch_in_any_state() {
        let done = StoredResponse {
            status: 200,
            headers: vec![],
            body: Bytes::new(),
        };
        for state in [
            RecordState::Completed(done),
            RecordState::InProgress {
                lease_remaining: Duration::from_secs(3),
            },
            RecordState::FailedStorage,
        ] {
            assert_eq!(decide(existing(2, state), &fp(1)), Decision::Mismatch);
        }
    }

    #[test]
    fn completed_replays_and_in_progress_conflicts() {
        let done = StoredResponse {
            status: 201,
            headers: vec![],
            body: Bytes::from_static(b"x"),
        };
        assert_eq!(
            decide(existing(1, RecordState::Completed(done.clone())), &fp(1)),
            Decision::Replay(done)
        );
        let live = RecordState::InProgress {
            lease_remaining: Duration::from_secs(7),
        };
        assert_eq!(
            decide(existing(1, live), &fp(1)),
            Decision::Conflict {
                retry_after: Duration::from_secs(7)
            }
        );
    }
}
