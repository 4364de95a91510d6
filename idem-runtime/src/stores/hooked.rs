//! A store wrapped by a hook that sees every operation before the store does: the way to
//! count, time, fail or stall a store's operations in tests, with no method to forward by
//! hand. [`FailingStore`](crate::FailingStore) is one such hook.

use std::sync::Arc;

use crate::engine::inspect::{Inspection, Stats};
use crate::engine::record::{Claim, ClaimOutcome, Payload, Record, RecordId};
use crate::engine::store::{
    Announcements, IdempotencyStore, Isolation, Ownership, Reply, StoreError, StoreTransaction,
};

/// A store operation, as a hook sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// [`IdempotencyStore::claim`]
    Claim,
    /// [`IdempotencyStore::renew`]
    Renew,
    /// [`IdempotencyStore::complete`]
    Complete,
    /// [`IdempotencyStore::fail`]
    Fail,
    /// [`IdempotencyStore::release`]
    Release,
    /// [`IdempotencyStore::get`]
    Get,
    /// [`IdempotencyStore::purge`]
    Purge,
    /// [`IdempotencyStore::begin`]
    Begin,
    /// [`IdempotencyStore::inspect`]
    Inspect,
    /// [`IdempotencyStore::evict`]
    Evict,
    /// [`IdempotencyStore::stats`]
    Stats,
    /// [`IdempotencyStore::announce`]
    Announce,
    /// [`IdempotencyStore::listen`]
    Listen,
}

impl Op {
    /// Every operation.
    pub const ALL: [Op; 13] = [
        Op::Claim,
        Op::Renew,
        Op::Complete,
        Op::Fail,
        Op::Release,
        Op::Get,
        Op::Purge,
        Op::Begin,
        Op::Inspect,
        Op::Evict,
        Op::Stats,
        Op::Announce,
        Op::Listen,
    ];
}

/// What a hook lets happen to one operation.
#[derive(Debug)]
pub enum Gate {
    /// The wrapped store answers.
    Pass,
    /// The operation fails with this error; the wrapped store is not called.
    Fail(StoreError),
    /// The operation never answers (a hung store); the wrapped store is not called.
    Hang,
}

/// Sees every operation of a [`Hooked`] store before the store does.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use idem_runtime::{Gate, Hooked, MemoryStore, Op, Store, StoreHook};
///
/// /// Counts completions.
/// #[derive(Default)]
/// struct Completions(AtomicU64);
///
/// impl StoreHook for Completions {
///     fn before(&self, op: Op) -> Gate {
///         if op == Op::Complete {
///             self.0.fetch_add(1, Ordering::Relaxed);
///         }
///         Gate::Pass
///     }
/// }
///
/// let counted = std::sync::Arc::new(Hooked::with(MemoryStore::new(), Completions::default()));
/// let store = Store::new(counted.clone());
/// # drop(store);
/// assert_eq!(counted.hook().0.load(Ordering::Relaxed), 0);
/// ```
pub trait StoreHook: Send + Sync + 'static {
    /// Decides what happens to `op`.
    fn before(&self, op: Op) -> Gate;
}

/// A store whose every operation passes through a [`StoreHook`] first.
#[derive(Debug)]
pub struct Hooked<S, H> {
    inner: S,
    hook: H,
}

impl<S, H> Hooked<S, H> {
    /// Wraps `inner`, asking `hook` before each operation.
    pub fn with(inner: S, hook: H) -> Self {
        Hooked { inner, hook }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The hook.
    pub fn hook(&self) -> &H {
        &self.hook
    }
}

impl<S: IdempotencyStore, H: StoreHook> Hooked<S, H> {
    /// The one path of every operation: the hook's gate, then the wrapped store.
    fn gate<'a, T: Send + 'a>(
        &'a self,
        op: Op,
        call: impl FnOnce() -> Reply<'a, T>,
    ) -> Reply<'a, T> {
        match self.hook.before(op) {
            Gate::Pass => call(),
            Gate::Fail(error) => Reply::Ready(Err(error)),
            Gate::Hang => Reply::pending(std::future::pending()),
        }
    }
}

impl<S: IdempotencyStore, H: StoreHook> IdempotencyStore for Hooked<S, H> {
    fn claim<'a>(&'a self, claim: &'a Claim) -> Reply<'a, ClaimOutcome> {
        self.gate(Op::Claim, || self.inner.claim(claim))
    }
    fn renew<'a>(&'a self, claim: &'a Claim) -> Reply<'a, Ownership> {
        self.gate(Op::Renew, || self.inner.renew(claim))
    }
    fn complete<'a>(&'a self, claim: &'a Claim, payload: &'a Arc<Payload>) -> Reply<'a, Ownership> {
        self.gate(Op::Complete, || self.inner.complete(claim, payload))
    }
    fn fail<'a>(&'a self, claim: &'a Claim) -> Reply<'a, Ownership> {
        self.gate(Op::Fail, || self.inner.fail(claim))
    }
    fn release<'a>(&'a self, claim: &'a Claim) -> Reply<'a, Ownership> {
        self.gate(Op::Release, || self.inner.release(claim))
    }
    fn get<'a>(&'a self, id: &'a RecordId) -> Reply<'a, Option<Record>> {
        self.gate(Op::Get, || self.inner.get(id))
    }
    fn purge(&self, limit: usize) -> Reply<'_, u64> {
        self.gate(Op::Purge, || self.inner.purge(limit))
    }
    fn inspect<'a>(&'a self, id: &'a RecordId) -> Reply<'a, Option<Inspection>> {
        self.gate(Op::Inspect, || self.inner.inspect(id))
    }
    fn evict<'a>(&'a self, id: &'a RecordId) -> Reply<'a, bool> {
        self.gate(Op::Evict, || self.inner.evict(id))
    }
    fn stats(&self) -> Reply<'_, Stats> {
        self.gate(Op::Stats, || self.inner.stats())
    }
    fn begin(&self, isolation: Isolation) -> Option<Reply<'_, Box<dyn StoreTransaction>>> {
        let reply = self.inner.begin(isolation)?;
        Some(self.gate(Op::Begin, || reply))
    }
    fn announce<'a>(&'a self, id: &'a RecordId) -> Reply<'a, ()> {
        self.gate(Op::Announce, || self.inner.announce(id))
    }
    fn listen(&self) -> Option<Reply<'_, Announcements>> {
        let reply = self.inner.listen()?;
        Some(self.gate(Op::Listen, || reply))
    }
}
