//! The interface every store implements: one method per operation.
//!
//! Every method is one round trip: a claim either takes the key (new, expired, abandoned or
//! FAILED_STORAGE records) or returns the record that stands, so replay, mismatch and
//! conflict need no second query. Time (leases, expiry) is judged by the store's own clock.
//!
//! A method answers with a [`Reply`]: [`Reply::Ready`] when the store has the answer at once
//! (the memory store always does, so the request path makes no future for it), or
//! [`Reply::Pending`] with a future to wait for. Either way it is the one path for that
//! operation, and a wrapper such as [`FailingStore`](crate::FailingStore) sees every call.

use std::any::Any;
use std::error::Error as StdError;
use std::fmt;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use futures_util::future::Either;

use crate::engine::inspect::{Inspection, Stats};
use crate::engine::record::{Claim, ClaimOutcome, Payload, Record, RecordId};

/// A boxed, `Send` future: what a pending [`Reply`] holds, so stores can be `dyn`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The result of a store operation.
pub type StoreResult<T> = Result<T, StoreError>;

/// A store's answer to one operation: ready now, or a future.
///
/// `.await` works on either:
///
/// ```
/// use idem_runtime::{Reply, StoreResult};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let now: Reply<'_, u64> = Reply::Ready(Ok(3));
/// let later: Reply<'_, u64> = Reply::pending(async { Ok(4) });
/// assert_eq!(now.await.unwrap() + later.await.unwrap(), 7);
/// # }
/// ```
#[must_use = "a store operation does nothing until its reply is awaited"]
pub enum Reply<'a, T> {
    /// The store answered at once.
    Ready(StoreResult<T>),
    /// The store answers when this future completes.
    Pending(BoxFuture<'a, StoreResult<T>>),
}

impl<'a, T> Reply<'a, T> {
    /// An answer to wait for.
    pub fn pending(future: impl Future<Output = StoreResult<T>> + Send + 'a) -> Self {
        Reply::Pending(Box::pin(future))
    }

    /// The answer's value changed by `f`, ready or not.
    pub fn map<U>(self, f: impl FnOnce(T) -> U + Send + 'a) -> Reply<'a, U>
    where
        T: 'a,
    {
        match self {
            Reply::Ready(result) => Reply::Ready(result.map(f)),
            Reply::Pending(future) => Reply::pending(async move { future.await.map(f) }),
        }
    }
}

impl<'a, T: 'a> IntoFuture for Reply<'a, T> {
    type Output = StoreResult<T>;
    type IntoFuture = Either<std::future::Ready<StoreResult<T>>, BoxFuture<'a, StoreResult<T>>>;

    fn into_future(self) -> Self::IntoFuture {
        match self {
            Reply::Ready(result) => Either::Left(std::future::ready(result)),
            Reply::Pending(future) => Either::Right(future),
        }
    }
}

impl<T> fmt::Debug for Reply<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reply::Ready(_) => "Reply::Ready",
            Reply::Pending(_) => "Reply::Pending",
        })
    }
}

/// Whether a write that names a claim's owner token found the record still owned by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a lost claim means nothing was written"]
pub enum Ownership {
    /// The claim still owned the record: the write happened.
    Held,
    /// The record was taken over by another claim (its lease had expired), or it expired:
    /// nothing was written.
    Lost,
}

/// A place where idempotency records live.
///
/// Methods that act on a claimed record (`renew`, `complete`, `fail`, `release`) check the
/// claim's owner token and answer [`Ownership::Lost`] when the record is no longer its own.
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Takes the key, or returns the record that stands. One statement.
    ///
    /// The claim succeeds when there is no record, when the record has expired (whatever its
    /// fingerprint), or when the record has the same fingerprint and is FAILED_STORAGE or
    /// IN_PROGRESS with an expired lease. Otherwise nothing is written and the record is
    /// returned.
    fn claim<'a>(&'a self, claim: &'a Claim) -> Reply<'a, ClaimOutcome>;

    /// Extends a live claim's lease to `claim.lease` from now.
    fn renew<'a>(&'a self, claim: &'a Claim) -> Reply<'a, Ownership>;

    /// Stores the payload; the record becomes COMPLETED and expires `claim.ttl` from now.
    /// The payload comes shared, so that a store keeping it in memory keeps it without a copy.
    fn complete<'a>(&'a self, claim: &'a Claim, payload: &'a Arc<Payload>) -> Reply<'a, Ownership>;

    /// Marks the record FAILED_STORAGE: the work ran, its payload is lost.
    fn fail<'a>(&'a self, claim: &'a Claim) -> Reply<'a, Ownership>;

    /// Deletes the claimed record while it is in progress, so that a retry runs the work
    /// again (a record already completed under the claim is kept).
    fn release<'a>(&'a self, claim: &'a Claim) -> Reply<'a, Ownership>;

    /// Reads a record; expired records read as `None`. For inspection and tests: the request
    /// path never calls it.
    fn get<'a>(&'a self, id: &'a RecordId) -> Reply<'a, Option<Record>>;

    /// Deletes up to `limit` expired records and answers how many it deleted.
    fn purge(&self, limit: usize) -> Reply<'_, u64>;

    /// Shows a record's state, times and sizes, never its body or headers; expired records
    /// read as `None`. For operators (docs/contract.md, "Operating the records").
    fn inspect<'a>(&'a self, id: &'a RecordId) -> Reply<'a, Option<Inspection>>;

    /// Deletes the record in whatever state it is (expired or not), without checking an
    /// owner token: how an operator frees a stuck key. `true` if a record was deleted.
    fn evict<'a>(&'a self, id: &'a RecordId) -> Reply<'a, bool>;

    /// Counts live records by state, and expired ones awaiting a purge.
    fn stats(&self) -> Reply<'_, Stats>;

    /// Opens a transaction on the store's own database, for a transactional run; `None` when
    /// the store has no database to share (the memory store).
    fn begin(&self, isolation: Isolation) -> Option<Reply<'_, Box<dyn StoreTransaction>>> {
        let _ = isolation;
        None
    }

    /// Tells waiters in other processes that the claim on `id` ended (completed, failed or
    /// released), so that they look again; a store without such wake-ups does nothing.
    /// Called only for handlers that wait (docs/contract.md, "Waiting for the in-flight
    /// result").
    fn announce<'a>(&'a self, id: &'a RecordId) -> Reply<'a, ()> {
        let _ = id;
        Reply::Ready(Ok(()))
    }

    /// Starts hearing other processes' announcements, on one connection of its own; `None`
    /// when the store has no wake-ups across processes, and waiters there poll.
    fn listen(&self) -> Option<Reply<'_, Announcements>> {
        None
    }
}

