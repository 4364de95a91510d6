//! Stores: the [`IdempotencyStore`] trait every backend implements, and the [`Store`] handle
//! that handlers receive.
//!
//! Every method is one round trip: a claim either takes the key (new, expired, abandoned or
//! FAILED_STORAGE records) or returns the record that stands, so replay, mismatch and
//! conflict need no second query. Time (leases, expiry) is judged by the store's own clock.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::backoff::Jitter;
use crate::record::{Claim, ClaimOutcome, Record, RecordId, StoredResponse};

#[cfg(feature = "postgres")]
mod connections;
mod failing;
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod sql;
#[cfg(feature = "sqlite")]
mod sqlite;

pub use failing::{FailingStore, Op};
pub use memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use postgres::{CLAIM_ATTEMPTS, PostgresStore};
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub use sql::{DEFAULT_TABLE, InvalidTableName};
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;

/// A boxed, `Send` future: what the trait's methods return, so stores can be `dyn`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The result of a store operation.
pub type StoreResult<T> = Result<T, StoreError>;

/// A place where idempotency records live.
///
/// Methods that act on a claimed record (`renew`, `complete`, `fail`, `release`) answer
/// `Ok(false)` when the record is no longer owned by the claim's token (it was taken over
/// after the lease expired, or it expired): nothing was written.
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Takes the key, or returns the record that stands. One statement.
    ///
    /// The claim succeeds when there is no record, when the record has expired (whatever its
    /// fingerprint), or when the record has the same fingerprint and is FAILED_STORAGE or
    /// IN_PROGRESS with an expired lease. Otherwise nothing is written and the record is
    /// returned.
    fn claim<'a>(&'a self, claim: &'a Claim) -> BoxFuture<'a, StoreResult<ClaimOutcome>>;

    /// Extends a live claim's lease to `claim.lease` from now.
    fn renew<'a>(&'a self, claim: &'a Claim) -> BoxFuture<'a, StoreResult<bool>>;

    /// Stores the response; the record becomes COMPLETED and expires `claim.ttl` from now.
    fn complete<'a>(
        &'a self,
        claim: &'a Claim,
        response: &'a StoredResponse,
    ) -> BoxFuture<'a, StoreResult<bool>>;

    /// Marks the record FAILED_STORAGE: the handler ran, its response is lost.
    fn fail<'a>(&'a self, claim: &'a Claim) -> BoxFuture<'a, StoreResult<bool>>;

    /// Deletes the claimed record, so that a retry runs the handler again.
    fn release<'a>(&'a self, claim: &'a Claim) -> BoxFuture<'a, StoreResult<bool>>;

    /// Reads a record; expired records read as `None`. For inspection and tests: the request
    /// path never calls it.
    fn get<'a>(&'a self, id: &'a RecordId) -> BoxFuture<'a, StoreResult<Option<Record>>>;

    /// Deletes up to `limit` expired records and answers how many it deleted.
    fn purge(&self, limit: usize) -> BoxFuture<'_, StoreResult<u64>>;

    /// [`claim`](Self::claim) answered at once, for a store that never waits (the memory
    /// store): the request path then makes no boxed future for it. `None`, the default, means
    /// "call `claim`"; a store that answers here must answer exactly as `claim` would.
    fn claim_now(&self, claim: &Claim) -> Option<StoreResult<ClaimOutcome>> {
        let _ = claim;
        None
    }

    /// [`complete`](Self::complete) answered at once, as [`claim_now`](Self::claim_now). The
    /// response comes shared, so that a store keeping it in memory can keep it without a copy.
    fn complete_now(
        &self,
        claim: &Claim,
        response: &Arc<StoredResponse>,
    ) -> Option<StoreResult<bool>> {
        let _ = (claim, response);
        None
    }
}

/// A shared store is a store, so `Store::new(arc.clone())` keeps a handle for the test.
impl<S: IdempotencyStore + ?Sized> IdempotencyStore for Arc<S> {
    fn claim<'a>(&'a self, claim: &'a Claim) -> BoxFuture<'a, StoreResult<ClaimOutcome>> {
        (**self).claim(claim)
    }
    fn renew<'a>(&'a self, claim: &'a Claim) -> BoxFuture<'a, StoreResult<bool>> {
        (**self).renew(claim)
    }
    fn complete<'a>(
        &'a self,
        claim: &'a Claim,
        response: &'a StoredResponse,
    ) -> BoxFuture<'a, StoreResult<bool>> {
        (**self).complete(claim, response)
    }
    fn fail<'a>(&'a self, claim: &'a Claim) -> BoxFuture<'a, StoreResult<bool>> {
        (**self).fail(claim)
    }
    fn release<'a>(&'a self, claim: &'a Claim) -> BoxFuture<'a, StoreResult<bool>> {
        (**self).release(claim)
    }
    fn get<'a>(&'a self, id: &'a RecordId) -> BoxFuture<'a, StoreResult<Option<Record>>> {
        (**self).get(id)
    }
    fn purge(&self, limit: usize) -> BoxFuture<'_, StoreResult<u64>> {
        (**self).purge(limit)
    }
    fn claim_now(&self, claim: &Claim) -> Option<StoreResult<ClaimOutcome>> {
        (**self).claim_now(claim)
    }
    fn complete_now(
        &self,
        claim: &Claim,
        response: &Arc<StoredResponse>,
    ) -> Option<StoreResult<bool>> {
        (**self).complete_now(claim, response)
    }
}

