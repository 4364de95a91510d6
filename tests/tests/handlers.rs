//! `#[idempotent]` handlers of every shape, driven through real axum routers: the first call
//! runs the handler, a replay returns its bytes with `Idempotent-Replayed: true`, the same key
//! on another request is 422, a missing or invalid key is 400, and the handler ran once. The
//! checks live in `support/http.rs` and run on every store; `layer.rs` runs them again
//! through the tower layer.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Form, Json, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use idem_runtime::{MemoryStore, Store, idempotent};
use serde::{Deserialize, Serialize};
use support::http::{
    App, Call, Caller, Counter, JSON, KEY, TEXT, Tenant, authenticate, contract_on, send,
};

#[derive(Clone)]
struct AppState {
    idem: Store,
    /// The same store, scoping keys by the caller that `authenticate` found.
    callers: Store,
    counter: Counter,
}

impl AppState {
    /// Counts one run of a handler and returns its number.
    fn run(&self) -> usize {
        self.counter.run()
    }
}

#[derive(Deserialize, Serialize)]
struct Input {
    name: String,
}

#[idempotent(store = "app.idem")]
async fn state(State(app): State<AppState>) -> (StatusCode, String) {
    (StatusCode::CREATED, format!("run {}", app.run()))
}

#[idempotent(store = "app.idem")]
async fn path(State(app): State<AppState>, Path(id): Path<u32>) -> String {
    format!("run {} id {id}", app.run())
}

#[idempotent(store = "app.idem")]
async fn query(State(app): State<AppState>, Query(q): Query<HashMap<String, String>>) -> String {
    format!("run {} x {:?}", app.run(), q.get("x"))
}

#[idempotent(store = "app.idem")]
async fn headers(State(app): State<AppState>, headers: HeaderMap) -> String {
    format!("run {} note {:?}", app.run(), headers.get("x-note"))
}

#[idempotent(store = "app.idem")]
async fn extension(State(app): State<AppState>, Extension(tenant): Extension<Tenant>) -> String {
    format!("run {} tenant {}", app.run(), tenant.0)
}

#[idempotent(store = "app.idem")]
async fn json(
    State(app): State<AppState>,
    Json(input): Json<Input>,
) -> (StatusCode, Json<serde_json::Value>) {
    let body = serde_json::json!({ "run": app.run(), "name": input.name });
    (StatusCode::CREATED, Json(body))
}

#[idempotent(store = "app.idem")]
async fn form(State(app): State<AppState>, Form(input): Form<Input>) -> String {
    format!("run {} name {}", app.run(), input.name)
}

#[idempotent(store = "app.idem")]
async fn bytes(State(app): State<AppState>, body: Bytes) -> Vec<u8> {
    let mut out = format!("run {} ", app.run()).into_bytes();
    out.extend_from_slice(&body);
    out
}

#[idempotent(store = "app.idem")]
async fn string(State(app): State<AppState>, body: String) -> String {
    format!("run {} body {body}", app.run())
}

static RUNS_WITHOUT_PARAMETERS: AtomicUsize = AtomicUsize::new(0);
static STORE: std::sync::LazyLock<Store> =
    std::sync::LazyLock::new(|| Store::new(MemoryStore::new()));

#[idempotent(store = "STORE")]
async fn nothing() -> String {
    let run = RUNS_WITHOUT_PARAMETERS.fetch_add(1, Ordering::SeqCst) + 1;
    format!("run {run}")
}

struct ApiError(StatusCode);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, "refused").into_response()
    }
}

#[idempotent(store = "app.idem")]
async fn fallible(
    State(app): State<AppState>,
    Json(input): Json<Input>,
) -> Result<impl IntoResponse, ApiError> {
    let run = app.run();
    if input.name == "crash" {
        return Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR));
    }
    let n: u32 = input
        .name
        .parse()
        .map_err(|_| ApiError(StatusCode::UNPROCESSABLE_ENTITY))?;
    Ok((StatusCode::CREATED, format!("run {run} n {n}")))
}

#[idempotent(store = "app.idem", scope = "tenant")]
async fn scoped(State(app): State<AppState>, Path(tenant): Path<String>) -> String {
    format!("run {} tenant {tenant}", app.run())
}

#[idempotent(store = app.callers)]
async fn caller(
    State(app): State<AppState>,
    caller: Option<Extension<Caller>>,
    body: String,
) -> String {
    let caller = caller.map_or_else(String::new, |Extension(caller)| caller.0);
    format!("run {} for {caller} body {body}", app.run())
}

#[idempotent(store = "app.idem", header = "X-Request-Key", optional = true)]
async fn optional(State(app): State<AppState>) -> String {
    format!("run {}", app.run())
}

#[idempotent(store = "app.idem")]
async fn slow(State(app): State<AppState>) -> String {
    let run = app.run();
    app.counter.gate.notified().await;
    format!("run {run}")
}

/// The routes of `support/http.rs`, each handler under `#[idempotent]`.
fn app(store: Store) -> App {
    let counter = Counter::default();
    let app_state = AppState {
        callers: store.scope_by_extension::<Caller>(),
        idem: store,
        counter: counter.clone(),
    };
    let router = Router::new()
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
        .route("/fallible", post(fallible))
        .route("/scoped/{tenant}", post(scoped))
        .route("/optional", post(optional))
        .route("/slow", post(slow))
        .route("/caller", post(caller))
        .layer(axum::middleware::from_fn(authenticate))
        .layer(Extension(Tenant("acme".into())))
        .with_state(app_state);
    counter.app(router)
}

support::behaviour::http_behaviour_tests!(crate::app);

fn memory() -> Store {
    Store::new(MemoryStore::new())
}

#[tokio::test]
async fn handler_without_parameters() {
    // The only test on this static store and counter.
    contract_on(
        app(memory()).router,
        Call::new("/nothing", TEXT, "a"),
        Call::new("/nothing", TEXT, "b"),
        StatusCode::OK,
        || RUNS_WITHOUT_PARAMETERS.load(Ordering::SeqCst),
    )
    .await;
}

#[tokio::test]
async fn an_extractor_rejection_is_not_stored() {
    // Attribute only: through the layer, a rejection is the service's response (layer.rs).
    let app = app(memory());
    let broken = send(
        &app.router,
        Call::new("/json", JSON, "{").request(Some(KEY)),
    )
    .await;
    assert!(broken.status.is_client_error(), "{:?}", broken.status);
    assert_eq!(app.runs(), 0);
    // The corrected request, under the same key, runs: the rejection left no record.
    let fixed = send(
        &app.router,
        Call::new("/json", JSON, r#"{"name":"a"}"#).request(Some(KEY)),
    )
    .await;
    assert_eq!(fixed.status, StatusCode::CREATED);
    assert_eq!(app.runs(), 1);
}
