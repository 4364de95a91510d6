#![allow(unused)]

use axum::extract::State;
use idem_runtime::{idempotent, Store};

#[derive(Clone)]
struct AppState {
    idem: Store,
}

#[idempotent(store = "app.idem")]
async fn handler(State(app): State<AppState>) -> String {
    let local = std::rc::Rc::new(1);
    async {}.await;
    local.to_string()
}

fn main() {}
