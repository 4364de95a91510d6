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
//!        IN_PROGRESS, live lease ► Conflict { retry_after: the hint }, or, for a call that may
//!                                  wait: wait for the claim to end and decide again
//!   └─ a new key, its scope at the store's quota ► OverQuota { retry_after }
//! ```
//!
//! It knows keys, fingerprints, records, leases and payloads; an adapter turns its protocol
//! into a [`Job`] and a piece of work, and the [`Verdict`] back into its protocol's answer.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::FutureExt;

use crate::engine::decide::{Decision, decide};
use crate::engine::handle::Store;
use crate::engine::job::Job;
use crate::engine::metrics::{self, StoreOp};
use crate::engine::outcome::Outcome;
use crate::engine::persist;
use crate::engine::record::Payload;
use crate::engine::store::{Isolation, Ownership, StoreError, StoreTransaction};
use crate::engine::timed::attempt;
use crate::engine::wait;

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
    /// The key is new and its scope is at the store's quota of live records; nothing ran.
    OverQuota {
        /// When room is expected.
        retry_after: Duration,
    },
    /// The store could not be reached to claim the key (or to open a transactional run's
    /// transaction); nothing ran.
    Unavailable(StoreError),
    /// A transactional run's commit failed, or found its claim taken over: none of its writes
    /// happened, and the key is free to run again.
    CommitFailed,
}

/// What the executor lends a transactional run's work: the transaction its writes go
/// through, and where it is handed back when the work is done with it.
pub struct Lent {
    /// The transaction.
    #[cfg_attr(
        not(feature = "sqlx"),
        expect(dead_code, reason = "only the SQL stores lend transactions")
    )]
    pub(crate) transaction: Box<dyn StoreTransaction>,
    /// Where it is handed back.
    pub(crate) back: TransactionSlot,
}

/// The work's own handle on its lent transaction (a backend's `Tx`), made from what the
/// executor lends.
pub trait Lendable: Sized + Send + 'static {
    /// Takes the lent transaction; `None` when it is not this handle's kind (a Postgres `Tx`
    /// for a store on SQLite), in which case the transaction is rolled back.
    fn lend(lent: Lent) -> Option<Self>;
}

/// Where a lent transaction is handed back (the lender and the borrower both hold it).
#[derive(Clone, Default)]
pub(crate) struct TransactionSlot(Arc<Mutex<Option<Box<dyn StoreTransaction>>>>);

impl TransactionSlot {
    /// Hands a transaction back.
    #[cfg_attr(
        not(feature = "sqlx"),
        expect(dead_code, reason = "only the SQL stores lend transactions")
    )]
    pub(crate) fn put(&self, transaction: Box<dyn StoreTransaction>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(transaction);
    }

    fn take(&self) -> Option<Box<dyn StoreTransaction>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// Runs one idempotent call: claims the job's key, decides, and runs the work at most once
/// per key under a renewed lease, storing or releasing what it settles on. `work` is given
/// the transaction of a transactional run, and nothing otherwise.
#[allow(clippy::manual_async_fn)] // an `async` block on purpose: tests/benches/overhead.rs
pub(crate) fn execute<T, W>(
    store: Store,
    job: Arc<Job>,
    work: impl FnOnce(Option<Lent>) -> W,
) -> impl Future<Output = Verdict<T>>
where
    W: Future<Output = Settle<T>>,
{
    async move {
        let backend = store.backend();
        let claimed = attempt(StoreOp::Claim, job.settings.store_timeout, || {
            backend.claim(&job.claim)
        })
        .await;
        let mut decision = claimed.map(|claimed| decide(claimed, &job.claim.fingerprint));
        let mut waited = false;
        if let (Ok(conflict @ Decision::Conflict { .. }), Some(wait)) =
            (&decision, job.settings.wait)
        {
            // Boxed: only waiting calls pay for its state, not every call's future.
            decision = Box::pin(wait::wait_for(&store, &job, wait, conflict.clone())).await;
            waited = true;
        }
        let outcome = match &decision {
            Err(_) => Outcome::StoreUnavailable,
            Ok(Decision::Replay(_)) if waited => Outcome::ReplayedAfterWait,
            Ok(decision) => decision.outcome(),
        };
        metrics::outcome(&job.claim.id.handler, outcome);
        match decision {
            Err(error) => {
                tracing::warn!(%error, "the idempotency store could not be reached; nothing ran");
                Verdict::Unavailable(error)
            }
            Ok(Decision::Execute(how)) => {
                tracing::debug!(?how, waited, "claimed; running");
                Box::pin(run(&store, &job, work)).await
            }
            Ok(Decision::Replay(payload)) => Verdict::Replay(payload),
            Ok(Decision::Mismatch) => Verdict::Mismatch,
            Ok(Decision::Conflict { lease_remaining }) => Verdict::Conflict {
                retry_after: store.run_times().hint(&job, lease_remaining),
            },
            Ok(Decision::OverQuota { retry_after }) => {
                tracing::info!(
                    retry_after_ms = retry_after.as_millis() as u64,
                    "the scope is at its quota of live records; nothing ran"
                );
                Verdict::OverQuota { retry_after }
            }
        }
    }
}

