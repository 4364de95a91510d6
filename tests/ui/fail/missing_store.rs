#![allow(unused)]

use axum::extract::State;
use idem_runtime::{idempotent, Store};

#[derive(Clone)]
struct AppState {
    idem: Store,
}

#[idempotent(retries = 3)]
async fn handler(State(app): State<AppState>) {}

#[idempotent]
async fn no_arguments(State(app): State<AppState>) {}

fn main() {}
