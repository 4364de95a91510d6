//! Which responses are kept, a policy per handler (docs/contract.md, "What a request meets"):
//! by default 2xx–4xx are kept and 5xx released; a handler may keep its 5xx
//! (`keep_server_errors`) or release chosen 4xx (`release`). Each check runs on the attribute
//! and on the tower layer, whose routes answer the status their body names.

mod support;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use idem_runtime::{IdempotencyLayer, MemoryStore, Store, idempotent};
use support::http::{App, Call, Counter, KEY, TEXT, send};
use tower::{ServiceBuilder, ServiceExt, service_fn};

/// Answers the status its body names, with the run's number in a header and the body; a body
/// of `panic` panics.
fn answer(counter: &Counter, body: &str) -> Response {
    let run = counter.run();
    let status = match body.parse::<u16>() {
        Ok(status) => StatusCode::from_u16(status).expect("a status"),
        Err(_) => panic!("asked to panic"),
    };
    (status, [("x-run", run.to_string())], format!("run {run}")).into_response()
}

#[derive(Clone)]
struct AppState {
    idem: Store,
    counter: Counter,
}

#[idempotent(store = app.idem)]
async fn by_default(State(app): State<AppState>, body: String) -> Response {
    answer(&app.counter, &body)
}

#[idempotent(store = app.idem, keep_server_errors = true)]
async fn keeping_5xx(State(app): State<AppState>, body: String) -> Response {
    answer(&app.counter, &body)
}

#[idempotent(store = app.idem, release = [429, 408])]
async fn releasing_429(State(app): State<AppState>, body: String) -> Response {
    answer(&app.counter, &body)
}

/// `/default`, `/keep-5xx` and `/release-429`, each under `#[idempotent]`.
fn attribute(store: Store) -> App {
    let counter = Counter::default();
    let router = Router::new()
        .route("/default", post(by_default))
        .route("/keep-5xx", post(keeping_5xx))
        .route("/release-429", post(releasing_429))
        .with_state(AppState {
            idem: store,
            counter: counter.clone(),
        });
    counter.app(router)
}

async fn plain(State(counter): State<Counter>, body: String) -> Response {
    answer(&counter, &body)
}

/// The same routes, plain handlers each under its own `IdempotencyLayer`.
fn layer(store: Store) -> App {
    let counter = Counter::default();
    let route =
        |path, layer: IdempotencyLayer| Router::new().route(path, post(plain)).route_layer(layer);
    let router = route("/default", IdempotencyLayer::new(store.clone()))
        .merge(route(
            "/keep-5xx",
            IdempotencyLayer::new(store.clone()).keep_server_errors(true),
        ))
        .merge(route(
            "/release-429",
            IdempotencyLayer::new(store).release_statuses(&[429, 408]),
        ))
        .with_state(counter.clone());
    counter.app(router)
}

fn memory() -> Store {
    Store::new(MemoryStore::new())
}

/// Sends `status` to `route` twice under one key: whether the second was a replay.
async fn replayed_on_retry(app: &App, route: &'static str, status: &'static str) -> bool {
    let call = Call::new(route, TEXT, status);
    let first = send(&app.router, call.request(Some(KEY))).await;
    assert_eq!(first.status.as_str(), status);
    assert!(!first.replayed());
    send(&app.router, call.request(Some(KEY))).await.replayed()
}

