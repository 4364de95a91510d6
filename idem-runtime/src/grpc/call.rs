//! The gRPC adapter's entry: what `#[idempotent]` on a tonic service method calls. It reads
//! the key from the request's metadata, fingerprints the method and the encoded request,
//! hands the method's body to the core's executor as a piece of work that captures its
//! answer, and answers the verdict with gRPC status codes (docs/contract.md, "The gRPC
//! adapter").

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::Either;
use tonic::Status;
use tracing::Instrument;

use crate::engine::admit::{Admission, admit};
use crate::engine::config::Config;
use crate::engine::detach::Detach;
use crate::engine::execute::{Lendable, Settle, Verdict, execute};
use crate::engine::fingerprint::Fingerprint;
use crate::engine::handle::Store;
use crate::engine::job::Job;
use crate::engine::key::{IdempotencyKey, KeyError};
use crate::engine::outcome::Outcome;
use crate::engine::record::Target;
use crate::engine::scope::Scope;
use crate::grpc::answer::{self, Captured, Message};
use crate::grpc::refusal::Refusal;

/// What a tonic unary method answers.
pub type Answer<R> = Result<tonic::Response<R>, Status>;

/// Runs one idempotent gRPC call: the entry point that `#[idempotent]` on a tonic method
/// calls.
///
/// `method` is the method's body, given the request; it runs at most once per key and is
/// never cancelled halfway: if the client cancels the call (or its deadline passes), the call
/// moves into a task of its own and finishes, so its answer is stored whether or not anyone
/// still waits for it. That is why the body must be `'static`: the attribute hands it a clone
/// of the service.
///
/// ```
/// use idem_runtime::grpc;
/// use idem_runtime::{Config, MemoryStore, Scope, Store, Target};
///
/// const CONFIG: Config = Config::new();
///
/// async fn greet(store: &Store, request: tonic::Request<String>) -> grpc::Answer<String> {
///     let target = Target { handler: "greeter::greet".into(), scope: Scope::None };
///     grpc::run(store.clone(), &CONFIG, target, request, |request| async move {
///         Ok(tonic::Response::new(format!("hello {}", request.into_inner())))
///     })
///     .await
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let store = Store::new(MemoryStore::new());
/// let request = || {
///     let mut request = tonic::Request::new("ada".to_owned());
///     request.metadata_mut().insert("idempotency-key", "greeting-0001".parse().unwrap());
///     request
/// };
/// assert_eq!(greet(&store, request()).await.unwrap().into_inner(), "hello ada");
/// let replayed = greet(&store, request()).await.unwrap();
/// assert_eq!(replayed.metadata().get("idempotent-replayed").unwrap(), "true");
/// let refused = greet(&store, tonic::Request::new("ada".to_owned())).await.unwrap_err();
/// assert_eq!(refused.code(), tonic::Code::InvalidArgument);
/// # }
/// ```
pub fn run<M, R, B, F>(
    store: Store,
    config: &Config,
    target: Target,
    request: tonic::Request<M>,
    method: B,
) -> impl Future<Output = Answer<R>> + Send + use<M, R, B, F>
where
    M: Message,
    R: Message,
    B: FnOnce(tonic::Request<M>) -> F + Send + 'static,
    F: Future<Output = Answer<R>> + Send + 'static,
{
    let limit = config.max_stored_body_value();
    match prepare(&store, config, target, &request) {
        Prepared::Unguarded => Either::Left(Either::Left(method(request))),
        Prepared::Refused(status) => Either::Left(Either::Right(std::future::ready(Err(status)))),
        Prepared::Job(job, span) => Either::Right(detach(
            execute(store, job.clone(), move |_| settle(method(request), limit)),
            span,
            job,
        )),
    }
}

/// [`run`] for a transactional method (`#[idempotent(transactional)]`): `method` is also
/// given its `Tx`, a transaction on the store's database opened after the claim, and its
/// writes commit together with the stored answer, or not at all (docs/contract.md,
/// "Transactional mode").
pub fn run_transactional<L, M, R, B, F>(
    store: Store,
    config: &Config,
    target: Target,
    request: tonic::Request<M>,
    method: B,
) -> impl Future<Output = Answer<R>> + Send + use<L, M, R, B, F>
where
    L: Lendable,
    M: Message,
    R: Message,
    B: FnOnce(tonic::Request<M>, L) -> F + Send + 'static,
    F: Future<Output = Answer<R>> + Send + 'static,
{
    let limit = config.max_stored_body_value();
    // A transactional method always has a key: the attribute refuses `optional` with it.
    match prepare(&store, config, target, &request) {
        Prepared::Job(job, span) => Either::Right(detach(
            execute(store, job.clone(), move |lent| async move {
                match lent.and_then(L::lend) {
                    Some(tx) => settle(method(request, tx), limit).await,
                    None => {
                        tracing::error!(
                            "the method's `Tx` is not for this store's database; nothing ran"
                        );
                        Settle::Release(Err(Refusal::Failed.status(None, None)))
                    }
                }
            }),
            span,
            job,
        )),
        Prepared::Refused(status) => Either::Left(std::future::ready(Err(status))),
        Prepared::Unguarded => {
            Either::Left(std::future::ready(Err(refuse(Outcome::MissingKey, None))))
        }
    }
}

