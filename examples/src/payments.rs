//! The payments themselves, kept beside the idempotency records: a table in SQLite or
//! Postgres, a list in Redis or in memory.

use std::sync::{Arc, Mutex};

use idem_runtime::RedisConnection;
use idem_runtime::redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use sqlx::database::HasStatementCache;
use sqlx::{Database, Decode, Encode, Executor, FromRow, IntoArguments, PgPool, SqlitePool, Type};

/// A recorded payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, FromRow)]
pub struct Payment {
    /// Assigned in order, from 1.
    pub id: i64,
    /// In the currency's minor unit.
    pub amount: i64,
    /// Three letters.
    pub currency: String,
}

/// A failure to record or list payments (a database's, or a payment stored in Redis that does
/// not read back).
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The Redis list that holds the payments, in order: a payment's id is its position from 1.
pub const REDIS_LIST: &str = "payments";

/// What the Redis list keeps of a payment (its id is its position).
#[derive(Serialize, Deserialize)]
struct Entry {
    amount: i64,
    currency: String,
}

/// Where payments are recorded.
#[derive(Clone)]
pub enum Payments {
    /// A list in this process.
    Memory(Arc<Mutex<Vec<Payment>>>),
    /// The `payments` table of a SQLite database.
    Sqlite(SqlitePool),
    /// The `payments` table of a Postgres database, shared by every instance.
    Postgres {
        /// Where the statements run.
        pool: PgPool,
        /// Postgres is behind a transaction-mode pooler, which keeps no named statement: the
        /// example's statements are then unnamed, and run in a transaction (README, "Behind a
        /// connection pooler").
        behind_pooler: bool,
    },
    /// The [`REDIS_LIST`] list of the Redis that holds the idempotency records, shared by
    /// every instance.
    Redis(RedisConnection),
}

impl Payments {
    /// An empty in-memory list.
    pub fn memory() -> Self {
        Payments::Memory(Arc::default())
    }

    /// Creates the `payments` table if it is missing (safe from several instances at once).
    pub async fn migrate(&self) -> Result<(), sqlx::Error> {
        match self {
            Payments::Memory(_) | Payments::Redis(_) => Ok(()),
            Payments::Sqlite(pool) => {
                sqlx::query(
                    "CREATE TABLE IF NOT EXISTS payments (
                        id INTEGER PRIMARY KEY AUTOINCREMENT,
                        amount INTEGER NOT NULL,
                        currency TEXT NOT NULL)",
                )
                .execute(pool)
                .await?;
                Ok(())
            }
            Payments::Postgres { pool, .. } => {
                let mut tx = pool.begin().await?;
                // CREATE TABLE IF NOT EXISTS races with itself across connections. Plain text
                // without parameters: one round trip, through a pooler too.
                sqlx::raw_sql("SELECT pg_advisory_xact_lock(7261636)")
                    .execute(&mut *tx)
                    .await?;
                sqlx::raw_sql(
                    "CREATE TABLE IF NOT EXISTS payments (
                        id BIGSERIAL PRIMARY KEY,
                        amount BIGINT NOT NULL,
                        currency TEXT NOT NULL,
                        created_at TIMESTAMPTZ NOT NULL DEFAULT now())",
                )
                .execute(&mut *tx)
                .await?;
                tx.commit().await
            }
        }
    }

    /// Records a payment and returns it with its id.
    pub async fn record(&self, amount: i64, currency: &str) -> Result<Payment, Error> {
        let id = match self {
            Payments::Memory(list) => {
                let mut list = list.lock().unwrap_or_else(|p| p.into_inner());
                let id = list.len() as i64 + 1;
                list.push(Payment {
                    id,
                    amount,
                    currency: currency.to_owned(),
                });
                id
            }
            Payments::Sqlite(pool) => self.record_in(pool, amount, currency).await?.id,
            Payments::Postgres {
                pool,
                behind_pooler: false,
            } => self.record_in(pool, amount, currency).await?.id,
            Payments::Postgres {
                pool,
                behind_pooler: true,
            } => {
                // An unnamed statement is parsed in one round trip and run in a second; in a
                // transaction the pooler keeps one server connection for both.
                let mut tx = pool.begin().await?;
                let id = self.record_in(&mut *tx, amount, currency).await?.id;
                tx.commit().await?;
                id
            }
            Payments::Redis(connection) => {
                let entry = serde_json::to_string(&Entry {
                    amount,
                    currency: currency.to_owned(),
                })?;
                // RPUSH answers the list's new length: the payment's position, its id.
                connection.clone().rpush(REDIS_LIST, entry).await?
            }
        };
        Ok(Payment {
            id,
            amount,
            currency: currency.to_owned(),
        })
    }

    /// Every payment, in the order they were recorded.
    pub async fn list(&self) -> Result<Vec<Payment>, Error> {
        match self {
            Payments::Memory(list) => Ok(list.lock().unwrap_or_else(|p| p.into_inner()).clone()),
            Payments::Sqlite(pool) => Ok(select(pool).await?),
            Payments::Postgres { pool, .. } => Ok(select(pool).await?),
            Payments::Redis(connection) => {
                let entries: Vec<String> = connection.clone().lrange(REDIS_LIST, 0, -1).await?;
                let mut payments = Vec::with_capacity(entries.len());
                for (id, entry) in (1..).zip(entries) {
                    let Entry { amount, currency } = serde_json::from_str(&entry)?;
                    payments.push(Payment {
                        id,
                        amount,
                        currency,
                    });
                }
                Ok(payments)
            }
        }
    }
}

impl Payments {
    /// Records a payment through `db` (a transaction's connection, say) in the `payments`
    /// table of either database, and returns it with its id. The statement is named, prepared
    /// once per connection, except behind a pooler.
    pub async fn record_in<'c, DB>(
        &self,
        db: impl Executor<'c, Database = DB>,
        amount: i64,
        currency: &str,
    ) -> Result<Payment, sqlx::Error>
    where
        DB: Database + HasStatementCache,
        DB::Arguments: IntoArguments<DB>,
        i64: for<'a> Encode<'a, DB> + for<'a> Decode<'a, DB> + Type<DB>,
        for<'a> &'a str: Encode<'a, DB> + Type<DB>,
        (i64,): for<'r> FromRow<'r, DB::Row>,
    {
        let named = !matches!(
            self,
            Payments::Postgres {
                behind_pooler: true,
                ..
            }
        );
        let id = sqlx::query_scalar(
            "INSERT INTO payments (amount, currency) VALUES ($1, $2) RETURNING id",
        )
        .persistent(named)
        .bind(amount)
        .bind(currency)
        .fetch_one(db)
        .await?;
        Ok(Payment {
            id,
            amount,
            currency: currency.to_owned(),
        })
    }
}

/// Every row of the `payments` table of either database, in order: a statement without
/// parameters, sent as plain text in one round trip, so that it works through a pooler too.
async fn select<'c, DB>(db: impl Executor<'c, Database = DB>) -> Result<Vec<Payment>, sqlx::Error>
where
    DB: Database,
    Payment: for<'r> FromRow<'r, DB::Row>,
{
    let rows = sqlx::raw_sql("SELECT id, amount, currency FROM payments ORDER BY id")
        .fetch_all(db)
        .await?;
    rows.iter().map(Payment::from_row).collect()
}