async fn a_kept_500_is_replayed_byte_for_byte(app: App) {
    let call = Call::new("/keep-5xx", TEXT, "500");
    let first = send(&app.router, call.request(Some(KEY))).await;
    let replay = send(&app.router, call.request(Some(KEY))).await;
    assert_eq!(first.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(replay.status, first.status);
    assert_eq!(replay.body, first.body, "a replay is byte-identical");
    assert_eq!(replay.headers["x-run"], first.headers["x-run"]);
    assert_eq!(replay.content_type(), first.content_type());
    assert!(replay.replayed());
    assert_eq!(app.runs(), 1, "the handler ran once");
}

async fn a_released_429_runs_again_and_other_4xx_are_kept(app: App) {
    assert!(!replayed_on_retry(&app, "/release-429", "429").await);
    assert_eq!(
        app.runs(),
        2,
        "a released 429 leaves no record: the retry ran"
    );
    assert!(!replayed_on_retry(&app, "/release-429", "408").await);
    let other = Call::new("/release-429", TEXT, "409");
    send(&app.router, other.request(Some("key-0000-0409"))).await;
    assert!(
        send(&app.router, other.request(Some("key-0000-0409")))
            .await
            .replayed()
    );
    assert!(
        !replayed_on_retry(&app, "/release-429", "500").await,
        "5xx still released"
    );
}

async fn by_default_500_is_released_and_429_kept(app: App) {
    assert!(!replayed_on_retry(&app, "/default", "500").await);
    assert_eq!(app.runs(), 2);
    let kept = Call::new("/default", TEXT, "429");
    send(&app.router, kept.request(Some("key-0000-0429"))).await;
    assert!(
        send(&app.router, kept.request(Some("key-0000-0429")))
            .await
            .replayed()
    );
    assert_eq!(app.runs(), 3);
}

#[tokio::test]
async fn a_handler_keeping_5xx_replays_its_500() {
    a_kept_500_is_replayed_byte_for_byte(attribute(memory())).await;
    support::behaviour::on(support::behaviour::sqlite, async |store| {
        a_kept_500_is_replayed_byte_for_byte(attribute(store)).await
    })
    .await;
}

#[tokio::test]
async fn a_layer_keeping_5xx_replays_its_500() {
    a_kept_500_is_replayed_byte_for_byte(layer(memory())).await;
}

#[tokio::test]
async fn a_handler_releasing_429_runs_again_on_retry() {
    a_released_429_runs_again_and_other_4xx_are_kept(attribute(memory())).await;
}

#[tokio::test]
async fn a_layer_releasing_429_runs_again_on_retry() {
    a_released_429_runs_again_and_other_4xx_are_kept(layer(memory())).await;
}

#[tokio::test]
async fn by_default_a_handler_releases_500_and_keeps_429() {
    by_default_500_is_released_and_429_kept(attribute(memory())).await;
}

#[tokio::test]
async fn by_default_a_layer_releases_500_and_keeps_429() {
    by_default_500_is_released_and_429_kept(layer(memory())).await;
}

#[tokio::test]
async fn a_panic_still_releases_when_5xx_are_kept() {
    let app = attribute(memory());
    let call = Call::new("/keep-5xx", TEXT, "panic");
    for _ in 0..2 {
        let answer = send(&app.router, call.request(Some(KEY))).await;
        assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(answer.problem_type(), "urn:idem:problem:handler-panicked");
        assert!(!answer.replayed());
    }
    assert_eq!(app.runs(), 2, "never stored: the retry ran");
}

#[tokio::test]
async fn a_layer_ignores_released_statuses_outside_4xx() {
    let counter = Counter::default();
    let router = Router::new()
        .route("/things", post(plain))
        .route_layer(IdempotencyLayer::new(memory()).release_statuses(&[200, 503]))
        .with_state(counter.clone());
    let app = counter.app(router);
    assert!(
        replayed_on_retry(&app, "/things", "200").await,
        "a 2xx is always kept"
    );
}

#[tokio::test]
async fn a_service_error_is_released_even_when_5xx_are_kept() {
    let counter = Counter::default();
    let service = {
        let counter = counter.clone();
        service_fn(move |_: Request<Body>| {
            counter.run();
            async { Err::<Response, _>("the backend is down") }
        })
    };
    let layered = ServiceBuilder::new()
        .layer(IdempotencyLayer::new(memory()).keep_server_errors(true))
        .service(service);
    for _ in 0..2 {
        let request = Request::post("/pay")
            .header("idempotency-key", KEY)
            .body(Body::empty())
            .unwrap();
        let error = layered.clone().oneshot(request).await.unwrap_err();
        assert_eq!(error, "the backend is down", "an error, never a stored 500");
    }
    assert_eq!(counter.run(), 3, "both calls ran the service");
}
