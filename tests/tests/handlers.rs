//! `#[idempotent]` handlers of every shape, driven through real axum routers: the first call
//! runs the handler, a replay returns its bytes with `Idempotent-Replayed: true`, the same key
//! on another request is 422, a missing or invalid key is 400, and the handler ran once.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, Form, Json, Path, Query, State};
use axum::http::{HeaderMap, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http_body_util::BodyExt;
use idem_runtime::{MemoryStore, Store, idempotent};
use serde::{Deserialize, Serialize};
use tower::ServiceExt;

#[derive(Clone)]
struct AppState {
    idem: Store,
    runs: Arc<AtomicUsize>,
}

impl AppState {
    /// Counts one run of a handler and returns its number.
    fn run(&self) -> usize {
        self.runs.fetch_add(1, Ordering::SeqCst) + 1
    }
}

#[derive(Clone)]
struct Tenant(String);

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

#[idempotent(store = "app.idem", header = "X-Request-Key", optional = true)]
async fn optional(State(app): State<AppState>) -> String {
    format!("run {}", app.run())
}

fn app() -> (Router, AppState) {
    let app_state = AppState {
        idem: Store::new(MemoryStore::new()),
        runs: Arc::new(AtomicUsize::new(0)),
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
        .layer(Extension(Tenant("acme".into())))
        .with_state(app_state.clone());
    (router, app_state)
}

/// A request to send: where, with which content type and body, under which key.
#[derive(Clone)]
struct Call {
    uri: &'static str,
    content_type: &'static str,
    body: &'static str,
}

impl Call {
    fn new(uri: &'static str, content_type: &'static str, body: &'static str) -> Self {
        Call {
            uri,
            content_type,
            body,
        }
    }

    fn request(&self, key: Option<&str>) -> Request<Body> {
        let mut request = Request::post(self.uri)
            .header("content-type", self.content_type)
            .header("x-note", "hello");
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        request
            .body(Body::from(self.body))
            .expect("a valid request")
    }
}

/// A response, read whole.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn replayed(&self) -> bool {
        self.headers
            .get("idempotent-replayed")
            .is_some_and(|v| v == "true")
    }

    fn content_type(&self) -> Option<&str> {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
    }
}

