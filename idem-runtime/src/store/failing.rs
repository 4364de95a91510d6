//! A store wrapper that fails chosen operations a chosen number of times, so storage-failure
//! paths can be tested without a database (in this crate's tests and in yours).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{BoxFuture, IdempotencyStore, StoreError, StoreErrorKind, StoreResult};
use crate::record::{Claim, ClaimOutcome, Record, RecordId, StoredResponse};

/// A store operation, for [`FailingStore`].
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
}

const OPS: usize = 7;

impl Op {
    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Clone, Copy)]
struct Plan {
    remaining: u64,
    kind: StoreErrorKind,
}

/// Wraps a store and fails chosen operations a chosen number of times, then succeeds.
///
/// ```
/// use std::sync::Arc;
/// use idem_runtime::{FailingStore, MemoryStore, Op, Store};
///
/// let failing = Arc::new(FailingStore::new(MemoryStore::new()));
/// failing.fail_next(Op::Complete, 3); // the next three completions fail, the fourth succeeds
/// let store = Store::new(failing.clone());
/// # drop(store);
/// assert_eq!(failing.calls(Op::Complete), 0);
/// ```
pub struct FailingStore<S> {
    inner: S,
    plans: Mutex<[Plan; OPS]>,
    calls: [AtomicU64; OPS],
    failures: [AtomicU64; OPS],
}

impl<S: IdempotencyStore> FailingStore<S> {
    /// Wraps `inner`, failing nothing yet.
    pub fn new(inner: S) -> Self {
        FailingStore {
            inner,
            plans: Mutex::new(
                [Plan {
                    remaining: 0,
                    kind: StoreErrorKind::Transient,
                }; OPS],
            ),
            calls: Default::default(),
            failures: Default::default(),
        }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn plan(&self, op: Op, remaining: u64, kind: StoreErrorKind) -> &Self {
        let mut plans = self.plans.lock().unwrap_or_else(|p| p.into_inner());
        plans[op.index()] = Plan { remaining, kind };
        self
    }

    /// The next `times` calls of `op` fail with a transient error.
    pub fn fail_next(&self, op: Op, times: u64) -> &Self {
        self.plan(op, times, StoreErrorKind::Transient)
    }

    /// The next `times` calls of `op` fail with a permanent error.
    pub fn fail_next_permanently(&self, op: Op, times: u64) -> &Self {
        self.plan(op, times, StoreErrorKind::Permanent)
    }

    /// Every call of `op` fails (transiently) until [`FailingStore::heal`].
    pub fn fail_always(&self, op: Op) -> &Self {
        self.plan(op, u64::MAX, StoreErrorKind::Transient)
    }

    /// Every call of every operation fails, as in an outage.
    pub fn outage(&self) -> &Self {
        for op in ALL_OPS {
            self.fail_always(op);
        }
        self
    }

    /// `op` stops failing.
    pub fn heal(&self, op: Op) -> &Self {
        self.plan(op, 0, StoreErrorKind::Transient)
    }

    /// Every operation stops failing.
    pub fn heal_all(&self) -> &Self {
        for op in ALL_OPS {
            self.heal(op);
        }
        self
    }

    /// How many times `op` was called, failed calls included.
    pub fn calls(&self, op: Op) -> u64 {
        self.calls[op.index()].load(Ordering::SeqCst)
    }

    /// How many calls of `op` were made to fail.
    pub fn failures(&self, op: Op) -> u64 {
        self.failures[op.index()].load(Ordering::SeqCst)
    }

    fn check(&self, op: Op) -> StoreResult<()> {
        self.calls[op.index()].fetch_add(1, Ordering::SeqCst);
        let mut plans = self.plans.lock().unwrap_or_else(|p| p.into_inner());
        let plan = &mut plans[op.index()];
        if plan.remaining == 0 {
            return Ok(());
        }
        if plan.remaining != u64::MAX {
            plan.remaining -= 1;
        }
        self.failures[op.index()].fetch_add(1, Ordering::SeqCst);
        let message = format!("injected failure of {op:?}");
        Err(match plan.kind {
            StoreErrorKind::Transient => StoreError::transient(message),
            StoreErrorKind::Permanent => StoreError::permanent(message),
        })
    }
}

const ALL_OPS: [Op; OPS] = [
    Op::Claim,
    Op::Renew,
    Op::Complete,
    Op::Fail,
    Op::Release,
    Op::Get,
    Op::Purge,
];

impl<S: IdempotencyStore> IdempotencyStore for FailingStore<S> {
    fn claim<'a>(&'a self, claim: &'a Claim) -> BoxFuture<'a, StoreResult<ClaimOutcome>> {
        match self.check(Op::Claim) {
            Ok(()) => self.inner.claim(claim),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }

    fn renew<'a>(&'a self, claim: &'a Claim) -> BoxFuture<'a, StoreResult<bool>> {
        match self.check(Op::Renew) {
            Ok(()) => self.inner.renew(claim),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }

    fn complete<'a>(
        &'a self,
        claim: &'a Claim,
        response: &'a StoredResponse,
    ) -> BoxFuture<'a, StoreResult<bool>> {
        match self.check(Op::Complete) {
            Ok(()) => self.inner.complete(claim, response),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }

    fn fail<'a>(&'a self, claim: &'a Claim) -> BoxFuture<'a, StoreResult<bool>> {
        match self.check(Op::Fail) {
            Ok(()) => self.inner.fail(claim),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }

    fn release<'a>(&'a self, claim: &'a Claim) -> BoxFuture<'a, StoreResult<bool>> {
        match self.check(Op::Release) {
            Ok(()) => self.inner.release(claim),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }

    fn get<'a>(&'a self, id: &'a RecordId) -> BoxFuture<'a, StoreResult<Option<Record>>> {
        match self.check(Op::Get) {
            Ok(()) => self.inner.get(id),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }

    fn purge(&self, limit: usize) -> BoxFuture<'_, StoreResult<u64>> {
        match self.check(Op::Purge) {
            Ok(()) => self.inner.purge(limit),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }
}
