//! Lease renewal apart from the work's own poll: one keeper task per store renews every live
//! claim of that store every third of its lease, so a handler that blocks its thread (a
//! synchronous client, heavy CPU) keeps its claim on a multi-thread runtime.
//!
//! A run registers its claim for as long as it runs ([`Leases::hold`]); the keeper sleeps until
//! the earliest renewal is due, renews what is due, and ends when nothing has been held for a
//! while (the next hold starts it again). A renewal that finds the claim lost is counted
//! (`idempotency_lease_lost_total`), logged, and not tried again.

use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use futures_util::future::join_all;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::engine::job::Job;
use crate::engine::metrics::{self, StoreOp};
use crate::engine::store::{IdempotencyStore, Ownership};
use crate::engine::timed::attempt;

/// How long the keeper stays when no claim is held, before it ends.
const IDLE: Duration = Duration::from_secs(5);

/// The claims of one store that are being worked on, and its keeper's schedule.
#[derive(Default)]
pub(crate) struct Leases {
    state: Mutex<State>,
    wake: Notify,
}

#[derive(Default)]
struct State {
    /// Held claims by slot; a freed slot is reused, and `serial` tells its holders apart.
    slots: Vec<Option<Live>>,
    free: Vec<usize>,
    serial: u64,
    /// Whether a keeper task is running, and when it plans to wake next.
    keeper: Option<Instant>,
}

struct Live {
    serial: u64,
    job: Arc<Job>,
    due: Instant,
}

/// A claim due for renewal: its slot, its holder's serial, and its job.
type Due = (usize, u64, Arc<Job>);

/// A claim held for renewal; dropping it stops the renewals.
pub(crate) struct Held<'a> {
    leases: &'a Leases,
    slot: usize,
    serial: u64,
    /// The keeper was started or woken for this claim: the caller should yield once, so that
    /// a keeper scheduled on this thread runs before the work (which may block the thread).
    pub(crate) yield_first: bool,
}

impl Leases {
    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding this lock; should anything, the schedule is still whole.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Renews `job`'s claim on `backend` until the returned guard is dropped.
    pub(crate) fn hold<'a>(
        self: &'a Arc<Self>,
        backend: &Arc<dyn IdempotencyStore>,
        job: &Arc<Job>,
    ) -> Held<'a> {
        let due = Instant::now() + job.renew_every();
        let mut state = self.state();
        state.serial += 1;
        let serial = state.serial;
        let live = Some(Live {
            serial,
            job: Arc::clone(job),
            due,
        });
        let slot = match state.free.pop() {
            Some(slot) => {
                state.slots[slot] = live;
                slot
            }
            None => {
                state.slots.push(live);
                state.slots.len() - 1
            }
        };
        let yield_first = match state.keeper {
            Some(wake) if wake <= due => false,
            Some(_) => {
                state.keeper = Some(due);
                self.wake.notify_one();
                true
            }
            None => match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    state.keeper = Some(due);
                    drop(runtime.spawn(keep(Arc::clone(self), Arc::downgrade(backend))));
                    true
                }
                Err(_) => {
                    tracing::error!(
                        "no tokio runtime: the claim's lease cannot be renewed and expires after its lease"
                    );
                    false
                }
            },
        };
        Held {
            leases: self,
            slot,
            serial,
            yield_first,
        }
    }

    /// The claims due for renewal at `now` (their next renewal scheduled), and when the keeper
    /// should wake next; `None` when nothing is held.
    fn due(&self, now: Instant) -> (Vec<Due>, Option<Instant>) {
        let mut state = self.state();
        let mut due = Vec::new();
        let mut next: Option<Instant> = None;
        for (slot, live) in state.slots.iter_mut().enumerate() {
            let Some(live) = live else { continue };
            if live.due <= now {
                due.push((slot, live.serial, Arc::clone(&live.job)));
                live.due = now + live.job.renew_every();
            }
            next = Some(next.map_or(live.due, |next| next.min(live.due)));
        }
        state.keeper = Some(next.unwrap_or(now + IDLE));
        (due, next)
    }

    /// Ends the keeper if nothing was held since it went idle; answers whether it ended.
    fn retire_if_idle(&self) -> bool {
        let mut state = self.state();
        if state.slots.iter().any(Option::is_some) {
            return false;
        }
        state.keeper = None;
        true
    }

    /// Stops renewing a claim found lost, unless its run already ended; answers whether it
    /// was still held.
    fn lost(&self, slot: usize, serial: u64) -> bool {
        let mut state = self.state();
        match state.slots.get_mut(slot) {
            Some(Some(live)) if live.serial == serial => {
                // Far in the future: the run still holds its slot, but the keeper skips it.
                live.due = Instant::now() + Duration::from_secs(86_400 * 365);
                true
            }
            _ => false,
        }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let mut state = self.leases.state();
        if let Some(live) = state.slots.get_mut(self.slot)
            && live.as_ref().is_some_and(|live| live.serial == self.serial)
        {
            *live = None;
            state.free.push(self.slot);
        }
    }
}

/// Marks the keeper as gone however its task ends (a runtime shut down drops it), so that
/// the next hold starts another.
struct Running {
    leases: Arc<Leases>,
    retired: bool,
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.retired {
            self.leases.state().keeper = None;
        }
    }
}

/// The keeper: renews what is due, sleeps until the next renewal (or a hold wakes it), and
/// ends after [`IDLE`] with nothing held. It holds the store weakly, so that dropping the last
/// handle frees the store at once.
async fn keep(leases: Arc<Leases>, backend: Weak<dyn IdempotencyStore>) {
    let mut running = Running {
        leases,
        retired: false,
    };
    let leases = Arc::clone(&running.leases);
    let leases = &*leases;
    loop {
        let now = Instant::now();
        let (due, next) = leases.due(now);
        let Some(store) = backend.upgrade() else {
            return; // every handle is gone, and with them every run
        };
        renew_due(&*store, leases, &due).await;
        // Not held while asleep: dropping the last handle frees the store at once.
        drop(store);
        let wake = next.unwrap_or(now + IDLE);
        tokio::select! {
            () = tokio::time::sleep_until(wake) => {
                if next.is_none() && leases.retire_if_idle() {
                    running.retired = true;
                    return;
                }
            }
            () = leases.wake.notified() => {}
        }
    }
}

/// Renews the claims due, each at once; counts and logs those found lost.
async fn renew_due(backend: &dyn IdempotencyStore, leases: &Leases, due: &[Due]) {
    join_all(due.iter().map(|(slot, serial, job)| async move {
        if renew(backend, job).await && leases.lost(*slot, *serial) {
            metrics::lease_lost(&job.claim.id.handler);
            tracing::warn!(
                key_prefix = job.claim.id.key.prefix(),
                "the claim's lease was lost: the record is no longer owned by this run (it was taken over after its lease expired, or it expired); this run's result will not be stored"
            );
        }
    }))
    .await;
}

/// One renewal; answers whether the claim was found lost. A failed renewal is logged and
/// tried again at the next renewal.
async fn renew(backend: &dyn IdempotencyStore, job: &Job) -> bool {
    let timeout = job.settings.store_timeout;
    match attempt(StoreOp::Renew, timeout, || backend.renew(&job.claim)).await {
        Ok(Ownership::Held) => false,
        Ok(Ownership::Lost) => true,
        Err(error) => {
            tracing::warn!(%error, "the claim's lease could not be renewed; trying again at the next renewal");
            false
        }
    }
}
