//! A transactional queue consumer (docs/contract.md, "Plain-function mode" and "Transactional
//! mode"): its charge and its inbox record commit together, so a message delivered twice at
//! once, or again after a worker died halfway, charges once.

use std::time::Duration;

use idem_runtime::{PgTx, Store, idempotent};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, Semaphore, mpsc};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct OrderPlaced {
    message_id: String,
    amount_cents: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Charge {
    charge_id: i64,
}

#[derive(Debug)]
enum ConsumeError {
    Database(#[allow(dead_code, reason = "read through Debug in failed assertions")] sqlx::Error),
    Idempotency(idem_runtime::Error),
}

impl From<idem_runtime::Error> for ConsumeError {
    fn from(error: idem_runtime::Error) -> Self {
        ConsumeError::Idempotency(error)
    }
}

struct Consumer {
    idem: Store,
    /// Each run says when its charge is written (uncommitted)...
    written: mpsc::UnboundedSender<String>,
    /// ...and waits for a permit before it returns.
    go: Semaphore,
}

impl Consumer {
    /// Charges the order in the transaction that stores the result.
    #[idempotent(store = self.idem, key = msg.message_id, transactional, lease = "1s")]
    async fn handle(&self, mut tx: PgTx, msg: OrderPlaced) -> Result<Charge, ConsumeError> {
        let charge_id = sqlx::query_scalar(
            "INSERT INTO charges (message_id, amount_cents) VALUES ($1, $2) RETURNING id",
        )
        .bind(&msg.message_id)
        .bind(msg.amount_cents)
        .fetch_one(&mut *tx)
        .await
        .map_err(ConsumeError::Database)?;
        let _ = self.written.send(msg.message_id.clone());
        if let Ok(permit) = self.go.acquire().await {
            permit.forget();
        }
        Ok(Charge { charge_id })
    }
}

async fn charges(pool: &sqlx::PgPool, message_id: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM charges WHERE message_id = $1")
        .bind(message_id)
        .fetch_one(pool)
        .await
        .unwrap()
}

fn conflict(outcome: &Result<Charge, ConsumeError>) -> bool {
    matches!(
        outcome,
        Err(ConsumeError::Idempotency(
            idem_runtime::Error::Conflict { .. }
        ))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transactional_consumer_charges_once_for_racing_and_crashed_deliveries() {
    let Some(db) = idem_tests::pg::database().await else {
        return;
    };
    let store = db.own_store().await;
    let pool = store.pool().clone();
    sqlx::query(
        "CREATE TABLE charges (id BIGSERIAL PRIMARY KEY, message_id TEXT NOT NULL,
                               amount_cents BIGINT NOT NULL)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let (written, runs) = mpsc::unbounded_channel();
    let runs = Mutex::new(runs);
    let consumer = Consumer {
        idem: Store::new(store),
        written,
        go: Semaphore::new(0),
    };
    let msg = |id: &str| OrderPlaced {
        message_id: id.to_owned(),
        amount_cents: 1200,
    };

    // Two workers get the message at once: the second meets the first's claim mid-run.
    let (first, second) = tokio::join!(consumer.handle(msg("msg-race-0001")), async {
        let _ = runs.lock().await.recv().await;
        let second = consumer.handle(msg("msg-race-0001")).await;
        consumer.go.add_permits(1);
        second
    });
    let first = first.expect("the first delivery charges");
    assert!(conflict(&second), "{second:?}");
    let replayed = consumer.handle(msg("msg-race-0001")).await.unwrap();
    assert_eq!(replayed, first, "a redelivery returns the stored charge");
    assert_eq!(charges(&pool, "msg-race-0001").await, 1);

    // A worker dies halfway: its call is dropped after the charge was written, uncommitted.
    tokio::select! {
        _ = consumer.handle(msg("msg-crash-001")) => panic!("the call waits for its permit"),
        _ = async { runs.lock().await.recv().await } => {}
    }
    assert_eq!(charges(&pool, "msg-crash-001").await, 0, "rolled back");
    let early = consumer.handle(msg("msg-crash-001")).await;
    assert!(
        conflict(&early),
        "its claim stands until its lease ends: {early:?}"
    );
    let started = tokio::time::Instant::now();
    consumer.go.add_permits(1);
    let rerun = loop {
        match consumer.handle(msg("msg-crash-001")).await {
            Err(ConsumeError::Idempotency(idem_runtime::Error::Conflict { retry_after })) => {
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "the lease ends"
                );
                tokio::time::sleep(retry_after.min(Duration::from_millis(100))).await;
            }
            other => break other.expect("the redelivery after the lease charges"),
        }
    };
    let again = consumer.handle(msg("msg-crash-001")).await.unwrap();
    assert_eq!(again, rerun);
    assert_eq!(charges(&pool, "msg-crash-001").await, 1);
    println!(
        "transactional consumer: racing deliveries 1 charge (the other a conflict); a call \
         dropped after its write left 0, its redelivery after {:?} charged 1",
        started.elapsed()
    );
}
