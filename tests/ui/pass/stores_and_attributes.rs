//! Where the store comes from (a pattern-bound name, a static, a function call, an `Arc`),
//! scopes from extractors, every argument, a `crate` override, and attributes that stay.
#![deny(warnings)]

use std::sync::{Arc, LazyLock};

use axum::extract::{Extension, Json, Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use idem_runtime::{idempotent, MemoryStore, Store};

#[derive(Clone)]
struct AppState {
    idem: Store,
    shared: Arc<Store>,
}

#[derive(Clone)]
struct User {
    tenant_id: u64,
}

static STORE: LazyLock<Store> = LazyLock::new(|| Store::new(MemoryStore::new()));

mod stores {
    use super::*;

    pub fn payments() -> Store {
        STORE.clone()
    }

    pub fn borrowed() -> &'static Store {
        &STORE
    }
}

/// The runtime, re-exported under another path.
pub mod reexported {
    pub use idem_runtime as idem;
}

#[idempotent(store = "app.idem")]
async fn bound_name(State(app): State<AppState>) -> StatusCode {
    StatusCode::OK
}

#[idempotent(store = "app.shared")]
async fn arc_field(State(app): State<AppState>) -> StatusCode {
    StatusCode::OK
}

#[idempotent(store = "STORE")]
async fn static_store() -> StatusCode {
    StatusCode::OK
}

#[idempotent(store = "crate::STORE")]
async fn static_path() -> StatusCode {
    StatusCode::OK
}

#[idempotent(store = "stores::payments()")]
async fn function_call() -> StatusCode {
    StatusCode::OK
}

#[idempotent(store = "stores::borrowed()")]
async fn function_reference() -> StatusCode {
    StatusCode::OK
}

#[idempotent(store = "app.idem", scope = "user.tenant_id")]
async fn scope_from_extension(
    State(app): State<AppState>,
    Extension(user): Extension<User>,
    body: String,
) -> String {
    format!("{} {body}", user.tenant_id)
}

#[idempotent(store = "STORE", scope = "tenant")]
async fn scope_from_path(Path(tenant): Path<String>, Json(n): Json<u32>) -> String {
    format!("{tenant} {n}")
}

#[idempotent(
    store = "app.idem",
    retries = 20,
    backoff = "10ms..1s",
    ttl = "7d",
    lease = "2m",
    header = "X-Request-Id",
    optional = true,
    scope = "format!(\"{}-{}\", user.tenant_id, \"x\")",
    crate = "crate::reexported::idem"
)]
async fn every_argument(State(app): State<AppState>, Extension(user): Extension<User>) -> StatusCode {
    StatusCode::OK
}

/// Doc comments, visibility and other attributes stay on the generated function.
#[idempotent(store = "app.idem")]
#[axum::debug_handler]
#[allow(clippy::unused_async)]
pub async fn debugged(State(app): State<AppState>, Json(n): Json<u32>) -> Json<u32> {
    Json(n + 1)
}

#[idempotent(store = "app.idem")]
pub(crate) async fn r#crate_visible(State(app): State<AppState>) -> StatusCode {
    StatusCode::OK
}

fn main() {
    let state = AppState {
        idem: Store::new(MemoryStore::new()),
        shared: Arc::new(Store::new(MemoryStore::new())),
    };
    let _app: Router = Router::new()
        .route("/bound_name", post(bound_name))
        .route("/arc_field", post(arc_field))
        .route("/static_store", post(static_store))
        .route("/static_path", post(static_path))
        .route("/function_call", post(function_call))
        .route("/function_reference", post(function_reference))
        .route("/scope_from_extension", post(scope_from_extension))
        .route("/scope_from_path/{tenant}", post(scope_from_path))
        .route("/every_argument", post(every_argument))
        .route("/debugged", post(debugged))
        .route("/crate_visible", post(crate_visible))
        .layer(Extension(User { tenant_id: 7 }))
        .with_state(state);
}
