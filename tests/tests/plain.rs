//! Plain-function mode (docs/contract.md, "Plain-function mode"), row by row:
//! `#[idempotent(key = "...")]` on async functions and methods returning `Result<T, E>`, on the
//! memory store and its failing wrapper, with tokio's paused clock where time matters.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use idem_runtime::{
    Error, FailingStore, IdempotencyKey, MemoryStore, Op, RecordId, RecordState, Store, idempotent,
};
use serde::{Deserialize, Serialize};
use support::metrics::Metrics;
use tokio::sync::Notify;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Message {
    id: String,
    amount: u32,
    attributes: HashMap<String, String>,
}

fn message(id: &str, amount: u32) -> Message {
    Message {
        id: id.to_owned(),
        amount,
        attributes: HashMap::new(),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Receipt {
    message: String,
    run: usize,
}

#[derive(Debug)]
enum JobError {
    Idem(Error),
    Declined,
}

impl From<Error> for JobError {
    fn from(error: Error) -> Self {
        JobError::Idem(error)
    }
}

/// The consumer: a store, a run counter, and a gate that holds a run until opened.
struct Consumer {
    idem: Store,
    runs: AtomicUsize,
    gate: Option<Arc<Notify>>,
}

fn memory() -> Store {
    Store::new(MemoryStore::new())
}

impl Default for Consumer {
    fn default() -> Self {
        Consumer::on(memory())
    }
}

impl Consumer {
    fn on(idem: Store) -> Self {
        Consumer {
            idem,
            runs: AtomicUsize::new(0),
            gate: None,
        }
    }

    fn runs(&self) -> usize {
        self.runs.load(Ordering::SeqCst)
    }

    /// Runs once per message id; amount 0 is declined (an `Err`, not stored), amount 13
    /// panics.
    #[idempotent(store = "self.idem", key = "format!(\"msg-{}\", msg.id)")]
    async fn handle(&self, msg: Message) -> Result<Receipt, JobError> {
        let run = self.runs.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(gate) = &self.gate {
            gate.notified().await;
        }
        match msg.amount {
            0 => Err(JobError::Declined),
            13 => panic!("unlucky"),
            _ => Ok(Receipt {
                message: msg.id,
                run,
            }),
        }
    }
}

/// A free function: the context is kept out of the fingerprint with `#[idem(skip)]`.
#[idempotent(store = "ctx.idem", key = "order_id", lease = "3s")]
async fn charge(
    #[idem(skip)] ctx: &Consumer,
    order_id: &str,
    amount: u32,
    #[idem(skip)] delay: Duration,
) -> Result<u32, JobError> {
    ctx.runs.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(delay).await;
    Ok(amount * 100)
}

const ID: &str = "0000-0001";
const KEY: &str = "msg-0000-0001";

async fn state(store: &Store, handler: &str, key: &str) -> Option<&'static str> {
    let id = RecordId::new("", handler.to_owned(), IdempotencyKey::parse(key).unwrap());
    store
        .get(&id)
        .await
        .expect("the store answers")
        .map(|record| match record.state {
            RecordState::InProgress { .. } => "IN_PROGRESS",
            RecordState::FailedStorage => "FAILED_STORAGE",
            RecordState::Completed(_) => "COMPLETED",
        })
}

/// The handler name of `Consumer::handle`: its `Self` type's name and the method's.
fn handle_name() -> String {
    format!("{}::handle", std::any::type_name::<Consumer>())
}

fn failing() -> (Arc<FailingStore<MemoryStore>>, Store) {
    let failing = Arc::new(FailingStore::new(MemoryStore::new()));
    (failing.clone(), Store::new(failing).with_jitter_seed(3))
}

#[tokio::test(start_paused = true)]
async fn first_call_runs_and_stores_its_result() {
    let metrics = Metrics::install();
    let consumer = Consumer::default();
    let receipt = consumer.handle(message(ID, 5)).await.unwrap();
    assert_eq!(receipt.run, 1);
    assert_eq!(consumer.runs(), 1);
    assert_eq!(
        state(&consumer.idem, &handle_name(), KEY).await,
        Some("COMPLETED")
    );
    assert_eq!(metrics.outcome("executed"), 1);
}

#[tokio::test(start_paused = true)]
async fn same_key_and_arguments_return_the_stored_result_without_running() {
    let metrics = Metrics::install();
    let consumer = Consumer::default();
    let first = consumer.handle(message(ID, 5)).await.unwrap();
    let again = consumer.handle(message(ID, 5)).await.unwrap();
    assert_eq!(again, first, "the stored T, run number included");
    assert_eq!(consumer.runs(), 1);
    assert_eq!(metrics.outcome("replayed"), 1);
}

#[tokio::test(start_paused = true)]
async fn map_order_does_not_change_the_fingerprint() {
    let consumer = Consumer::default();
    let mut a = message(ID, 5);
    let mut b = message(ID, 5);
    for (k, v) in [("x", "1"), ("y", "2"), ("z", "3")] {
        a.attributes.insert(k.into(), v.into());
    }
    for (k, v) in [("z", "3"), ("x", "1"), ("y", "2")] {
        b.attributes.insert(k.into(), v.into());
    }
    consumer.handle(a).await.unwrap();
    consumer.handle(b).await.unwrap();
    assert_eq!(consumer.runs(), 1);
}

#[tokio::test(start_paused = true)]
async fn same_key_other_arguments_is_a_mismatch_error() {
    let metrics = Metrics::install();
    let consumer = Consumer::default();
    consumer.handle(message(ID, 5)).await.unwrap();
    let other = consumer.handle(message(ID, 6)).await;
    assert!(
        matches!(other, Err(JobError::Idem(Error::Mismatch))),
        "{other:?}"
    );
    assert_eq!(consumer.runs(), 1);
    assert_eq!(metrics.outcome("mismatch"), 1);
}

#[tokio::test(start_paused = true)]
async fn an_invalid_key_is_an_error_before_any_store_access() {
    let metrics = Metrics::install();
    let (failing, store) = failing();
    let consumer = Consumer::on(store);
    let result = consumer.handle(message("a b", 5)).await;
    assert!(
        matches!(result, Err(JobError::Idem(Error::InvalidKey(_)))),
        "{result:?}"
    );
    assert_eq!(consumer.runs(), 0);
    assert_eq!(failing.calls(Op::Claim), 0);
    assert_eq!(metrics.outcome("invalid_key"), 1);
}

#[tokio::test(start_paused = true)]
async fn in_progress_elsewhere_is_a_conflict_error_with_a_short_retry_hint() {
    let metrics = Metrics::install();
    let gate = Arc::new(Notify::new());
    let consumer = Consumer {
        gate: Some(gate.clone()),
        ..Consumer::default()
    };
    let first = consumer.handle(message(ID, 5));
    let second = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let second = consumer.handle(message(ID, 5)).await;
        gate.notify_one();
        second
    };
    let (first, second) = tokio::join!(first, second);
    assert!(first.is_ok());
    match second {
        Err(JobError::Idem(error @ Error::Conflict { .. })) => {
            // No run has completed yet: a second, not the 29 s left on the lease.
            assert_eq!(error.retry_after(), Some(Duration::from_secs(1)));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(consumer.runs(), 1);
    assert_eq!(metrics.outcome("conflict"), 1);
}

#[tokio::test(start_paused = true)]
async fn concurrent_duplicates_run_once() {
    let gate = Arc::new(Notify::new());
    let consumer = Arc::new(Consumer {
        gate: Some(gate.clone()),
        ..Consumer::default()
    });
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let consumer = consumer.clone();
        calls.spawn(async move { consumer.handle(message(ID, 5)).await });
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    gate.notify_one();
    let results = calls.join_all().await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let conflicts = results
        .iter()
        .filter(|r| matches!(r, Err(JobError::Idem(Error::Conflict { .. }))))
        .count();
    assert_eq!((ok, conflicts), (1, 15));
    assert_eq!(consumer.runs(), 1);
}

#[tokio::test(start_paused = true)]
async fn store_unreachable_when_claiming_is_an_error_and_nothing_runs() {
    let metrics = Metrics::install();
    let (failing, store) = failing();
    failing.fail_next(Op::Claim, 1);
    let consumer = Consumer::on(store);
    let result = consumer.handle(message(ID, 5)).await;
    match result {
        Err(JobError::Idem(error @ Error::StoreUnavailable(_))) => {
            assert!(error.retry_after().is_some(), "a retry can succeed");
        }
        other => panic!("expected store unavailable, got {other:?}"),
    }
    assert_eq!(consumer.runs(), 0);
    assert_eq!(metrics.outcome("store_unavailable"), 1);
    // The retry, once the store is back, runs.
    assert!(consumer.handle(message(ID, 5)).await.is_ok());
    assert_eq!(consumer.runs(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_err_is_not_stored_so_a_retry_runs_again() {
    let consumer = Consumer::default();
    for _ in 0..2 {
        let result = consumer.handle(message(ID, 0)).await;
        assert!(matches!(result, Err(JobError::Declined)), "{result:?}");
    }
    assert_eq!(consumer.runs(), 2);
    assert_eq!(state(&consumer.idem, &handle_name(), KEY).await, None);
}

#[tokio::test(start_paused = true)]
async fn a_panic_releases_the_claim_and_resumes() {
    let consumer = Arc::new(Consumer::default());
    let task = tokio::spawn({
        let consumer = consumer.clone();
        async move { consumer.handle(message(ID, 13)).await }
    });
    let joined = task.await;
    assert!(
        joined.is_err_and(|e| e.is_panic()),
        "the panic reaches the caller"
    );
    assert_eq!(state(&consumer.idem, &handle_name(), KEY).await, None);
}

#[tokio::test(start_paused = true)]
async fn failed_storage_is_recovered_by_the_next_call() {
    let metrics = Metrics::install();
    let (failing, store) = failing();
    failing.fail_next(Op::Complete, 5);
    let consumer = Consumer::on(store);
    let first = consumer.handle(message(ID, 5)).await.unwrap();
    assert_eq!(
        first.run, 1,
        "the caller gets the result even when it is not stored"
    );
    assert_eq!(
        state(&consumer.idem, &handle_name(), KEY).await,
        Some("FAILED_STORAGE")
    );
    assert_eq!(metrics.counter("idempotency_storage_failure_total", &[]), 1);
    let second = consumer.handle(message(ID, 5)).await.unwrap();
    assert_eq!(second.run, 2, "the next call runs again");
    assert_eq!(metrics.outcome("recovered"), 1);
    assert_eq!(
        state(&consumer.idem, &handle_name(), KEY).await,
        Some("COMPLETED")
    );
    assert_eq!(consumer.handle(message(ID, 5)).await.unwrap(), second);
}

#[tokio::test(start_paused = true)]
async fn a_slow_call_keeps_its_lease_and_an_abandoned_one_is_taken_over() {
    let consumer = Consumer::default();
    // A call that runs for 10 lease-lengths still owns the key: the lease is renewed.
    let slow = charge(&consumer, "order-0001", 7, Duration::from_secs(30));
    let duplicate = async {
        tokio::time::sleep(Duration::from_secs(20)).await;
        charge(&consumer, "order-0001", 7, Duration::ZERO).await
    };
    let (slow, duplicate) = tokio::join!(slow, duplicate);
    assert_eq!(slow.unwrap(), 700);
    assert!(
        matches!(duplicate, Err(JobError::Idem(Error::Conflict { .. }))),
        "{duplicate:?}"
    );
    assert_eq!(consumer.runs.load(Ordering::SeqCst), 1);

    // A call dropped midway leaves its claim behind; once the lease expires, a retry runs.
    let abandoned = charge(&consumer, "order-0002", 7, Duration::from_secs(60));
    assert!(
        tokio::time::timeout(Duration::from_secs(1), abandoned)
            .await
            .is_err()
    );
    let early = charge(&consumer, "order-0002", 7, Duration::ZERO).await;
    assert!(matches!(early, Err(JobError::Idem(Error::Conflict { .. }))));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        charge(&consumer, "order-0002", 7, Duration::ZERO)
            .await
            .unwrap(),
        700
    );
    assert_eq!(consumer.runs.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn skipped_parameters_are_not_fingerprinted_and_functions_are_named_by_path() {
    let store = memory();
    let (a, b) = (Consumer::on(store.clone()), Consumer::on(store.clone()));
    assert_eq!(
        charge(&a, "order-0001", 2, Duration::ZERO).await.unwrap(),
        200
    );
    // Another context, same arguments: a replay (the context is not part of the request).
    assert_eq!(
        charge(&b, "order-0001", 2, Duration::ZERO).await.unwrap(),
        200
    );
    assert_eq!(b.runs.load(Ordering::SeqCst), 0);
    assert_eq!(
        state(&store, "plain::charge", "order-0001").await,
        Some("COMPLETED")
    );
    // One key on a method and a function: two records.
    let consumer = Consumer::on(store.clone());
    consumer.handle(message("0001", 1)).await.unwrap();
    assert_eq!(
        state(&store, &handle_name(), "msg-0001").await,
        Some("COMPLETED")
    );
    assert_eq!(handle_name(), "plain::Consumer::handle");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_result_replays_from_every_store() {
    let sqlite = idem_runtime::SqliteStore::connect("sqlite::memory:")
        .await
        .expect("open an in-memory database");
    sqlite.migrate().await.expect("migrations run");
    let mut stores = vec![("memory", memory()), ("sqlite", Store::new(sqlite))];
    let postgres = idem_tests::pg::fixture().await;
    if let Some((store, _)) = &postgres {
        stores.push(("postgres", store.clone()));
    }
    for (name, store) in stores {
        let consumer = Consumer::on(store);
        let mut msg = message(ID, 5);
        msg.attributes
            .insert("note".into(), "é \u{1F600} \"quoted\"".into());
        let first = consumer.handle(msg.clone()).await.unwrap();
        let again = consumer.handle(msg).await.unwrap();
        assert_eq!(again, first, "{name}");
        assert_eq!(consumer.runs(), 1, "{name}");
    }
}
