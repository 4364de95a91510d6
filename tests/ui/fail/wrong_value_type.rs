#![allow(unused)]

use axum::extract::State;
use idem_runtime::{idempotent, Store};

#[derive(Clone)]
struct AppState {
    idem: Store,
}

#[idempotent(store = "app.idem", retries = "5")]
async fn quoted_retries(State(app): State<AppState>) {}

#[idempotent(store = "app.idem", optional = "yes")]
async fn string_optional(State(app): State<AppState>) {}

#[idempotent(store = "app.idem", ttl = 30)]
async fn integer_ttl(State(app): State<AppState>) {}

#[idempotent(store = "app.idem", optional)]
async fn bare_flag(State(app): State<AppState>) {}

#[idempotent(store = "app.idem +")]
async fn not_an_expression(State(app): State<AppState>) {}

fn main() {}
