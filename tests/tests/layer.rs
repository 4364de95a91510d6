//! `IdempotencyLayer` on a router of plain axum handlers: the same HTTP behaviour checks as
//! the attribute (`support/http.rs`, on every store), then what only the layer has: the
//! matched route as the handler name, methods that pass through, errors of the wrapped
//! service, non-axum services.

mod support;

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, Form, Json, Path, Query, State};
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use idem_runtime::{DEFAULT_LAYER_NAME, IdempotencyLayer, MemoryStore, Store};
use serde::Deserialize;
use support::http::{App, Call, Caller, Counter, JSON, KEY, TEXT, Tenant, authenticate, send};
use support::metrics::Metrics;
use tower::{ServiceBuilder, ServiceExt, service_fn};

#[derive(Deserialize)]
struct Input {
    name: String,
}

async fn state(State(c): State<Counter>) -> (StatusCode, String) {
    (StatusCode::CREATED, format!("run {}", c.run()))
}

async fn path(State(c): State<Counter>, Path(id): Path<u32>) -> String {
    format!("run {} id {id}", c.run())
}

async fn query(State(c): State<Counter>, Query(q): Query<HashMap<String, String>>) -> String {
    format!("run {} x {:?}", c.run(), q.get("x"))
}

async fn headers(State(c): State<Counter>, headers: HeaderMap) -> String {
    format!("run {} note {:?}", c.run(), headers.get("x-note"))
}

async fn extension(State(c): State<Counter>, Extension(tenant): Extension<Tenant>) -> String {
    format!("run {} tenant {}", c.run(), tenant.0)
}

async fn json(
    State(c): State<Counter>,
    Json(input): Json<Input>,
) -> (StatusCode, Json<serde_json::Value>) {
    let body = serde_json::json!({ "run": c.run(), "name": input.name });
    (StatusCode::CREATED, Json(body))
}

async fn form(State(c): State<Counter>, Form(input): Form<Input>) -> String {
    format!("run {} name {}", c.run(), input.name)
}

async fn bytes(State(c): State<Counter>, body: Bytes) -> Vec<u8> {
    let mut out = format!("run {} ", c.run()).into_bytes();
    out.extend_from_slice(&body);
    out
}

async fn string(State(c): State<Counter>, body: String) -> String {
    format!("run {} body {body}", c.run())
}

async fn fallible(
    State(c): State<Counter>,
    Json(input): Json<Input>,
) -> Result<impl IntoResponse, Response> {
    let run = c.run();
    if input.name == "crash" {
        return Err((StatusCode::INTERNAL_SERVER_ERROR, "refused").into_response());
    }
    let n: u32 = input
        .name
        .parse()
        .map_err(|_| (StatusCode::UNPROCESSABLE_ENTITY, "refused").into_response())?;
    Ok((StatusCode::CREATED, format!("run {run} n {n}")))
}

async fn scoped(State(c): State<Counter>, Path(tenant): Path<String>) -> String {
    format!("run {} tenant {tenant}", c.run())
}

async fn caller(
    State(c): State<Counter>,
    caller: Option<Extension<Caller>>,
    body: String,
) -> String {
    let caller = caller.map_or_else(String::new, |Extension(caller)| caller.0);
    format!("run {} for {caller} body {body}", c.run())
}

async fn plain(State(c): State<Counter>) -> String {
    format!("run {}", c.run())
}

async fn slow(State(c): State<Counter>) -> String {
    let run = c.run();
    c.gate.notified().await;
    format!("run {run}")
}

/// The routes of `support/http.rs`, plain handlers under one `route_layer`; `/optional` has
/// a layer of its own (another header, optional).
fn app(store: Store) -> App {
    let counter = Counter::default();
    let layer = IdempotencyLayer::new(store.clone()).scope(|parts| {
        let path = parts.uri.path();
        path.strip_prefix("/scoped/").unwrap_or_default().to_owned()
    });
    let main = Router::new()
        .route("/state", post(state))
        .route("/path/{id}", post(path))
        .route("/query", post(query))
        .route("/headers", post(headers))
        .route("/extension", post(extension))
        .route("/json", post(json))
        .route("/form", post(form))
        .route("/bytes", post(bytes))
        .route("/string", post(string))
        .route("/fallible", post(fallible))
        .route("/scoped/{tenant}", post(scoped))
        .route("/slow", post(slow))
        .route_layer(layer);
    let optional = Router::new().route("/optional", post(plain)).route_layer(
        IdempotencyLayer::new(store.clone())
            .header("X-Request-Key")
            .optional(true),
    );
    // The layer follows its store's rule: keys scoped by the caller `authenticate` found.
    let callers = Router::new()
        .route("/caller", post(caller))
        .route_layer(IdempotencyLayer::new(store.scope_by_extension::<Caller>()));
    let router = main
        .merge(optional)
        .merge(callers)
        .layer(axum::middleware::from_fn(authenticate))
        .layer(Extension(Tenant("acme".into())))
        .with_state(counter.clone());
    counter.app(router)
}

support::behaviour::http_behaviour_tests!(crate::app);

fn memory() -> Store {
    Store::new(MemoryStore::new())
}

#[tokio::test]
async fn the_handler_is_the_method_and_the_matched_route() {
    let metrics = Metrics::install();
    let app = app(memory());
    for id in [1, 2] {
        let call = Call::new(if id == 1 { "/path/1" } else { "/path/2" }, TEXT, "");
        send(&app.router, call.request(Some(KEY))).await;
    }
    // Two paths, one route: a bounded label, and one record (so the second is a mismatch).
    assert_eq!(
        metrics.handler_outcome("POST /path/{id}", "executed"),
        1,
        "the matched route, never the raw path"
    );
    assert_eq!(metrics.handler_outcome("POST /path/{id}", "mismatch"), 1);
}

