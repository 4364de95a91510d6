#![allow(unused)]

use axum::extract::State;
use idem_runtime::{idempotent, Store};

#[derive(Clone)]
struct AppState {
    idem: Store,
}

#[derive(Clone)]
struct Other {
    name: String,
}

#[idempotent(store = "other.name")]
async fn handler(State(other): State<Other>) {}

// A bare expression: the error points at it the same way.
#[idempotent(store = other.name)]
async fn bare(State(other): State<Other>) {}

fn main() {}
