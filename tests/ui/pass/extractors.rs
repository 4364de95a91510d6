//! Every extractor axum offers, alone and mixed, in a `Router<AppState>` under `post(...)`.
#![deny(warnings)]

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Extension, Form, Json, Path, Query, State};
use axum::http::HeaderMap;
use axum::routing::post;
use axum::Router;
use idem_runtime::{idempotent, MemoryStore, Store};
use serde::Deserialize;

#[derive(Clone)]
struct AppState {
    idem: Store,
}

#[derive(Clone)]
struct Tenant(String);

#[derive(Deserialize)]
struct Input {
    name: String,
}

#[idempotent(store = "app.idem")]
async fn state(State(app): State<AppState>) -> &'static str {
    let _ = app;
    "state"
}

#[idempotent(store = "app.idem")]
async fn path(State(app): State<AppState>, Path(id): Path<u32>) -> String {
    id.to_string()
}

#[idempotent(store = "app.idem")]
async fn query(State(app): State<AppState>, Query(q): Query<HashMap<String, String>>) -> String {
    format!("{}", q.len())
}

#[idempotent(store = "app.idem")]
async fn headers(State(app): State<AppState>, headers: HeaderMap) -> String {
    format!("{}", headers.len())
}

#[idempotent(store = "app.idem")]
async fn extension(State(app): State<AppState>, Extension(tenant): Extension<Tenant>) -> String {
    tenant.0
}

#[idempotent(store = "app.idem")]
async fn json(State(app): State<AppState>, Json(input): Json<Input>) -> Json<String> {
    Json(input.name)
}

#[idempotent(store = "app.idem")]
async fn form(State(app): State<AppState>, Form(input): Form<Input>) -> String {
    input.name
}

#[idempotent(store = "app.idem")]
async fn bytes(State(app): State<AppState>, body: Bytes) -> Bytes {
    body
}

#[idempotent(store = "app.idem")]
async fn string(State(app): State<AppState>, mut body: String) -> String {
    body.push('!');
    body
}

#[idempotent(store = "STORE")]
async fn nothing() -> &'static str {
    "nothing"
}

#[idempotent(store = "app.idem", scope = "tenant.0")]
async fn everything(
    State(app): State<AppState>,
    Path(id): Path<u32>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    Extension(tenant): Extension<Tenant>,
    Json(input): Json<Input>,
) -> String {
    format!("{id} {} {} {} {}", q.len(), headers.len(), tenant.0, input.name)
}

static STORE: std::sync::LazyLock<Store> = std::sync::LazyLock::new(|| Store::new(MemoryStore::new()));

fn router() -> Router<AppState> {
    Router::new()
        .route("/state", post(state))
        .route("/path/{id}", post(path))
        .route("/query", post(query))
        .route("/headers", post(headers))
        .route("/extension", post(extension))
        .route("/json", post(json))
        .route("/form", post(form))
        .route("/bytes", post(bytes))
        .route("/string", post(string))
        .route("/nothing", post(nothing))
        .route("/everything/{id}", post(everything))
}

fn main() {
    let state = AppState {
        idem: Store::new(MemoryStore::new()),
    };
    let _app: Router = router()
        .layer(Extension(Tenant("t".into())))
        .with_state(state);
}
