#![allow(unused)]

use axum::extract::State;
use idem_runtime::{idempotent, Store};

#[derive(Clone)]
struct AppState {
    idem: Store,
}

#[idempotent(store = "app.idem")]
async fn generic<T: Send>(State(app): State<AppState>, body: T) {}

#[idempotent(store = "app.idem")]
async fn impl_trait(State(app): State<AppState>, body: impl Send) {}

fn main() {}
