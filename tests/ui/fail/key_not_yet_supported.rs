#![allow(unused)]

use axum::extract::State;
use idem_runtime::{idempotent, Store};

#[derive(Clone)]
struct AppState {
    idem: Store,
}

#[idempotent(store = "app.idem", key = "job.id")]
async fn handler(State(app): State<AppState>) {}

fn main() {}
