#![allow(unused)]

use axum::extract::State;
use idem_runtime::{idempotent, Store};

#[derive(Clone)]
struct AppState {
    idem: Store,
}

#[idempotent(store = "app.idem", ttl = "soon")]
async fn word(State(app): State<AppState>) {}

#[idempotent(store = "app.idem", lease = "1.5s")]
async fn fraction(State(app): State<AppState>) {}

#[idempotent(store = "app.idem", ttl = "3w")]
async fn unknown_unit(State(app): State<AppState>) {}

#[idempotent(store = "app.idem", lease = "0s")]
async fn zero(State(app): State<AppState>) {}

#[idempotent(store = "app.idem", backoff = "2s")]
async fn backoff_not_a_range(State(app): State<AppState>) {}

#[idempotent(store = "app.idem", backoff = "2s..100ms")]
async fn backoff_backwards(State(app): State<AppState>) {}

fn main() {}
