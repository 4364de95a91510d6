//! A message consumer that charges each order once, however often its message is delivered:
//! `#[idempotent(key = ...)]` on a plain method (docs/contract.md, "Plain-function mode").
//!
//! ```text
//! cargo run -p idem-examples --bin consumer             # memory store
//! cargo run -p idem-examples --bin consumer -- sqlite   # a SQLite file in a temporary folder
//! ```
//!
//! A queue with at-least-once delivery hands the consumer the same message more than once
//! (a redelivery after a lost ack, two workers racing for one message). The consumer's
//! `handle` charges an order and returns the charge; a repeated message returns the stored
//! charge without charging again, and what cannot succeed goes to a dead-letter list.

use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use idem_runtime::{MemoryStore, SqliteStore, Store, idempotent};
use serde::{Deserialize, Serialize};

/// A message on the queue: its id is the idempotency key.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct OrderPlaced {
    message_id: String,
    order: u32,
    amount_cents: u64,
}

/// What handling a message produced: stored, and returned again for a repeated message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Charge {
    charge_id: u64,
    order: u32,
    amount_cents: u64,
}

/// Why a message was not handled.
#[derive(Debug)]
enum ConsumeError {
    /// The payment provider said no: not stored, so a redelivery tries again.
    Declined,
    /// A conflict, a mismatch, an invalid key or an unreachable store.
    Idempotency(idem_runtime::Error),
}

/// What `#[idempotent]` needs of the error type.
impl From<idem_runtime::Error> for ConsumeError {
    fn from(error: idem_runtime::Error) -> Self {
        ConsumeError::Idempotency(error)
    }
}

impl std::fmt::Display for ConsumeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConsumeError::Declined => f.write_str("the payment was declined"),
            ConsumeError::Idempotency(error) => error.fmt(f),
        }
    }
}

impl ConsumeError {
    /// Whether the message should go back on the queue (rather than to the dead letters).
    fn requeue(&self) -> bool {
        match self {
            ConsumeError::Declined => true,
            ConsumeError::Idempotency(error) => error.retry_after().is_some(),
        }
    }
}

struct Consumer {
    idem: Store,
    next_charge: AtomicU64,
    /// The side effect: every charge really made.
    ledger: Mutex<Vec<Charge>>,
}

impl Consumer {
    /// Charges the order once per message id. Amount 0 is declined.
    #[idempotent(store = "self.idem", key = "msg.message_id", ttl = "7d")]
    async fn handle(&self, msg: OrderPlaced) -> Result<Charge, ConsumeError> {
        // A payment provider taking its time, so that racing deliveries overlap.
        tokio::time::sleep(Duration::from_millis(20)).await;
        if msg.amount_cents == 0 {
            return Err(ConsumeError::Declined);
        }
        let charge = Charge {
            charge_id: self.next_charge.fetch_add(1, Ordering::SeqCst) + 1,
            order: msg.order,
            amount_cents: msg.amount_cents,
        };
        self.ledger
            .lock()
            .map_err(|_| ConsumeError::Declined)?
            .push(charge.clone());
        Ok(charge)
    }

    fn charges(&self) -> usize {
        self.ledger.lock().map_or(0, |ledger| ledger.len())
    }
}

fn order(message_id: &str, order: u32, amount_cents: u64) -> OrderPlaced {
    OrderPlaced {
        message_id: message_id.to_owned(),
        order,
        amount_cents,
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("consumer failed: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let folder = tempfile::tempdir()?;
    let (store, described) = match std::env::args().nth(1).as_deref() {
        Some("sqlite") => {
            let path = folder.path().join("consumer.db");
            let sqlite = SqliteStore::connect(&format!("sqlite://{}", path.display())).await?;
            sqlite.migrate().await?;
            (Store::new(sqlite), format!("SQLite at {}", path.display()))
        }
        None | Some("memory") => (Store::new(MemoryStore::new()), "memory".to_owned()),
        Some(other) => return Err(format!("unknown store {other:?}: memory or sqlite").into()),
    };
    println!("store: {described}\n");
    let consumer = Consumer {
        idem: store,
        next_charge: AtomicU64::new(0),
        ledger: Mutex::new(Vec::new()),
    };

    let queue = [
        ("first delivery", order("msg-0001", 17, 1200)),
        ("redelivered after a lost ack", order("msg-0001", 17, 1200)),
        ("another order", order("msg-0002", 18, 300)),
        ("declined", order("msg-0003", 19, 0)),
        ("redelivered: runs again", order("msg-0003", 19, 0)),
        ("same id, other content", order("msg-0002", 99, 1)),
        ("an id too short for a key", order("m-4", 20, 500)),
    ];
    println!(
        "{:<7} {:<30} {:<9} outcome",
        "charges", "delivery", "message"
    );
    let mut dead_letters = Vec::new();
    for (what, msg) in queue {
        let id = msg.message_id.clone();
        let outcome = consumer.handle(msg).await;
        if let Err(error) = &outcome
            && !error.requeue()
        {
            dead_letters.push(id.clone());
        }
        print_row(what, &id, &outcome, consumer.charges());
    }

    // Two workers receive the same message at once: one charges, the other is told to wait.
    let racing = order("msg-0005", 21, 700);
    let (a, b) = tokio::join!(
        consumer.handle(racing.clone()),
        consumer.handle(racing.clone())
    );
    print_row("worker A (racing)", "msg-0005", &a, consumer.charges());
    print_row("worker B (racing)", "msg-0005", &b, consumer.charges());
    let requeued = consumer.handle(racing).await;
    print_row(
        "worker B, requeued",
        "msg-0005",
        &requeued,
        consumer.charges(),
    );

    println!("\ndead letters: {dead_letters:?}");
    println!(
        "charges made: {} (orders 17, 18 and 21), one per message id",
        consumer.charges()
    );
    if consumer.charges() != 3 || a.is_ok() == b.is_ok() {
        return Err("an order was charged twice, or a race went wrong".into());
    }
    Ok(())
}

fn print_row(what: &str, id: &str, outcome: &Result<Charge, ConsumeError>, charges: usize) {
    let outcome = match outcome {
        Ok(charge) => format!(
            "ok: charge #{} of {} cents for order {}",
            charge.charge_id, charge.amount_cents, charge.order
        ),
        Err(error) if error.requeue() => format!("requeue: {error}"),
        Err(error) => format!("dead letter: {error}"),
    };
    println!("{charges:<7} {what:<30} {id:<9} {outcome}");
}
