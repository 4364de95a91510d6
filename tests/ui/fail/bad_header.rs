#![allow(unused)]

use axum::extract::State;
use idem_runtime::{idempotent, Store};

#[derive(Clone)]
struct AppState {
    idem: Store,
}

#[idempotent(store = "app.idem", header = "Idempotency Key")]
async fn space(State(app): State<AppState>) {}

#[idempotent(store = "app.idem", header = "")]
async fn empty(State(app): State<AppState>) {}

fn main() {}
