//! The payments themselves, kept beside the idempotency records: a table in SQLite or
//! Postgres, a list in memory.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Row, SqlitePool};

/// A recorded payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    /// Assigned in order, from 1.
    pub id: i64,
    /// In the currency's minor unit.
    pub amount: i64,
    /// Three letters.
    pub currency: String,
}

/// Where payments are recorded.
#[derive(Clone)]
pub enum Payments {
    /// A list in this process.
    Memory(Arc<Mutex<Vec<Payment>>>),
    /// The `payments` table of a SQLite database.
    Sqlite(SqlitePool),
    /// The `payments` table of a Postgres database, shared by every instance.
    Postgres(PgPool),
}

impl Payments {
    /// An empty in-memory list.
    pub fn memory() -> Self {
        Payments::Memory(Arc::default())
    }

    /// Creates the `payments` table if it is missing (safe from several instances at once).
    pub async fn migrate(&self) -> Result<(), sqlx::Error> {
        match self {
            Payments::Memory(_) => Ok(()),
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
            Payments::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                // CREATE TABLE IF NOT EXISTS races with itself across connections.
                sqlx::query("SELECT pg_advisory_xact_lock(7261636)")
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
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
    pub async fn record(&self, amount: i64, currency: &str) -> Result<Payment, sqlx::Error> {
        const INSERT: &str = "INSERT INTO payments (amount, currency) VALUES ($1, $2) RETURNING id";
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
            Payments::Sqlite(pool) => {
                let row = sqlx::query(INSERT)
                    .bind(amount)
                    .bind(currency)
                    .fetch_one(pool)
                    .await?;
                row.try_get("id")?
            }
            Payments::Postgres(pool) => {
                let row = sqlx::query(INSERT)
                    .bind(amount)
                    .bind(currency)
                    .fetch_one(pool)
                    .await?;
                row.try_get("id")?
            }
        };
        Ok(Payment {
            id,
            amount,
            currency: currency.to_owned(),
        })
    }

    /// Every payment, in the order they were recorded.
    pub async fn list(&self) -> Result<Vec<Payment>, sqlx::Error> {
        const SELECT: &str = "SELECT id, amount, currency FROM payments ORDER BY id";
        match self {
            Payments::Memory(list) => Ok(list.lock().unwrap_or_else(|p| p.into_inner()).clone()),
            Payments::Sqlite(pool) => sqlx::query(SELECT)
                .fetch_all(pool)
                .await?
                .iter()
                .map(|row| {
                    Ok(Payment {
                        id: row.try_get("id")?,
                        amount: row.try_get("amount")?,
                        currency: row.try_get("currency")?,
                    })
                })
                .collect(),
            Payments::Postgres(pool) => sqlx::query(SELECT)
                .fetch_all(pool)
                .await?
                .iter()
                .map(|row| {
                    Ok(Payment {
                        id: row.try_get("id")?,
                        amount: row.try_get("amount")?,
                        currency: row.try_get("currency")?,
                    })
                })
                .collect(),
        }
    }
}
