//! Waiting for the in-flight result (docs/contract.md, "Waiting for the in-flight result"),
//! and the `Retry-After` hint of a 409.
//!
//! A duplicate that meets a live claim and may wait takes a place among the store handle's
//! waiters and sleeps until it is rung or its next poll is due, then claims again: the owner's
//! result (a replay), the key released (this waiter claims it and runs; the others see it in
//! progress and go on waiting), or still in progress. A waiter holds no connection and no
//! thread while it sleeps. It is rung in process by the owner's call ending here, and across
//! processes by the store's listener (Postgres `LISTEN`); polls back off from
//! [`FIRST_POLL`] to [`LAST_POLL`] (at once to the last while the listener hears), so a lost
//! announcement costs at most one poll.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use crate::engine::decide::{Decision, decide};
use crate::engine::handle::Store;
use crate::engine::job::Job;
use crate::engine::metrics::{self, StoreOp};
use crate::engine::record::RecordId;
use crate::engine::store::{Heard, IdempotencyStore, StoreResult};
use crate::engine::timed::attempt;

/// The first pause before a waiter looks again without being rung.
pub const FIRST_POLL: Duration = Duration::from_millis(25);
/// The longest pause between a waiter's looks: what a lost announcement costs at most.
pub const LAST_POLL: Duration = Duration::from_secs(1);
/// Default bound on a store handle's waiters in one process.
pub const DEFAULT_MAX_WAITERS: usize = 1024;
/// A 409's `Retry-After` when the handler's usual run time is not known yet.
const UNKNOWN_RUN_TIME: Duration = Duration::from_secs(1);

/// A store handle's waiters: how many, a bell per awaited record, and the listener that rings
/// them for announcements from other processes.
#[derive(Default)]
pub(crate) struct Waiters {
    count: AtomicUsize,
    bells: Mutex<HashMap<u64, Bell>>,
    /// Set once the listener is started; dropped with the waiters, which stops it.
    listener: Mutex<Option<oneshot::Sender<()>>>,
    /// Whether the listener hears announcements now.
    hearing: AtomicBool,
}

/// The bell of one awaited record, and how many wait on it.
struct Bell {
    notify: Arc<Notify>,
    waiting: usize,
}

impl Waiters {
    /// How many calls wait now.
    pub(crate) fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    fn bells(&self) -> MutexGuard<'_, HashMap<u64, Bell>> {
        self.bells.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a place to wait on `key`, unless `limit` calls wait already.
    fn enter(self: &Arc<Self>, key: u64, limit: usize) -> Option<Place> {
        let taken = self
            .count
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |count| {
                (count < limit).then_some(count + 1)
            });
        if taken.is_err() {
            return None;
        }
        metrics::waiters(1.0);
        let notify = {
            let mut bells = self.bells();
            let bell = bells.entry(key).or_insert_with(|| Bell {
                notify: Arc::default(),
                waiting: 0,
            });
            bell.waiting += 1;
            bell.notify.clone()
        };
        Some(Place {
            waiters: self.clone(),
            key,
            notify,
        })
    }

    /// Rings the waiters of the record whose claim ended in this process, if any wait.
    pub(crate) fn ring(&self, id: &RecordId) {
        if self.count() > 0 {
            self.ring_key(id.wake_key());
        }
    }

    fn ring_key(&self, key: u64) {
        if let Some(bell) = self.bells().get(&key) {
            bell.notify.notify_waiters();
        }
    }

    fn ring_all(&self) {
        for bell in self.bells().values() {
            bell.notify.notify_waiters();
        }
    }

    /// Starts the listener for the store's announcements once, if the store has them.
    fn listen(self: &Arc<Self>, backend: &Arc<dyn IdempotencyStore>) {
        let mut listener = self.listener.lock().unwrap_or_else(PoisonError::into_inner);
        if listener.is_some() {
            return;
        }
        let (stop, stopped) = oneshot::channel();
        *listener = Some(stop);
        tokio::spawn(listening(
            Arc::downgrade(self),
            Arc::downgrade(backend),
            stopped,
        ));
    }
}

/// One waiter's place: its bell, given back when it stops waiting (answered, timed out, or
/// its caller hung up).
struct Place {
    waiters: Arc<Waiters>,
    key: u64,
    notify: Arc<Notify>,
}

impl Drop for Place {
    fn drop(&mut self) {
        {
            let mut bells = self.waiters.bells();
            if let Some(bell) = bells.get_mut(&self.key) {
                bell.waiting -= 1;
                if bell.waiting == 0 {
                    bells.remove(&self.key);
                }
            }
        }
        self.waiters.count.fetch_sub(1, Ordering::AcqRel);
        metrics::waiters(-1.0);
    }
}

