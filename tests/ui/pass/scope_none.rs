//! `scope = none`: keys shared by every caller on purpose, on a handler (whatever the store's
//! rule) and on a plain function, which has no request for a rule to read.
#![deny(warnings)]

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use idem_runtime::{idempotent, Error, MemoryStore, Store};

#[derive(Clone)]
struct AppState {
    idem: Store,
}

#[idempotent(store = app.idem, scope = none)]
async fn provider_webhook(State(app): State<AppState>, body: String) -> StatusCode {
    let _ = body;
    StatusCode::NO_CONTENT
}

struct Consumer {
    idem: Store,
}

impl Consumer {
    #[idempotent(store = self.idem, key = message_id, scope = none)]
    async fn handle(&self, message_id: String) -> Result<u32, Error> {
        Ok(message_id.len() as u32)
    }
}

fn main() {
    let idem = Store::new(MemoryStore::new())
        .scope_by(|parts| parts.headers.get("x-caller")?.to_str().ok().map(str::to_owned));
    let _app: Router = Router::new()
        .route("/webhook", post(provider_webhook))
        .with_state(AppState { idem: idem.clone() });
    let _consumer = Consumer { idem };
}
