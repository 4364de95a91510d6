//! The `Tx` a transactional run's work gets: its transaction on the store's database.

use std::ops::{Deref, DerefMut};

use sqlx::Database;

use super::statements::{Dialect, SqlTransaction};
use crate::engine::execute::{Lendable, Lent, TransactionSlot};

/// A transactional handler's transaction on the store's database, opened after its claim:
/// what it writes through `&mut *tx` commits together with its stored response, or not at all
/// (docs/contract.md, "Transactional mode").
///
/// Take it as a parameter of a handler marked `#[idempotent(transactional)]`; the runtime
/// commits it, with the response, after the handler returns. Do not keep it beyond the run.
///
/// ```no_run
/// use axum::{Json, extract::State, http::StatusCode};
/// use idem_runtime::{PgTx, Store, idempotent};
/// # #[derive(Clone)] struct AppState { idem: Store }
/// # #[derive(serde::Deserialize)] struct NewPayment { amount: i64 }
///
/// #[idempotent(store = app.idem, transactional)]
/// async fn create_payment(
///     State(app): State<AppState>,
///     mut tx: PgTx,
///     Json(req): Json<NewPayment>,
/// ) -> Result<StatusCode, StatusCode> {
///     sqlx::query("INSERT INTO payments (amount) VALUES ($1)")
///         .bind(req.amount)
///         .execute(&mut *tx)
///         .await
///         .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
///     Ok(StatusCode::CREATED)
/// }
/// ```
pub struct Tx<DB: Dialect> {
    /// Taken only when the `Tx` is dropped, to hand it back.
    transaction: Option<Box<SqlTransaction<DB>>>,
    back: TransactionSlot,
}

/// A transactional handler's transaction on a [`PostgresStore`](crate::PostgresStore).
#[cfg(feature = "postgres")]
pub type PgTx = Tx<sqlx::Postgres>;

/// A transactional handler's transaction on a [`SqliteStore`](crate::SqliteStore).
#[cfg(feature = "sqlite")]
pub type SqliteTx = Tx<sqlx::Sqlite>;

impl<DB: Dialect> Lendable for Tx<DB> {
    fn lend(lent: Lent) -> Option<Self> {
        let transaction = lent.transaction.into_any().downcast().ok()?;
        Some(Tx {
            transaction: Some(transaction),
            back: lent.back,
        })
    }
}

impl<DB: Dialect> Tx<DB> {
    fn transaction(&self) -> &SqlTransaction<DB> {
        self.transaction
            .as_deref()
            .expect("a Tx holds its transaction until it is dropped")
    }
}

impl<DB: Dialect> Deref for Tx<DB> {
    type Target = <DB as Database>::Connection;

    fn deref(&self) -> &Self::Target {
        &self.transaction().transaction
    }
}

impl<DB: Dialect> DerefMut for Tx<DB> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self
            .transaction
            .as_deref_mut()
            .expect("a Tx holds its transaction until it is dropped")
            .transaction
    }
}

impl<DB: Dialect> Drop for Tx<DB> {
    fn drop(&mut self) {
        if let Some(transaction) = self.transaction.take() {
            self.back.put(transaction);
        }
    }
}

impl<DB: Dialect> std::fmt::Debug for Tx<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tx").finish_non_exhaustive()
    }
}
