//! The one executor, shared by every adapter (the attribute on handlers, the tower layer,
//! plain functions):
//!
//! ```text
//! claim ── store error ─────────► Unavailable
//!   │  ── acquired (new, expired, abandoned, FAILED_STORAGE) ──► run the work, renewing the lease
//!   │        ├── Settle::Release / panic ──► release the claim
//!   │        └── Settle::Keep(payload) ───► store it (retried; else FAILED_STORAGE)
//!   └─ existing record:
//!        other fingerprint ─────► Mismatch
//!        COMPLETED ─────────────► Replay(payload)
//!        IN_PROGRESS, live lease ► Conflict { retry_after }
//! ```
//!
//! It knows keys, fingerprints, records, leases and payloads; an adapter turns its protocol
//! into a [`Job`] and a piece of work, and the [`Verdict`] back into its protocol's answer.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;

use crate::engine::decide::{Decision, decide};
use crate::engine::handle::Store;
use crate::engine::job::Job;
use crate::engine::metrics::{self, StoreOp};
use crate::engine::outcome::Outcome;
use crate::engine::persist;
use crate::engine::record::Payload;
use crate::engine::store::StoreError;
use crate::engine::timed::attempt;

/// What the adapter makes of the work's output: the payload to keep, or a release, and in
/// both cases the answer for its caller.
pub(crate) enum Settle<T> {
    /// Store the payload (a replay answers with it), then answer.
    Keep(Arc<Payload>, T),
    /// Release the claim, so that a retry runs again (5xx, `Err`, a result too large to
    /// keep), then answer.
    Release(T),
}

/// How a call ended, for the adapter to answer in its protocol.
pub(crate) enum Verdict<T> {
    /// The work ran; its answer.
    Ran(T),
    /// The work panicked; the claim was released. The panic, to resume or report.
    Panicked(Box<dyn Any + Send>),
    /// The key's payload is stored: answer with it again.
    Replay(Arc<Payload>),
    /// The key was first used with another request.
    Mismatch,
    /// The key's first request is still running elsewhere.
    Conflict {
        /// When a retry is likely to find it done.
        retry_after: Duration,
    },
    /// The store could not be reached to claim the key; nothing ran.
    Unavailable(StoreError),
}

/// Runs one idempotent call: claims the job's key, decides, and runs `work` at most once
/// per key under a renewed lease, storing or releasing what it settles on.
pub(crate) async fn execute<T, W>(store: Store, job: Arc<Job>, work: W) -> Verdict<T>
where
    W: Future<Output = Settle<T>>,
{
    let backend = store.backend();
    let claimed = attempt(StoreOp::Claim, job.settings.store_timeout, || {
        backend.claim(&job.claim)
    })
    .await;
    let decision = claimed.map(|claimed| decide(claimed, &job.claim.fingerprint));
    let outcome = decision
        .as_ref()
        .map_or(Outcome::StoreUnavailable, Decision::outcome);
    metrics::outcome(&job.claim.id.handler, outcome);
    match decision {
        Err(error) => {
            tracing::warn!(%error, "the idempotency store could not be reached; nothing ran");
            Verdict::Unavailable(error)
        }
        Ok(Decision::Execute(how)) => {
            tracing::debug!(?how, "claimed; running");
            run(&store, &job, work).await
        }
        Ok(Decision::Replay(payload)) => Verdict::Replay(payload),
        Ok(Decision::Mismatch) => Verdict::Mismatch,
        Ok(Decision::Conflict { retry_after }) => Verdict::Conflict { retry_after },
    }
}

/// Runs the work while the store's lease keeper renews the claim, then stores or releases.
async fn run<T, W>(store: &Store, job: &Arc<Job>, work: W) -> Verdict<T>
where
    W: Future<Output = Settle<T>>,
{
    let held = store.leases().hold(store.shared_backend(), job);
    if held.yield_first {
        tokio::task::yield_now().await;
    }
    let verdict = match AssertUnwindSafe(work).catch_unwind().await {
        Ok(Settle::Keep(payload, answer)) => {
            persist::persist(store, job, &payload).await;
            Verdict::Ran(answer)
        }
        Ok(Settle::Release(answer)) => {
            persist::release(store, job).await;
            Verdict::Ran(answer)
        }
        Err(panic) => {
            tracing::error!("the work panicked; releasing the claim");
            persist::release(store, job).await;
            Verdict::Panicked(panic)
        }
    };
    drop(held);
    verdict
}
