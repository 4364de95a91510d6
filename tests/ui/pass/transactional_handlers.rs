//! Transactional axum handlers: the `Tx` first, in the middle or last, on Postgres and SQLite,
//! with an isolation level and a response policy; the router never sees the `Tx` (the runtime opens it after the
//! claim). Built, not called: no database is needed.
#![deny(warnings)]

use axum::extract::{Json, Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use idem_runtime::{idempotent, MemoryStore, PgTx, SqliteTx, Store, Tx};
use serde::Deserialize;

#[derive(Clone)]
struct AppState {
    idem: Store,
}

#[derive(Deserialize)]
struct New {
    amount: i64,
}

fn failed(_: sqlx::Error) -> StatusCode {
    StatusCode::INTERNAL_SERVER_ERROR
}

#[idempotent(store = app.idem, transactional)]
async fn create(
    State(app): State<AppState>,
    mut tx: PgTx,
    Json(req): Json<New>,
) -> Result<StatusCode, StatusCode> {
    sqlx::query("INSERT INTO payments (amount) VALUES ($1)")
        .bind(req.amount)
        .execute(&mut *tx)
        .await
        .map_err(failed)?;
    Ok(StatusCode::CREATED)
}

#[idempotent(
    store = app.idem,
    transactional,
    isolation = "serializable",
    keep_server_errors = true,
    release = [429, 408]
)]
async fn create_on_sqlite(
    State(app): State<AppState>,
    mut tx: SqliteTx,
    Json(req): Json<New>,
) -> Result<StatusCode, StatusCode> {
    sqlx::query("INSERT INTO payments (amount) VALUES (?)")
        .bind(req.amount)
        .execute(&mut *tx)
        .await
        .map_err(failed)?;
    Ok(StatusCode::CREATED)
}

// The `Tx` last: the extractor before it takes the request's body.
#[idempotent(store = app.idem, transactional = true, isolation = "read_committed")]
async fn tx_last(
    State(app): State<AppState>,
    Path(id): Path<i64>,
    mut tx: idem_runtime::Tx<sqlx::Postgres>,
) -> Result<String, StatusCode> {
    let row: (i64,) = sqlx::query_as("SELECT $1")
        .bind(id)
        .fetch_one(&mut *tx)
        .await
        .map_err(failed)?;
    Ok(row.0.to_string())
}

// The `Tx` alone, first, and the store from a static.
static STORE: std::sync::LazyLock<Store> =
    std::sync::LazyLock::new(|| Store::new(MemoryStore::new()));

#[idempotent(store = STORE, transactional, isolation = "repeatable_read")]
async fn tx_only(tx: Tx<sqlx::Sqlite>) -> StatusCode {
    drop(tx);
    StatusCode::NO_CONTENT
}

fn main() {
    let state = AppState {
        idem: Store::new(MemoryStore::new()),
    };
    let _app: Router = Router::new()
        .route("/payments", post(create))
        .route("/sqlite/payments", post(create_on_sqlite))
        .route("/payments/{id}", post(tx_last))
        .route("/ping", post(tx_only))
        .with_state(state);
}
