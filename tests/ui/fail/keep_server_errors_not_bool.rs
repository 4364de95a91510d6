#![allow(unused)]

use axum::extract::State;
use idem_runtime::{idempotent, Store};

#[derive(Clone)]
struct AppState {
    idem: Store,
}

#[idempotent(store = app.idem, keep_server_errors = "yes")]
async fn quoted(State(app): State<AppState>) {}

#[idempotent(store = app.idem, keep_server_errors)]
async fn bare(State(app): State<AppState>) {}

fn main() {}
