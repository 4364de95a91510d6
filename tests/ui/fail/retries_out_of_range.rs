#![allow(unused)]

use axum::extract::State;
use idem_runtime::{idempotent, Store};

#[derive(Clone)]
struct AppState {
    idem: Store,
}

#[idempotent(store = "app.idem", retries = 0)]
async fn zero(State(app): State<AppState>) {}

#[idempotent(store = "app.idem", retries = 21)]
async fn too_many(State(app): State<AppState>) {}

fn main() {}
