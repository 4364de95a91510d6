#![allow(unused)]

use axum::extract::{Json, State};
use idem_runtime::{idempotent, PgTx, SqliteTx, Store};

#[derive(Clone)]
struct AppState {
    idem: Store,
}

#[idempotent(store = app.idem, transactional, optional = true)]
async fn handler(State(app): State<AppState>, mut tx: PgTx, Json(body): Json<String>) {}

fn main() {}
