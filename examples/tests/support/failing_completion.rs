//! The failing completion both stores are judged by: completions refused at the store (a
//! trigger on Postgres, a proxy on Redis) fewer times than `IDEM_RETRIES` are stored; refused
//! every time, the key is FAILED_STORAGE, counted, and the client still gets its 201; once the
//! store takes completions again, the next request runs the handler again and is stored.
#![allow(dead_code)]

use idem_examples::client::Client;

use super::{outcome_count, storage_failures};

const EUR: &str = r#"{"amount":1200,"currency":"EUR"}"#;

/// How a test refuses completions at its store, and what it reads there.
#[allow(
    async_fn_in_trait,
    reason = "test support, never behind dyn or across threads"
)]
pub trait Completions {
    /// Refuses the next `n` completions (and counts attempts from zero again).
    async fn fail_next(&self, n: u64);
    /// Completions attempted since the last [`Completions::fail_next`].
    async fn attempts(&self) -> u64;
    /// The stored status of `key`: `None` in progress, -1 FAILED_STORAGE.
    async fn status(&self, key: &str) -> Option<i32>;
}

/// Runs the scenario against the service behind `client`, started with `IDEM_RETRIES=3` and in
/// plain mode (a transactional run stores its response in its commit, which is never retried).
pub async fn run(client: Client, store: &impl Completions, name: &str) {
    // A first payment warms the service up (connections, scripts), so that each attempt below
    // is one write at the store.
    let warm = client.pay(Some("storage-warm-0001"), EUR).await.unwrap();
    assert_eq!(warm.status, 201);

    // Fewer failures than attempts: the third attempt stores the response.
    store.fail_next(2).await;
    let stored = client.pay(Some("storage-key-0001"), EUR).await.unwrap();
    assert_eq!(stored.status, 201, "{}", stored.text());
    assert_eq!(store.attempts().await, 3, "two failed, the third stored");
    assert_eq!(store.status("storage-key-0001").await, Some(201));
    let replay = client.pay(Some("storage-key-0001"), EUR).await.unwrap();
    assert!(replay.replayed());
    assert_eq!(replay.body, stored.body);
    assert_eq!(storage_failures(&client).await, 0);

    // More failures than attempts: FAILED_STORAGE, counted, and the client still has its 201.
    store.fail_next(1_000).await;
    let lost = client.pay(Some("storage-key-0002"), EUR).await.unwrap();
    assert_eq!(
        lost.status, 201,
        "the handler's response reaches the client"
    );
    assert_eq!(lost.json()["amount"], 1200);
    assert!(!lost.replayed());
    assert_eq!(store.attempts().await, 3, "retries = 3 attempts in all");
    assert_eq!(store.status("storage-key-0002").await, Some(-1));
    assert_eq!(storage_failures(&client).await, 1);
    assert_eq!(client.payment_count().await.unwrap(), 3);

    // The store takes completions again: the next request runs the handler again and is stored.
    store.fail_next(0).await;
    let rerun = client.pay(Some("storage-key-0002"), EUR).await.unwrap();
    assert_eq!(rerun.status, 201);
    assert!(!rerun.replayed(), "FAILED_STORAGE runs the handler again");
    assert_ne!(rerun.json()["id"], lost.json()["id"]);
    assert_eq!(store.status("storage-key-0002").await, Some(201));
    let replay = client.pay(Some("storage-key-0002"), EUR).await.unwrap();
    assert!(replay.replayed());
    assert_eq!(replay.body, rerun.body);
    let payments = client.payment_count().await.unwrap();
    assert_eq!(payments, 4);
    assert_eq!(outcome_count(&client, "recovered").await, 1);
    println!(
        "storage failure on {name}: 8 requests; completion attempts 3 (2 failed) then 3 (all \
         failed); storage failures counted 1; payments created {payments}; statuses 201 x8 \
         (3 replays)"
    );
}
