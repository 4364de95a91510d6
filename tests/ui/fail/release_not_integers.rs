#![allow(unused)]

use axum::extract::State;
use idem_runtime::{idempotent, Store};

#[derive(Clone)]
struct AppState {
    idem: Store,
}

#[idempotent(store = app.idem, release = [429, "408"])]
async fn quoted(State(app): State<AppState>) {}

#[idempotent(store = app.idem, release = 429)]
async fn not_a_list(State(app): State<AppState>) {}

fn main() {}
