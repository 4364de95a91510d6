//! `store`, `scope` and `key` as bare Rust expressions, which an IDE can follow, next to the
//! same expressions held in strings, the older form.
#![deny(warnings)]

use std::sync::{Arc, LazyLock};

use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use idem_runtime::{idempotent, Error, MemoryStore, Store};

#[derive(Clone)]
struct AppState {
    idem: Store,
    shared: Arc<Store>,
}

#[derive(Clone)]
struct Tenant(u64);

static STORE: LazyLock<Store> = LazyLock::new(|| Store::new(MemoryStore::new()));

mod stores {
    pub fn payments() -> idem_runtime::Store {
        super::STORE.clone()
    }
}

#[idempotent(store = app.idem)]
async fn field(State(app): State<AppState>) -> StatusCode {
    StatusCode::OK
}

#[idempotent(store = "app.idem")]
async fn field_in_a_string(State(app): State<AppState>) -> StatusCode {
    StatusCode::OK
}

#[idempotent(store = app.shared, scope = tenant.0)]
async fn scope_from_a_tuple_field(
    State(app): State<AppState>,
    Extension(tenant): Extension<Tenant>,
) -> StatusCode {
    StatusCode::OK
}

#[idempotent(store = crate::STORE, scope = format!("{tenant}-{}", "x"))]
async fn static_path_and_format(Path(tenant): Path<String>) -> StatusCode {
    StatusCode::OK
}

#[idempotent(store = stores::payments(), scope = "tenant.0")]
async fn function_call(Extension(tenant): Extension<Tenant>) -> StatusCode {
    StatusCode::OK
}

#[derive(serde::Deserialize)]
struct Order {
    sku: String,
    quantity: u32,
}

/// Patterns with `mut`, `ref` and field shorthand: bound by reference for `scope`, as written
/// inside the function.
#[idempotent(store = app.idem, scope = format!("{}-{sku}", tenant.0))]
async fn binding_modifiers(
    State(app): State<AppState>,
    Extension(mut tenant): Extension<Tenant>,
    axum::Json(Order { ref sku, quantity }): axum::Json<Order>,
) -> String {
    tenant.0 += u64::from(quantity);
    format!("{} {sku}", tenant.0)
}

#[idempotent(store = STORE, key = order_id)]
async fn bare_key(order_id: u64) -> Result<u64, Error> {
    Ok(order_id)
}

#[idempotent(store = "STORE", key = "order_id")]
async fn key_in_a_string(order_id: u64) -> Result<u64, Error> {
    Ok(order_id)
}

fn main() {
    let state = AppState {
        idem: Store::new(MemoryStore::new()),
        shared: Arc::new(Store::new(MemoryStore::new())),
    };
    let _app: Router = Router::new()
        .route("/field", post(field))
        .route("/field_in_a_string", post(field_in_a_string))
        .route("/scope", post(scope_from_a_tuple_field))
        .route("/static/{tenant}", post(static_path_and_format))
        .route("/function_call", post(function_call))
        .route("/binding_modifiers", post(binding_modifiers))
        .layer(Extension(Tenant(7)))
        .with_state(state);
    let _ = (bare_key(1), key_in_a_string(2));
}