/// What a request's key makes of it.
enum Prepared {
    /// No key, and the method's key is optional: it runs with no idempotency at all.
    Unguarded,
    /// Answered before any store access (a missing or invalid key).
    Refused(Status),
    /// An idempotent call to run, in its span.
    Job(Arc<Job>, tracing::Span),
}

/// Reads and checks the key from the metadata entry the method names, and prepares the claim,
/// fingerprinting the method's name and the encoded request message.
fn prepare<M: Message>(
    store: &Store,
    config: &Config,
    target: Target,
    request: &tonic::Request<M>,
) -> Prepared {
    let key = metadata_key(request.metadata(), config.header_value());
    // A store's scope rule reads an HTTP request: the call's metadata are its headers. Copied
    // only for a method that takes its scope from that rule.
    let parts = (matches!(target.scope, Scope::Inherit) && store.is_scoped())
        .then(|| request_parts(request));
    let fingerprint =
        |handler: &str| Fingerprint::of_parts(&[handler.as_bytes(), &request.get_ref().encode()]);
    match admit(store, config, target, key, parts.as_ref(), fingerprint) {
        Admission::Unguarded => Prepared::Unguarded,
        Admission::Refused(outcome, detail) => {
            Prepared::Refused(refuse(outcome, detail.as_deref()))
        }
        Admission::Admitted(job, span) => Prepared::Job(job, span),
    }
}

/// The call as a store's scope rule sees it: a request whose headers are its metadata, with
/// its extensions (what an interceptor put there).
fn request_parts<M>(call: &tonic::Request<M>) -> http::request::Parts {
    let mut request = http::Request::new(());
    *request.headers_mut() = call.metadata().clone().into_headers();
    *request.extensions_mut() = call.extensions().clone();
    request.into_parts().0
}

/// The key from the metadata entry `name` (matched case-insensitively): one value, checked as
/// a header's is.
fn metadata_key(
    metadata: &tonic::metadata::MetadataMap,
    name: &str,
) -> Result<IdempotencyKey, KeyError> {
    let values = metadata.get_all(name);
    IdempotencyKey::from_values(values.iter().map(|value| value.as_encoded_bytes()))
}

/// The method's run as the executor's work: its answer kept, or released when it is an error
/// status that a retry might cure, or when it is over the storable limit.
async fn settle<R, F>(method: F, limit: usize) -> Settle<Answer<R>>
where
    R: Message,
    F: Future<Output = Answer<R>>,
{
    let answer = method.await;
    match answer::capture(&answer, limit) {
        Captured::Keep(payload) => Settle::Keep(payload, answer),
        Captured::Released(code) => {
            tracing::info!(
                ?code,
                "this status releases the claim, so that a retry runs again"
            );
            Settle::Release(answer)
        }
        Captured::TooLarge(size) => {
            tracing::warn!(
                limit,
                size,
                "the answer is over the storable limit; sending it unstored and releasing the claim"
            );
            Settle::Release(answer)
        }
    }
}

/// The executor's run as the call's answer, in its span, detached if the client cancels.
fn detach<R: Message>(
    call: impl Future<Output = Verdict<Answer<R>>> + Send + 'static,
    span: tracing::Span,
    job: Arc<Job>,
) -> impl Future<Output = Answer<R>> + Send {
    Detach::new(call.map(verdict).instrument(span), job, || {
        Err(Refusal::Failed.status(None, None))
    })
}

/// The verdict, in gRPC.
fn verdict<R: Message>(verdict: Verdict<Answer<R>>) -> Answer<R> {
    match verdict {
        Verdict::Ran(answer) => answer,
        Verdict::Panicked(_) => Err(Refusal::Failed.status(None, None)),
        Verdict::Replay(payload) => answer::replay(&payload),
        Verdict::Mismatch => Err(Refusal::Mismatch.status(None, None)),
        Verdict::Conflict { retry_after } => Err(Refusal::Conflict.status(None, Some(retry_after))),
        Verdict::OverQuota { retry_after } => {
            Err(Refusal::QuotaExceeded.status(None, Some(retry_after)))
        }
        Verdict::Unavailable(_) => Err(Refusal::StoreUnavailable.status(None, Some(ONE_SECOND))),
        Verdict::CommitFailed => Err(Refusal::CommitFailed.status(None, Some(ONE_SECOND))),
    }
}

/// The retry delay of a store outage or a failed commit, as on HTTP.
const ONE_SECOND: Duration = Duration::from_secs(1);

fn refuse(outcome: Outcome, detail: Option<&str>) -> Status {
    Refusal::answering(outcome)
        .unwrap_or(Refusal::Failed)
        .status(detail, None)
}
