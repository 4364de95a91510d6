//! A store wrapper that fails chosen operations a chosen number of times, so storage-failure
//! paths can be tested without a database (in this crate's tests and in yours). It is a
//! [`Hooked`] store, so every operation passes through it by construction.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::engine::store::{StoreError, StoreErrorKind};
use crate::stores::hooked::{Gate, Hooked, Op, StoreHook};

const OPS: usize = Op::ALL.len();

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
pub type FailingStore<S> = Hooked<S, Failures>;

/// The failure plan of a [`FailingStore`]: which operations fail, how often, and how many
/// calls each saw.
pub struct Failures {
    plans: Mutex<[Plan; OPS]>,
    calls: [AtomicU64; OPS],
    failures: [AtomicU64; OPS],
}

impl<S> Hooked<S, Failures> {
    /// Wraps `inner`, failing nothing yet.
    pub fn new(inner: S) -> Self {
        Hooked::with(inner, Failures::default())
    }

    /// The next `times` calls of `op` fail with a transient error.
    pub fn fail_next(&self, op: Op, times: u64) -> &Self {
        self.hook().plan(op, times, StoreErrorKind::Transient);
        self
    }

    /// The next `times` calls of `op` fail with a permanent error.
    pub fn fail_next_permanently(&self, op: Op, times: u64) -> &Self {
        self.hook().plan(op, times, StoreErrorKind::Permanent);
        self
    }

    /// Every call of `op` fails (transiently) until [`FailingStore::heal`].
    pub fn fail_always(&self, op: Op) -> &Self {
        self.hook().plan(op, u64::MAX, StoreErrorKind::Transient);
        self
    }

    /// Every call of every operation fails, as in an outage.
    pub fn outage(&self) -> &Self {
        for op in Op::ALL {
            self.fail_always(op);
        }
        self
    }

    /// `op` stops failing.
    pub fn heal(&self, op: Op) -> &Self {
        self.hook().plan(op, 0, StoreErrorKind::Transient);
        self
    }

    /// Every operation stops failing.
    pub fn heal_all(&self) -> &Self {
        for op in Op::ALL {
            self.heal(op);
        }
        self
    }

    /// How many times `op` was called, failed calls included.
    pub fn calls(&self, op: Op) -> u64 {
        self.hook().calls[op as usize].load(Ordering::SeqCst)
    }

    /// How many calls of `op` were made to fail.
    pub fn failures(&self, op: Op) -> u64 {
        self.hook().failures[op as usize].load(Ordering::SeqCst)
    }
}

impl Default for Failures {
    fn default() -> Self {
        Failures {
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
}

impl Failures {
    fn plan(&self, op: Op, remaining: u64, kind: StoreErrorKind) {
        let mut plans = self.plans.lock().unwrap_or_else(|p| p.into_inner());
        plans[op as usize] = Plan { remaining, kind };
    }

    fn check(&self, op: Op) -> Result<(), StoreError> {
        self.calls[op as usize].fetch_add(1, Ordering::SeqCst);
        let mut plans = self.plans.lock().unwrap_or_else(|p| p.into_inner());
        let plan = &mut plans[op as usize];
        if plan.remaining == 0 {
            return Ok(());
        }
        if plan.remaining != u64::MAX {
            plan.remaining -= 1;
        }
        self.failures[op as usize].fetch_add(1, Ordering::SeqCst);
        let message = format!("injected failure of {op:?}");
        Err(match plan.kind {
            StoreErrorKind::Transient => StoreError::transient(message),
            StoreErrorKind::Permanent => StoreError::permanent(message),
        })
    }
}

impl StoreHook for Failures {
    fn before(&self, op: Op) -> Gate {
        match self.check(op) {
            Ok(()) => Gate::Pass,
            Err(error) => Gate::Fail(error),
        }
    }
}
