#![allow(unused)]

use axum::extract::State;
use idem_runtime::{idempotent, Store};

#[derive(Clone)]
struct AppState {
    idem: Store,
}

struct NotAnExtractor;

// With `#[axum::debug_handler]` (below here; above works the same), a parameter that is no
// extractor is reported at its type: the macro checks the function as written.
#[idempotent(store = "app.idem")]
#[axum::debug_handler]
async fn handler(State(app): State<AppState>, body: NotAnExtractor) {}

fn main() {}