#[tokio::test]
async fn other_methods_pass_through_untouched() {
    let counter = Counter::default();
    let router = Router::new()
        .route("/things", post(plain).get(plain).put(plain))
        .route_layer(IdempotencyLayer::new(memory()))
        .with_state(counter.clone());
    for method in [Method::GET, Method::PUT, Method::GET] {
        let request = Request::builder()
            .method(method)
            .uri("/things")
            .header("idempotency-key", KEY)
            .body(Body::empty())
            .unwrap();
        let answer = send(&router, request).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert!(!answer.replayed());
    }
    // No key on a GET is no problem either.
    let get = Request::get("/things").body(Body::empty()).unwrap();
    assert_eq!(send(&router, get).await.status, StatusCode::OK);
    assert_eq!(counter.run(), 5, "four runs, none replayed");
}

#[tokio::test]
async fn methods_are_configurable() {
    let counter = Counter::default();
    let router = Router::new()
        .route("/things", post(plain).put(plain))
        .route_layer(IdempotencyLayer::new(memory()).methods([Method::PUT]))
        .with_state(counter.clone());
    let request = |method: Method| {
        Request::builder()
            .method(method)
            .uri("/things")
            .header("idempotency-key", KEY)
            .body(Body::empty())
            .unwrap()
    };
    send(&router, request(Method::PUT)).await;
    assert!(send(&router, request(Method::PUT)).await.replayed());
    send(&router, request(Method::POST)).await;
    assert!(!send(&router, request(Method::POST)).await.replayed());
    assert_eq!(counter.run(), 4, "one PUT and two POSTs ran");
}

#[tokio::test]
async fn an_extractor_rejection_is_the_services_response_and_is_stored() {
    // The layer sits outside the handler: what the service answers is the response.
    let app = app(memory());
    let broken = send(
        &app.router,
        Call::new("/json", JSON, "{").request(Some(KEY)),
    )
    .await;
    assert_eq!(broken.status, StatusCode::BAD_REQUEST);
    let again = send(
        &app.router,
        Call::new("/json", JSON, "{").request(Some(KEY)),
    )
    .await;
    assert!(again.replayed());
    let fixed = Call::new("/json", JSON, r#"{"name":"a"}"#);
    let fixed = send(&app.router, fixed.request(Some(KEY))).await;
    assert_eq!(
        fixed.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "a new key is needed"
    );
    assert_eq!(app.runs(), 0);
}

/// A bare tower service (as hyper or tonic would run it), with an error type of its own.
#[tokio::test]
async fn a_non_axum_service_uses_the_layers_name_and_keeps_its_errors() {
    let metrics = Metrics::install();
    let counter = Counter::default();
    let service = {
        let counter = counter.clone();
        service_fn(move |request: Request<Body>| {
            let counter = counter.clone();
            async move {
                if request.uri().path() == "/broken" {
                    return Err("the backend is down");
                }
                let run = counter.run();
                Ok::<_, &'static str>(
                    axum::http::Response::builder()
                        .status(StatusCode::ACCEPTED)
                        .body(format!("run {run}"))
                        .unwrap(),
                )
            }
        })
    };
    let layered = ServiceBuilder::new()
        .layer(IdempotencyLayer::new(memory()).name("payments"))
        .service(service);
    let call = |uri: &str| {
        Request::post(uri)
            .header("idempotency-key", KEY)
            .body(Body::from("a"))
            .unwrap()
    };
    let first = layered.clone().oneshot(call("/pay")).await.unwrap();
    let again = layered.clone().oneshot(call("/pay")).await.unwrap();
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(counter.run(), 2, "one run before this one");
    assert_eq!(metrics.handler_outcome("payments", "replayed"), 1);

    // The service's error comes back as its error; the claim is released, so the retry,
    // on a mended backend, would run.
    let other_key = Request::post("/broken")
        .header("idempotency-key", "key-0000-0002")
        .body(Body::empty())
        .unwrap();
    let error = layered.clone().oneshot(other_key).await.unwrap_err();
    assert_eq!(error, "the backend is down");
    assert_eq!(metrics.handler_outcome("payments", "executed"), 2);
}

#[tokio::test]
async fn without_a_route_or_a_name_the_default_name_is_used() {
    let metrics = Metrics::install();
    let service = service_fn(|_: Request<Body>| async { Ok::<_, Infallible>("ok") });
    let layered = ServiceBuilder::new()
        .layer(IdempotencyLayer::new(memory()))
        .service(service);
    let request = Request::post("/anything")
        .header("idempotency-key", KEY)
        .body(Body::empty())
        .unwrap();
    let response = layered.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(metrics.handler_outcome(DEFAULT_LAYER_NAME, "executed"), 1);
}

#[tokio::test(start_paused = true)]
async fn settings_reach_the_engine() {
    let counter = Counter::default();
    let router = Router::new()
        .route("/things", post(plain))
        .route_layer(
            IdempotencyLayer::new(memory())
                .ttl(Duration::from_secs(60))
                .lease(Duration::from_secs(10))
                .retries(2)
                .backoff(Duration::from_millis(10), Duration::from_millis(20)),
        )
        .with_state(counter.clone());
    let call = Call::new("/things", TEXT, "a");
    send(&router, call.request(Some(KEY))).await;
    assert!(send(&router, call.request(Some(KEY))).await.replayed());
    tokio::time::sleep(Duration::from_secs(61)).await;
    let after_ttl = send(&router, call.request(Some(KEY))).await;
    assert!(!after_ttl.replayed(), "the ttl has passed: a new key");
    assert_eq!(counter.run(), 3);
}