async fn send(router: &Router, request: Request<Body>) -> Answer {
    let response = router
        .clone()
        .oneshot(request)
        .await
        .expect("routers are infallible");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("a readable body").to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

const KEY: &str = "key-0000-0001";

/// The contract for one handler shape, counting runs in the router's `AppState`. `first` is
/// the request that runs it, `other` one that differs in path, query or body (so it has
/// another fingerprint).
async fn contract(first: Call, other: Call, expected: StatusCode) {
    let (router, state) = app();
    contract_on(router, first, other, expected, move || {
        state.runs.load(Ordering::SeqCst)
    })
    .await;
}

async fn contract_on(
    router: Router,
    first: Call,
    other: Call,
    expected: StatusCode,
    runs: impl Fn() -> usize,
) {
    let before = runs();
    let original = send(&router, first.request(Some(KEY))).await;
    assert_eq!(original.status, expected, "first call: {:?}", original.body);
    assert!(!original.replayed());
    assert_eq!(runs() - before, 1, "the first call runs the handler");

    let replay = send(&router, first.request(Some(KEY))).await;
    assert_eq!(replay.status, original.status);
    assert_eq!(replay.body, original.body, "a replay is byte-identical");
    assert_eq!(replay.content_type(), original.content_type());
    assert!(replay.replayed(), "a replay says so");

    let mismatch = send(&router, other.request(Some(KEY))).await;
    assert_eq!(mismatch.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(mismatch.content_type(), Some("application/problem+json"));

    let missing = send(&router, first.request(None)).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert_eq!(missing.content_type(), Some("application/problem+json"));

    let invalid = send(&router, first.request(Some("short"))).await;
    assert_eq!(invalid.status, StatusCode::BAD_REQUEST);
    assert_ne!(
        invalid.body, missing.body,
        "missing and invalid are two problems"
    );

    assert_eq!(runs() - before, 1, "the handler ran exactly once");
}

const TEXT: &str = "text/plain";
const JSON: &str = "application/json";
const FORM: &str = "application/x-www-form-urlencoded";

#[tokio::test]
async fn state_handler() {
    contract(
        Call::new("/state", TEXT, "a"),
        Call::new("/state", TEXT, "b"),
        StatusCode::CREATED,
    )
    .await;
}

#[tokio::test]
async fn path_handler() {
    contract(
        Call::new("/path/1", TEXT, ""),
        Call::new("/path/2", TEXT, ""),
        StatusCode::OK,
    )
    .await;
}

#[tokio::test]
async fn query_handler() {
    contract(
        Call::new("/query?x=1", TEXT, ""),
        Call::new("/query?x=2", TEXT, ""),
        StatusCode::OK,
    )
    .await;
}

#[tokio::test]
async fn header_map_handler() {
    contract(
        Call::new("/headers", TEXT, "a"),
        Call::new("/headers", TEXT, "b"),
        StatusCode::OK,
    )
    .await;
}

#[tokio::test]
async fn extension_handler() {
    contract(
        Call::new("/extension", TEXT, "a"),
        Call::new("/extension", TEXT, "b"),
        StatusCode::OK,
    )
    .await;
}

#[tokio::test]
async fn json_handler() {
    contract(
        Call::new("/json", JSON, r#"{"name":"a"}"#),
        Call::new("/json", JSON, r#"{"name":"b"}"#),
        StatusCode::CREATED,
    )
    .await;
}

#[tokio::test]
async fn form_handler() {
    contract(
        Call::new("/form", FORM, "name=a"),
        Call::new("/form", FORM, "name=b"),
        StatusCode::OK,
    )
    .await;
}

#[tokio::test]
async fn bytes_handler() {
    contract(
        Call::new("/bytes", "application/octet-stream", "\x00\x01"),
        Call::new("/bytes", "application/octet-stream", "\x00\x02"),
        StatusCode::OK,
    )
    .await;
}

#[tokio::test]
async fn string_handler() {
    contract(
        Call::new("/string", TEXT, "a"),
        Call::new("/string", TEXT, "b"),
        StatusCode::OK,
    )
    .await;
}

#[tokio::test]
async fn handler_without_parameters() {
    // The only test on this static store and counter.
    contract_on(
        app().0,
        Call::new("/nothing", TEXT, "a"),
        Call::new("/nothing", TEXT, "b"),
        StatusCode::OK,
        || RUNS_WITHOUT_PARAMETERS.load(Ordering::SeqCst),
    )
    .await;
}

#[tokio::test]
async fn result_handler_with_question_mark() {
    contract(
        Call::new("/fallible", JSON, r#"{"name":"1"}"#),
        Call::new("/fallible", JSON, r#"{"name":"2"}"#),
        StatusCode::CREATED,
    )
    .await;
}

#[tokio::test]
async fn an_error_through_question_mark_is_a_response_like_any_other() {
    let (router, state) = app();
    let call = Call::new("/fallible", JSON, r#"{"name":"x"}"#);
    let first = send(&router, call.request(Some(KEY))).await;
    assert_eq!(first.status, StatusCode::UNPROCESSABLE_ENTITY);
    let replay = send(&router, call.request(Some(KEY))).await;
    assert_eq!(replay.body, first.body);
    assert!(replay.replayed(), "a 4xx from the handler is stored");
    assert_eq!(state.runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_server_error_is_not_stored_so_a_retry_runs_again() {
    let (router, state) = app();
    let call = Call::new("/fallible", JSON, r#"{"name":"crash"}"#);
    for _ in 0..2 {
        let answer = send(&router, call.request(Some(KEY))).await;
        assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!answer.replayed());
    }
    assert_eq!(state.runs.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_extractor_rejection_is_not_stored() {
    let (router, state) = app();
    let broken = send(&router, Call::new("/json", JSON, "{").request(Some(KEY))).await;
    assert!(broken.status.is_client_error(), "{:?}", broken.status);
    assert_eq!(state.runs.load(Ordering::SeqCst), 0);
    // The corrected request, under the same key, runs: the rejection left no record.
    let fixed = send(
        &router,
        Call::new("/json", JSON, r#"{"name":"a"}"#).request(Some(KEY)),
    )
    .await;
    assert_eq!(fixed.status, StatusCode::CREATED);
    assert_eq!(state.runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn one_key_on_two_handlers_is_two_records() {
    let (router, state) = app();
    let a = send(&router, Call::new("/string", TEXT, "a").request(Some(KEY))).await;
    let b = send(&router, Call::new("/headers", TEXT, "a").request(Some(KEY))).await;
    assert!(!a.replayed() && !b.replayed());
    assert_eq!(state.runs.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn one_key_under_two_scopes_is_two_records() {
    let (router, state) = app();
    let acme = Call::new("/scoped/acme", TEXT, "a");
    let first = send(&router, acme.request(Some(KEY))).await;
    assert_eq!(first.status, StatusCode::OK);
    assert!(send(&router, acme.request(Some(KEY))).await.replayed());

    // Unscoped, this would be the same key on another path: a mismatch. Scoped by tenant,
    // it is another record, and it runs.
    let globex = send(
        &router,
        Call::new("/scoped/globex", TEXT, "a").request(Some(KEY)),
    )
    .await;
    assert_eq!(globex.status, StatusCode::OK);
    assert!(!globex.replayed());
    assert_eq!(globex.body, Bytes::from("run 2 tenant globex"));
    assert_eq!(state.runs.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_optional_key_in_a_custom_header() {
    let (router, state) = app();
    let call = Call::new("/optional", TEXT, "a");
    for _ in 0..2 {
        let answer = send(&router, call.request(None)).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert!(!answer.replayed());
    }
    assert_eq!(
        state.runs.load(Ordering::SeqCst),
        2,
        "no header: no idempotency"
    );

    let keyed = || {
        Request::post("/optional")
            .header("x-request-key", KEY)
            .body(Body::from("a"))
            .expect("a valid request")
    };
    let first = send(&router, keyed()).await;
    let replay = send(&router, keyed()).await;
    assert!(!first.replayed() && replay.replayed());
    assert_eq!(replay.body, first.body);
    // `Idempotency-Key` means nothing to this handler.
    let ignored = send(&router, call.request(Some(KEY))).await;
    assert!(!ignored.replayed());
    assert_eq!(state.runs.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn the_applications_body_limit_applies_before_any_record() {
    let (router, state) = app();
    let router = router.layer(axum::extract::DefaultBodyLimit::max(16));
    let large = send(
        &router,
        Call::new("/string", TEXT, "a body longer than sixteen bytes").request(Some(KEY)),
    )
    .await;
    assert_eq!(large.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(state.runs.load(Ordering::SeqCst), 0);
    // The same key with a body under the limit runs: the 413 left no record.
    let small = send(
        &router,
        Call::new("/string", TEXT, "short").request(Some(KEY)),
    )
    .await;
    assert_eq!(small.status, StatusCode::OK);
    assert_eq!(state.runs.load(Ordering::SeqCst), 1);
}
