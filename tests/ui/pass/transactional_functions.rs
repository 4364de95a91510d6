//! Plain-function mode with a `Tx`: callers pass every argument but the transaction, which
//! the runtime lends to the body; free functions and methods, Postgres and SQLite. The
//! futures are made and dropped, never polled: no database is needed.
#![deny(warnings)]

use std::sync::LazyLock;

use idem_runtime::{idempotent, Error, MemoryStore, PgTx, SqliteTx, Store};
use serde::{Deserialize, Serialize};

static STORE: LazyLock<Store> = LazyLock::new(|| Store::new(MemoryStore::new()));

#[derive(Serialize, Deserialize)]
struct Order {
    id: i64,
    amount: i64,
}

#[derive(Serialize, Deserialize)]
struct Receipt {
    id: i64,
}

#[derive(Debug)]
enum ConsumerError {
    Idem(Error),
    Db(sqlx::Error),
}

impl From<Error> for ConsumerError {
    fn from(error: Error) -> Self {
        ConsumerError::Idem(error)
    }
}

impl From<sqlx::Error> for ConsumerError {
    fn from(error: sqlx::Error) -> Self {
        ConsumerError::Db(error)
    }
}

#[idempotent(store = STORE, key = format!("order-{}", order.id), transactional)]
async fn consume(mut tx: PgTx, order: Order) -> Result<Receipt, ConsumerError> {
    sqlx::query("INSERT INTO orders (id, amount) VALUES ($1, $2)")
        .bind(order.id)
        .bind(order.amount)
        .execute(&mut *tx)
        .await?;
    Ok(Receipt { id: order.id })
}

struct Consumer {
    idem: Store,
}

impl Consumer {
    #[idempotent(store = self.idem, key = order.id, transactional, isolation = "serializable")]
    async fn handle(&self, order: Order, mut tx: SqliteTx) -> Result<Receipt, ConsumerError> {
        sqlx::query("INSERT INTO orders (id, amount) VALUES (?, ?)")
            .bind(order.id)
            .bind(order.amount)
            .execute(&mut *tx)
            .await?;
        Ok(Receipt { id: order.id })
    }
}

fn main() {
    let unpolled = consume(Order { id: 1, amount: 5 });
    drop(unpolled);
    let consumer = Consumer {
        idem: Store::new(MemoryStore::new()),
    };
    let unpolled = consumer.handle(Order { id: 2, amount: 7 });
    drop(unpolled);
}