/// What a store's listener hears: announcements from other processes, until the stream ends
/// (then the listener is started again).
pub type Announcements = Pin<Box<dyn Stream<Item = Heard> + Send>>;

/// One thing a store's listener heard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heard {
    /// The claim on the record with this [`RecordId::wake_key`] ended.
    Ended(u64),
    /// Announcements may have been missed (the listening connection was lost and made again):
    /// every waiter looks again.
    Gap,
}

/// A transaction on the store's own database, opened for one transactional run: the work's
/// writes go through it, and the payload is stored in it, so that both commit or neither.
pub trait StoreTransaction: Send + 'static {
    /// Stores the payload under the claim in this transaction, fenced by its owner token, and
    /// commits. [`Ownership::Lost`]: the claim was taken over, and nothing was committed.
    fn commit<'a>(
        self: Box<Self>,
        claim: &'a Claim,
        payload: &'a Arc<Payload>,
    ) -> BoxFuture<'a, StoreResult<Ownership>>;

    /// Rolls the transaction back: none of the work's writes happened.
    fn rollback(self: Box<Self>) -> BoxFuture<'static, StoreResult<()>>;

    /// The backend's own transaction type, for the adapter that lends it to the work.
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send>;
}

/// The isolation level of a transactional run's transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// The database's default (Postgres: READ COMMITTED; SQLite: SERIALIZABLE).
    #[default]
    Default,
    /// READ COMMITTED.
    ReadCommitted,
    /// REPEATABLE READ.
    RepeatableRead,
    /// SERIALIZABLE.
    Serializable,
}

/// A shared store is a store, so `Store::new(arc.clone())` keeps a handle for the test.
impl<S: IdempotencyStore + ?Sized> IdempotencyStore for Arc<S> {
    fn claim<'a>(&'a self, claim: &'a Claim) -> Reply<'a, ClaimOutcome> {
        (**self).claim(claim)
    }
    fn renew<'a>(&'a self, claim: &'a Claim) -> Reply<'a, Ownership> {
        (**self).renew(claim)
    }
    fn complete<'a>(&'a self, claim: &'a Claim, payload: &'a Arc<Payload>) -> Reply<'a, Ownership> {
        (**self).complete(claim, payload)
    }
    fn fail<'a>(&'a self, claim: &'a Claim) -> Reply<'a, Ownership> {
        (**self).fail(claim)
    }
    fn release<'a>(&'a self, claim: &'a Claim) -> Reply<'a, Ownership> {
        (**self).release(claim)
    }
    fn get<'a>(&'a self, id: &'a RecordId) -> Reply<'a, Option<Record>> {
        (**self).get(id)
    }
    fn purge(&self, limit: usize) -> Reply<'_, u64> {
        (**self).purge(limit)
    }
    fn inspect<'a>(&'a self, id: &'a RecordId) -> Reply<'a, Option<Inspection>> {
        (**self).inspect(id)
    }
    fn evict<'a>(&'a self, id: &'a RecordId) -> Reply<'a, bool> {
        (**self).evict(id)
    }
    fn stats(&self) -> Reply<'_, Stats> {
        (**self).stats()
    }
    fn begin(&self, isolation: Isolation) -> Option<Reply<'_, Box<dyn StoreTransaction>>> {
        (**self).begin(isolation)
    }
    fn announce<'a>(&'a self, id: &'a RecordId) -> Reply<'a, ()> {
        (**self).announce(id)
    }
    fn listen(&self) -> Option<Reply<'_, Announcements>> {
        (**self).listen()
    }
}

/// Whether retrying a failed store operation can be expected to help. Informational: every
/// failed write is retried `retries` times whatever its kind, as the contract says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// Connection refused or lost, pool timeout, serialization failure, deadlock, timeout.
    Transient,
    /// Schema missing, permission denied, corrupt data, a trigger's own error.
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

    /// A failure that waiting is unlikely to mend.
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

    /// True when the failure may pass.
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
