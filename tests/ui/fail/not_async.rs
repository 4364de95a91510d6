#![allow(unused)]

use axum::extract::State;
use idem_runtime::{idempotent, Store};

#[derive(Clone)]
struct AppState {
    idem: Store,
}

#[idempotent(store = "app.idem")]
fn handler(State(app): State<AppState>) -> &'static str {
    "not async"
}

#[idempotent(store = "app.idem")]
struct NotAFunction;

fn main() {}
