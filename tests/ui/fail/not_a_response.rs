#![allow(unused)]

use axum::extract::State;
use idem_runtime::{idempotent, Store};

#[derive(Clone)]
struct AppState {
    idem: Store,
}

struct NotAResponse;

#[idempotent(store = "app.idem")]
async fn handler(State(app): State<AppState>) -> NotAResponse {
    NotAResponse
}

fn main() {}
