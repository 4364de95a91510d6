//! The background purge (docs/contract.md, "Operating the records"): `purge_expired` every
//! interval, until stopped, so that expired records do not pile up in the store.

use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::engine::handle::Store;
use crate::engine::metrics;

/// The shortest interval between passes: `tokio::time::interval` refuses zero.
const MIN_INTERVAL: Duration = Duration::from_millis(1);

/// A background purge, from [`Store::purge_every`]; dropping it stops it.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::time::Duration;
/// use idem_runtime::{MemoryStore, Store};
///
/// let store = Store::new(MemoryStore::new());
/// let purge = store.purge_every(Duration::from_secs(60), 1000);
/// // ... serve ...
/// purge.stop().await;
/// # }
/// ```
#[derive(Debug)]
#[must_use = "dropping a PurgeTask stops the purge"]
pub struct PurgeTask {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl PurgeTask {
    /// Starts the passes on the current tokio runtime.
    pub(crate) fn start(store: Store, every: Duration, batch: usize) -> Self {
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(run(store, every.max(MIN_INTERVAL), batch, stopped));
        PurgeTask {
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops the purge and waits until it has stopped: a pass under way is abandoned (a
    /// batch already deleted stays deleted).
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            // The task only ends by returning; an error here is a panic in a store, already
            // reported by the runtime, or a cancellation, which is what was asked.
            let _ = task.await;
        }
    }
}

impl Drop for PurgeTask {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// One pass every `every` until `stopped` fires or its sender is dropped.
async fn run(store: Store, every: Duration, batch: usize, mut stopped: oneshot::Receiver<()>) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            _ = ticks.tick() => {}
        }
        tokio::select! {
            _ = &mut stopped => return,
            purged = store.purge_expired(batch) => match purged {
                Ok(0) => {}
                Ok(n) => {
                    metrics::purged(n);
                    tracing::debug!(purged = n, "purged expired idempotency records");
                }
                Err(error) => {
                    tracing::warn!(%error, "purging expired idempotency records failed");
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::engine::record::Claim;
    use crate::stores::MemoryStore;

    fn claim(n: usize, ttl: Duration) -> Claim {
        Claim::for_test(&format!("purge-key-{n:04}"), ttl)
    }

    /// The value of the `idempotency_purged_total` counter (no labels) in `snapshot`.
    fn purged_total(snapshotter: &metrics_util::debugging::Snapshotter) -> Option<u64> {
        snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .find_map(|(key, _, _, value)| match value {
                metrics_util::debugging::DebugValue::Counter(n)
                    if key.key().name() == metrics::PURGED_TOTAL
                        && key.key().labels().next().is_none() =>
                {
                    Some(n)
                }
                _ => None,
            })
    }

    #[tokio::test(start_paused = true)]
    async fn passes_remove_expired_records_until_stopped() {
        let recorder = metrics_util::debugging::DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let _local = ::metrics::set_default_local_recorder(&recorder);
        let memory = Arc::new(MemoryStore::new());
        let store = Store::new(memory.clone());
        for n in 0..5 {
            store
                .backend()
                .claim(&claim(n, Duration::from_secs(5)))
                .await
                .unwrap();
        }
        let live = claim(99, Duration::from_secs(3600));
        store.backend().claim(&live).await.unwrap();

        let purge = store.purge_every(Duration::from_secs(10), 2);
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert_eq!(memory.len(), 1, "the expired records are gone");
        assert!(store.get(&live.id).await.unwrap().is_some());
        assert_eq!(purged_total(&snapshotter), Some(5));
        purge.stop().await;

        // Stopped: a record that expires later stays until purged by hand.
        store
            .backend()
            .claim(&claim(7, Duration::from_secs(1)))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(memory.len(), 2);
        assert_eq!(store.stats().await.unwrap().expired, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_task_stops_it() {
        let memory = Arc::new(MemoryStore::new());
        let store = Store::new(memory.clone());
        drop(store.purge_every(Duration::ZERO, 10));
        store
            .backend()
            .claim(&claim(1, Duration::from_secs(1)))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(memory.len(), 1);
    }
}
