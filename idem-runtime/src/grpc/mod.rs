//! The gRPC adapter (feature `tonic`, docs/contract.md, "The gRPC adapter"):
//! `#[idempotent(store = self.idem)]` on a unary method of a tonic service implementation,
//! `async fn m(&self, request: tonic::Request<M>) -> Result<tonic::Response<R>, tonic::Status>`.
//!
//! The same executor as an HTTP request (claim, decisions, lease renewal, persistence,
//! waiting, metrics), with gRPC's vocabulary: the key comes from the `idempotency-key`
//! metadata entry, the fingerprint is SHA-256 over the method's name and the encoded request
//! message, and the answers are status codes.
//!
//! | situation | the call answers | method runs |
//! |---|---|---|
//! | key missing, invalid, or given twice | `INVALID_ARGUMENT` | no |
//! | new key (or expired, abandoned, FAILED_STORAGE) | its own answer; kept unless released (below) | yes, once |
//! | same key and request, completed | the stored message or status, its metadata, and `idempotent-replayed: true` | no |
//! | same key, another request | `FAILED_PRECONDITION` | no |
//! | same key, still running elsewhere | `ABORTED` with `retry-after` (seconds) in its metadata; with `wait`, the owner's answer | no |
//! | store unreachable when claiming | `UNAVAILABLE` with `retry-after: 1` | no |
//! | a transactional method's commit failed | `UNAVAILABLE` with `retry-after: 1` | yes; nothing of it committed |
//! | the method answers `UNAVAILABLE`, `INTERNAL`, `UNKNOWN` or `DEADLINE_EXCEEDED`, or panics | that status (`INTERNAL` on a panic) | yes; the claim is released |
//!
//! Every other status is kept and replayed like a message: code, message, details and
//! metadata.

mod answer;
mod call;
mod refusal;

pub use answer::{Message, REPLAYED_METADATA};
pub use call::{Answer, run, run_transactional};
pub use refusal::RETRY_AFTER_METADATA;

/// A service whose idempotent methods can run to the end whatever the client does: the
/// attribute clones it into the call, as axum clones a handler's state.
#[diagnostic::on_unimplemented(
    message = "an idempotent gRPC method needs its service to be `Clone + Send + Sync + 'static`: `{Self}` is not",
    label = "cloned into each idempotent call",
    note = "a call whose client cancels moves into a task of its own and finishes, so that it is never stopped halfway; it takes a clone of the service, as axum clones its state: derive `Clone`, with shared state behind an `Arc`"
)]
pub trait Service: Clone + Send + Sync + 'static {}

impl<T: Clone + Send + Sync + 'static> Service for T {}

/// The service, owned, for the call (what the attribute's expansion calls).
#[doc(hidden)]
pub fn service<S: Service>(service: &S) -> S {
    service.clone()
}
