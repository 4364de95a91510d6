#![allow(unused)]

use axum::extract::State;
use idem_runtime::{idempotent, Store};

#[derive(Clone)]
struct AppState {
    idem: Store,
}

struct Payments;

impl Payments {
    #[idempotent(store = "app.idem")]
    async fn create(&self, State(app): State<AppState>) {}
}

fn main() {}
