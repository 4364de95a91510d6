#![allow(unused)]

use axum::extract::State;
use idem_runtime::{idempotent, Store};

#[derive(Clone)]
struct AppState {
    idem: Store,
}

#[idempotent(store = app.idem, release = [429, 503])]
async fn server_error(State(app): State<AppState>) {}

#[idempotent(store = app.idem, release = [200])]
async fn success(State(app): State<AppState>) {}

fn main() {}