/// Runs the work while the store's lease keeper renews the claim, then stores or releases:
/// through the store, or, for a transactional run, in the work's own transaction.
#[allow(clippy::manual_async_fn)] // an `async` block on purpose: tests/benches/overhead.rs
fn run<'a, T, W>(
    store: &'a Store,
    job: &'a Arc<Job>,
    work: impl FnOnce(Option<Lent>) -> W + 'a,
) -> impl Future<Output = Verdict<T>> + 'a
where
    W: Future<Output = Settle<T>>,
{
    async move {
        let held = store.leases().hold(store.shared_backend(), job);
        if held.yield_first {
            tokio::task::yield_now().await;
        }
        let lent = match job.settings.transactional {
            None => None,
            Some(isolation) => match begin(store, job, isolation).await {
                Ok(transaction) => Some(Lent {
                    transaction,
                    back: TransactionSlot::default(),
                }),
                Err(error) => {
                    tracing::warn!(%error, "the transaction could not be opened; releasing the claim");
                    persist::release(store, job).await;
                    return Verdict::Unavailable(error);
                }
            },
        };
        let back = lent.as_ref().map(|lent| lent.back.clone());
        let started = tokio::time::Instant::now();
        let settled = AssertUnwindSafe(work(lent)).catch_unwind().await;
        if let Ok(Settle::Keep(..)) = settled {
            store
                .run_times()
                .record(&job.claim.id.handler, started.elapsed());
        }
        let transaction = back.and_then(|back| back.take());
        let verdict = settle(store, job, settled, transaction).await;
        drop(held);
        ended(store, job).await;
        verdict
    }
}

/// Stores the payload the work settled on, or releases the claim (a release, or a panic):
/// through the store, or, for a transactional run, in the work's own transaction.
#[allow(clippy::manual_async_fn)] // an `async` block on purpose: tests/benches/overhead.rs
fn settle<'a, T: 'a>(
    store: &'a Store,
    job: &'a Job,
    settled: Result<Settle<T>, Box<dyn Any + Send>>,
    transaction: Option<Box<dyn StoreTransaction>>,
) -> impl Future<Output = Verdict<T>> + 'a {
    async move {
        match settled {
            Ok(Settle::Keep(payload, answer)) => match job.settings.transactional {
                None => {
                    persist::persist(store, job, &payload).await;
                    Verdict::Ran(answer)
                }
                Some(_) => match commit(store, job, transaction, &payload).await {
                    true => Verdict::Ran(answer),
                    false => Verdict::CommitFailed,
                },
            },
            Ok(Settle::Release(answer)) => {
                undo(store, job, transaction).await;
                Verdict::Ran(answer)
            }
            Err(panic) => {
                tracing::error!("the work panicked; releasing the claim");
                undo(store, job, transaction).await;
                Verdict::Panicked(panic)
            }
        }
    }
}

/// Rings the waiters of the key whose claim just ended: those of this process at once, and,
/// for a handler that waits, those of other processes through the store. An announcement
/// that fails costs those waiters one poll.
async fn ended(store: &Store, job: &Job) {
    store.waiters().ring(&job.claim.id);
    if job.settings.wait.is_some() {
        let backend = store.backend();
        if let Err(error) = attempt(StoreOp::Announce, job.settings.store_timeout, || {
            backend.announce(&job.claim.id)
        })
        .await
        {
            tracing::debug!(%error, "the end of the claim could not be announced; waiters elsewhere find it at their next poll");
        }
    }
}

/// Opens a transactional run's transaction, bounded by the store timeout.
async fn begin(
    store: &Store,
    job: &Job,
    isolation: Isolation,
) -> Result<Box<dyn StoreTransaction>, StoreError> {
    let backend = store.backend();
    let timeout = job.settings.store_timeout;
    attempt(StoreOp::Begin, timeout, || match backend.begin(isolation) {
        Some(reply) => reply,
        None => {
            tracing::error!(
                "this store cannot open a transaction: `transactional` needs a store on a SQL database (PostgresStore, SqliteStore)"
            );
            crate::engine::store::Reply::Ready(Err(StoreError::permanent(
                "this store cannot open a transaction",
            )))
        }
    })
    .await
}

/// Stores the payload in the work's transaction and commits; answers whether both happened.
/// A commit is not retried: when it fails, nothing happened, and the claim is released.
async fn commit(
    store: &Store,
    job: &Job,
    transaction: Option<Box<dyn StoreTransaction>>,
    payload: &Arc<Payload>,
) -> bool {
    let handler = &job.claim.id.handler;
    let key_prefix = job.claim.id.key.prefix();
    let Some(transaction) = transaction else {
        tracing::error!(
            key_prefix,
            "the transaction was not handed back (the work kept its `Tx` beyond its run); nothing was committed"
        );
        metrics::storage_failure(handler);
        persist::release(store, job).await;
        return false;
    };
    let started = tokio::time::Instant::now();
    let committed = transaction.commit(&job.claim, payload).await;
    metrics::store_time(StoreOp::Commit, started.elapsed());
    match committed {
        Ok(Ownership::Held) => true,
        Ok(Ownership::Lost) => {
            tracing::warn!(
                key_prefix,
                "the claim was taken over while the work ran (its lease expired); its transaction was rolled back"
            );
            false
        }
        Err(error) => {
            metrics::storage_failure(handler);
            tracing::error!(key_prefix, %error, "the transaction could not be committed; none of its writes happened, and the key is free to run again");
            persist::release(store, job).await;
            false
        }
    }
}

/// Rolls back the transaction the work handed back, if any, and releases the claim.
async fn undo(store: &Store, job: &Job, transaction: Option<Box<dyn StoreTransaction>>) {
    rollback(transaction).await;
    persist::release(store, job).await;
}

/// Rolls back a transaction the work handed back, if any (one it kept rolls back when dropped).
async fn rollback(transaction: Option<Box<dyn StoreTransaction>>) {
    if let Some(transaction) = transaction
        && let Err(error) = transaction.rollback().await
    {
        tracing::warn!(%error, "the transaction could not be rolled back; the database ends it with the connection");
    }
}
