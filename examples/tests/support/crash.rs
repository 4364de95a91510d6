//! The crash both stores are judged by: a `payments` process killed (SIGKILL) while it holds a
//! claim; a new process answers 409 while the dead claim's lease is live, and once it expires,
//! of eight retries sent at once exactly one takes the claim over and runs; then it replays.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use idem_examples::client::{Client, Reply};

use super::db::until;
use super::{Service, outcome_count};

const EUR: &str = r#"{"amount":1200,"currency":"EUR"}"#;
const KEY: &str = "crash-key-0001";
/// The lease of both processes.
const LEASE: &str = "10s";

/// What a test reads of a claim at its store, by the store's clock.
#[allow(
    async_fn_in_trait,
    reason = "test support, never behind dyn or across threads"
)]
pub trait Leases {
    /// Seconds left on `key`'s claim in progress (zero or less once expired); `None` when the
    /// key has no claim in progress.
    async fn lease_left(&self, key: &str) -> Option<f64>;
}

/// Runs the scenario on the store at `url`; `name` heads the summary line.
pub async fn run(url: &str, store: &impl Leases, name: &str) {
    let slow = [
        ("IDEM_STORE", url),
        ("IDEM_LEASE", LEASE),
        ("PAYMENTS_LATENCY_MS", "60000"),
    ];
    let doomed = Service::start(&slow).await;
    let client = doomed.client;
    let in_flight = tokio::spawn(async move { client.pay(Some(KEY), EUR).await });
    until(
        Duration::from_secs(10),
        "the slow request claims its key",
        || async { store.lease_left(KEY).await.is_some() },
    )
    .await;
    let started = Instant::now();
    doomed.kill().await;
    assert!(
        in_flight.await.unwrap().is_err(),
        "the killed process never answered"
    );

    let restarted = Service::start(&[("IDEM_STORE", url), ("IDEM_LEASE", LEASE)]).await;
    let client = restarted.client;
    let left = store.lease_left(KEY).await.expect("still claimed");
    assert!(
        left > 0.5,
        "the dead claim's lease is still live ({left:.2}s left)"
    );
    let early = client.pay(Some(KEY), EUR).await.unwrap();
    assert_eq!(
        early.status,
        409,
        "before the lease expires: {}",
        early.text()
    );
    assert!(early.header("retry-after").is_some());
    assert_eq!(client.payment_count().await.unwrap(), 0);

    // Waiting on the store's clock is the point of the test.
    until(
        Duration::from_secs(15),
        "the dead claim's lease expires",
        || async { store.lease_left(KEY).await.is_none_or(|left| left <= 0.0) },
    )
    .await;
    let retries = at_once(client, 8).await;
    let ran: Vec<&Reply> = retries
        .iter()
        .filter(|r| r.status == 201 && !r.replayed())
        .collect();
    assert_eq!(ran.len(), 1, "exactly one retry took the claim over");
    for other in &retries {
        assert!(
            other.status == 409 || (other.status == 201 && other.body == ran[0].body),
            "{} {}",
            other.status,
            other.text()
        );
    }
    let replay = client.pay(Some(KEY), EUR).await.unwrap();
    assert!(replay.replayed());
    assert_eq!(replay.body, ran[0].body);
    let payments = client.payment_count().await.unwrap();
    assert_eq!(payments, 1, "the handler ran once after the crash");
    assert_eq!(outcome_count(&client, "recovered").await, 1);
    println!(
        "crash on {name}: 11 requests (1 killed in flight); 409 x1 before the lease, then 8 at \
         once (1 ran); payments created {payments}; recovered {:?} after the kill (lease \
         {LEASE})",
        started.elapsed()
    );
}

/// `n` copies of the crash key's request, sent at once.
async fn at_once(client: Client, n: usize) -> Vec<Reply> {
    let mut copies = tokio::task::JoinSet::new();
    for _ in 0..n {
        copies.spawn(async move { client.pay(Some(KEY), EUR).await.unwrap() });
    }
    copies.join_all().await
}
