#![allow(unused)]

use axum::extract::State;
use idem_runtime::{idempotent, Store};

#[derive(Clone)]
struct AppState {
    idem: Store,
}

#[idempotent(store = app.idem, release = [429, 408, 429])]
async fn handler(State(app): State<AppState>) {}

fn main() {}