/// Rings waiters for what the store's listener hears, until the waiters are gone; starts the
/// listener again, with backoff, when it fails or its stream ends.
async fn listening(
    waiters: Weak<Waiters>,
    backend: Weak<dyn IdempotencyStore>,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut pause = Duration::from_millis(100);
    loop {
        let Some(store) = backend.upgrade() else {
            return;
        };
        let Some(reply) = store.listen() else {
            return;
        };
        let subscribed = tokio::select! {
            _ = &mut stopped => return,
            subscribed = reply => subscribed,
        };
        drop(store);
        match subscribed {
            Ok(mut heard) => {
                pause = Duration::from_millis(100);
                if let Some(waiters) = waiters.upgrade() {
                    waiters.hearing.store(true, Ordering::Release);
                }
                loop {
                    let next = tokio::select! {
                        _ = &mut stopped => return,
                        next = heard.next() => next,
                    };
                    let Some(waiters) = waiters.upgrade() else {
                        return;
                    };
                    match next {
                        Some(Heard::Ended(key)) => waiters.ring_key(key),
                        Some(Heard::Gap) => waiters.ring_all(),
                        None => {
                            waiters.hearing.store(false, Ordering::Release);
                            waiters.ring_all();
                            break;
                        }
                    }
                }
                tracing::warn!("the idempotency store's listener stopped; listening again");
            }
            Err(error) => {
                tracing::warn!(%error, "the idempotency store's listener could not start; waiters poll until it does");
            }
        }
        tokio::select! {
            _ = &mut stopped => return,
            () = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

/// Waits up to the job's `wait` for the claim that `conflict` met to end, and answers what
/// the key holds then: a replay, a claim of its own (released by the owner, or abandoned), or
/// still a conflict at the deadline. Beyond the store handle's bound on waiters, or once the
/// caller hangs up, it answers the conflict at once.
pub(crate) async fn wait_for(
    store: &Store,
    job: &Job,
    wait: Duration,
    conflict: Decision,
) -> StoreResult<Decision> {
    let waiters = store.waiters();
    let Some(place) = waiters.enter(job.claim.id.wake_key(), store.max_waiters_value()) else {
        tracing::info!("too many calls wait in this process; answering the conflict at once");
        return Ok(conflict);
    };
    waiters.listen(store.shared_backend());
    let deadline = Instant::now() + wait;
    let mut pause = FIRST_POLL;
    let mut last = conflict;
    let mut rung = Box::pin(place.notify.notified());
    rung.as_mut().enable();
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Ok(last);
        }
        tokio::select! {
            () = &mut rung => {}
            () = tokio::time::sleep(pause.min(deadline - now)) => pause = next_poll(waiters, pause),
            () = job.caller.gone() => return Ok(last),
        }
        // The next ring is listened for before looking, so that none is lost in between.
        rung = Box::pin(place.notify.notified());
        rung.as_mut().enable();
        let backend = store.backend();
        let claimed = attempt(StoreOp::Claim, job.settings.store_timeout, || {
            backend.claim(&job.claim)
        })
        .await?;
        match decide(claimed, &job.claim.fingerprint) {
            conflict @ Decision::Conflict { .. } => last = conflict,
            decision => return Ok(decision),
        }
    }
}

/// The pause after `pause`: doubling up to [`LAST_POLL`]; straight to it while the listener
/// hears announcements, since a poll then only covers a lost one. (The first, short poll
/// covers a claim that ended between a waiter's first look and its place being taken.)
fn next_poll(waiters: &Waiters, pause: Duration) -> Duration {
    if waiters.hearing.load(Ordering::Acquire) {
        LAST_POLL
    } else {
        (pause * 2).min(LAST_POLL)
    }
}

/// Each handler's usual run time in this process, for the `Retry-After` of a 409: a short
/// list, since handlers (and the layer's routes) are bounded by the code.
#[derive(Default)]
pub(crate) struct RunTimes(Mutex<Vec<(Cow<'static, str>, Duration)>>);

/// How many handlers' run times a store handle keeps; others get the default hint.
const KEPT_HANDLERS: usize = 256;

impl RunTimes {
    fn usual_mut<'a>(
        usual: &'a mut [(Cow<'static, str>, Duration)],
        handler: &str,
    ) -> Option<&'a mut Duration> {
        usual
            .iter_mut()
            .find(|(name, _)| name.as_ref() == handler)
            .map(|(_, average)| average)
    }

    /// Adds a run's time to its handler's moving average (a quarter weight for the newest).
    #[allow(clippy::ptr_arg)] // the name is cloned as it is: a static one stays borrowed
    pub(crate) fn record(&self, handler: &Cow<'static, str>, took: Duration) {
        let mut usual = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(average) = Self::usual_mut(&mut usual, handler) {
            *average = (*average * 3 + took) / 4;
        } else if usual.len() < KEPT_HANDLERS {
            usual.push((handler.clone(), took));
        }
    }

    fn usual(&self, handler: &str) -> Option<Duration> {
        let mut usual = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        Self::usual_mut(&mut usual, handler).copied()
    }

    /// When a duplicate that met the claim in progress should come back: the handler's
    /// `retry_after`, else its usual run time (a second when not known yet), never more than
    /// the owner's lease has left. `Retry-After` rounds it up to whole seconds.
    pub(crate) fn hint(&self, job: &Job, lease_remaining: Duration) -> Duration {
        let hint = job.settings.retry_after.unwrap_or_else(|| {
            self.usual(&job.claim.id.handler)
                .unwrap_or(UNKNOWN_RUN_TIME)
        });
        hint.min(lease_remaining)
    }
}