/// Whether retrying a failed store operation can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// Connection refused or lost, pool timeout, serialization failure, deadlock, timeout.
    Transient,
    /// Schema missing, permission denied, corrupt data: retrying will not help.
    Permanent,
}

/// A failed store operation.
#[derive(Debug)]
pub struct StoreError {
    kind: StoreErrorKind,
    source: Box<dyn StdError + Send + Sync>,
}

impl StoreError {
    /// A failure that may pass.
    pub fn transient(source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        StoreError {
            kind: StoreErrorKind::Transient,
            source: source.into(),
        }
    }

    /// A failure that retrying will not mend.
    pub fn permanent(source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        StoreError {
            kind: StoreErrorKind::Permanent,
            source: source.into(),
        }
    }

    /// Transient or permanent.
    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }

    /// True when retrying can help.
    pub fn is_transient(&self) -> bool {
        self.kind == StoreErrorKind::Transient
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            StoreErrorKind::Transient => "transient",
            StoreErrorKind::Permanent => "permanent",
        };
        write!(f, "{kind} idempotency store error: {}", self.source)
    }
}

impl StdError for StoreError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.source)
    }
}

/// The handle handlers use: any store, cheap to clone, plus process-wide settings.
///
/// `#[idempotent(store = "...")]` accepts any expression that derefs to a `Store`: a
/// `Store`, an `Arc<Store>`, a `LazyLock<Store>`, a field of the handler's state.
///
/// ```
/// use idem_runtime::{MemoryStore, Store};
///
/// let store = Store::new(MemoryStore::new());
/// let for_another_task = store.clone(); // one Arc increment
/// # drop(for_another_task);
/// ```
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    backend: Arc<dyn IdempotencyStore>,
    jitter: Arc<Jitter>,
    lease: Option<Duration>,
    retries: Option<u32>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("lease_override", &self.inner.lease)
            .field("retries_override", &self.inner.retries)
            .finish_non_exhaustive()
    }
}

impl<S: IdempotencyStore> From<S> for Store {
    fn from(backend: S) -> Self {
        Store::new(backend)
    }
}

impl Store {
    /// Wraps a backend.
    pub fn new(backend: impl IdempotencyStore) -> Self {
        Store::from_arc(Arc::new(backend))
    }

    /// Wraps a shared backend (keep the other `Arc` to inspect it in tests).
    pub fn from_arc(backend: Arc<dyn IdempotencyStore>) -> Self {
        Store {
            inner: Arc::new(Inner {
                backend,
                jitter: Arc::new(Jitter::Random),
                lease: None,
                retries: None,
            }),
        }
    }

    fn with(&self, change: impl FnOnce(&mut Inner)) -> Self {
        let mut inner = (*self.inner).clone();
        change(&mut inner);
        Store {
            inner: Arc::new(inner),
        }
    }

    /// Overrides every handler's `lease` (operators, tests).
    pub fn override_lease(&self, lease: Duration) -> Self {
        self.with(|inner| inner.lease = Some(lease))
    }

    /// Overrides every handler's `retries` (operators, tests); at least 1.
    pub fn override_retries(&self, retries: u32) -> Self {
        self.with(|inner| inner.retries = Some(retries.max(1)))
    }

    /// Draws backoff jitter from a generator seeded with `seed`, for repeatable tests.
    pub fn with_jitter_seed(&self, seed: u64) -> Self {
        self.with(|inner| inner.jitter = Arc::new(Jitter::seeded(seed)))
    }

    /// The backend.
    pub fn backend(&self) -> &dyn IdempotencyStore {
        &*self.inner.backend
    }

    pub(crate) fn jitter(&self) -> &Jitter {
        &self.inner.jitter
    }

    pub(crate) fn lease_override(&self) -> Option<Duration> {
        self.inner.lease
    }

    pub(crate) fn retries_override(&self) -> Option<u32> {
        self.inner.retries
    }

    /// Reads a record (expired ones read as `None`).
    pub async fn get(&self, id: &RecordId) -> StoreResult<Option<Record>> {
        self.backend().get(id).await
    }

    /// Deletes every expired record, in batches of `batch`, and answers how many it deleted.
    pub async fn purge_expired(&self, batch: usize) -> StoreResult<u64> {
        let batch = batch.max(1);
        let mut total = 0;
        loop {
            let n = self.backend().purge(batch).await?;
            total += n;
            if n < batch as u64 {
                return Ok(total);
            }
        }
    }
}
