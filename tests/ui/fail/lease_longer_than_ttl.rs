#![allow(unused)]

use axum::extract::State;
use idem_runtime::{idempotent, Store};

#[derive(Clone)]
struct AppState {
    idem: Store,
}

#[idempotent(store = "app.idem", ttl = "1m", lease = "2m")]
async fn explicit(State(app): State<AppState>) {}

#[idempotent(store = "app.idem", ttl = "10s")]
async fn default_lease(State(app): State<AppState>) {}

fn main() {}
