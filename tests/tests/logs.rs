//! Logs and spans never carry a whole key or stored data (docs/contract.md, "Observability"):
//! every span and event field, at every level, is captured while a key goes through each path
//! a request can take (new, replay, mismatch, conflict, a storage failure and its takeover, an
//! abandoned claim and its takeover, a plain function), and the capture must show the key's
//! first 8 characters but never the whole key, its tail, or a stored body.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, StatusCode};
use axum::routing::post;
use idem_runtime::{Error, FailingStore, MemoryStore, Op, Store, idempotent};
use serde::{Deserialize, Serialize};
use support::capture::Capture;
use tokio::sync::Notify;
use tower::ServiceExt;

const KEY: &str = "secretkey-0123456789abcdef";
const BODY: &str = r#"{"card":"4242-secret-card-number"}"#;
const OTHER_BODY: &str = r#"{"card":"5555-other-card-number"}"#;
const ANSWER: &str = "secret-answer-body-ffeeddcc";

/// The capture shows the key's prefix (so it works) and nothing a log must not carry.
fn assert_clean(logs: &str) {
    assert!(!logs.is_empty(), "nothing was captured");
    assert!(
        logs.contains(&KEY[..8]),
        "the key's prefix is missing:\n{logs}"
    );
    for secret in [
        KEY,
        &KEY[8..],
        BODY,
        OTHER_BODY,
        ANSWER,
        "4242-secret",
        "5555-other",
    ] {
        assert!(!logs.contains(secret), "the logs carry {secret:?}:\n{logs}");
    }
}

#[derive(Clone)]
struct App {
    idem: Store,
    /// When set, the next run waits for `gate` (after signalling `started`).
    hold: Arc<AtomicBool>,
    started: Arc<Notify>,
    gate: Arc<Notify>,
}

impl App {
    async fn run(&self) -> (StatusCode, &'static str) {
        if self.hold.swap(false, Ordering::SeqCst) {
            self.started.notify_one();
            self.gate.notified().await;
        }
        (StatusCode::CREATED, ANSWER)
    }
}

#[idempotent(store = "app.idem")]
async fn pay(State(app): State<App>, _body: String) -> (StatusCode, &'static str) {
    app.run().await
}

#[idempotent(store = "app.idem", lease = "1s")]
async fn pay_briefly(State(app): State<App>, _body: String) -> (StatusCode, &'static str) {
    app.run().await
}

#[idempotent(store = app.idem)]
async fn unscoped_pay(State(app): State<App>, _body: String) -> (StatusCode, &'static str) {
    app.run().await
}

#[idempotent(store = app.idem, scope = none)]
async fn shared_on_purpose(State(app): State<App>, _body: String) -> (StatusCode, &'static str) {
    app.run().await
}

fn app(store: Store) -> (App, Router) {
    let app = App {
        idem: store,
        hold: Arc::default(),
        started: Arc::default(),
        gate: Arc::default(),
    };
    let router = Router::new()
        .route("/pay", post(pay))
        .route("/brief", post(pay_briefly))
        .route("/unscoped", post(unscoped_pay))
        .route("/shared", post(shared_on_purpose))
        .with_state(app.clone());
    (app, router)
}

/// Sends one request under `KEY` and returns its status and body.
async fn send(router: &Router, uri: &str, body: &'static str) -> (StatusCode, String) {
    let request = Request::post(uri)
        .header("idempotency-key", KEY)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await;
    (
        status,
        String::from_utf8_lossy(&bytes.unwrap()).into_owned(),
    )
}

/// Starts a request whose handler is held at `app.gate`, and returns once the handler runs.
async fn send_held(app: &App, router: &Router, uri: &'static str) -> tokio::task::JoinHandle<u16> {
    app.hold.store(true, Ordering::SeqCst);
    let router = router.clone();
    let first = tokio::spawn(async move { send(&router, uri, BODY).await.0.as_u16() });
    app.started.notified().await;
    first
}

#[tokio::test(flavor = "current_thread")]
async fn new_replay_mismatch_and_conflict_never_log_the_key() {
    let capture = Capture::default();
    let _guard = capture.install();
    let (app, router) = app(Store::new(MemoryStore::new()));

    let first = send_held(&app, &router, "/pay").await;
    assert_eq!(send(&router, "/pay", BODY).await.0, StatusCode::CONFLICT);
    app.gate.notify_one();
    assert_eq!(first.await.unwrap(), 201);
    assert_eq!(
        send(&router, "/pay", BODY).await,
        (StatusCode::CREATED, ANSWER.into())
    );
    let mismatch = send(&router, "/pay", OTHER_BODY).await.0;
    assert_eq!(mismatch, StatusCode::UNPROCESSABLE_ENTITY);

    assert_clean(&capture.text());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_storage_failure_and_its_takeover_never_log_the_key() {
    let capture = Capture::default();
    let _guard = capture.install();
    let failing = Arc::new(FailingStore::new(MemoryStore::new()));
    let (_, router) = app(Store::new(failing.clone()).with_jitter_seed(7));

    failing.fail_always(Op::Complete);
    assert_eq!(send(&router, "/pay", BODY).await.0, StatusCode::CREATED);
    assert!(
        failing.failures(Op::Complete) > 1,
        "the completion was not retried"
    );
    failing.heal(Op::Complete);
    // The FAILED_STORAGE record is taken over: the handler runs again and is stored.
    assert_eq!(send(&router, "/pay", BODY).await.0, StatusCode::CREATED);
    assert_eq!(
        failing.calls(Op::Complete),
        failing.failures(Op::Complete) + 1
    );
    assert_eq!(send(&router, "/pay", BODY).await.0, StatusCode::CREATED);

    assert_clean(&capture.text());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_abandoned_claim_taken_over_never_logs_the_key() {
    let capture = Capture::default();
    let _guard = capture.install();
    let failing = Arc::new(FailingStore::new(MemoryStore::new()));
    let (app, router) = app(Store::new(failing.clone()).with_jitter_seed(7));

    // The first owner can no longer renew: its 1 s lease runs out while it is held.
    failing.fail_always(Op::Renew);
    let first = send_held(&app, &router, "/brief").await;
    tokio::time::advance(Duration::from_secs(2)).await;
    tokio::task::yield_now().await; // its failed renewals are logged too
    assert_eq!(send(&router, "/brief", BODY).await.0, StatusCode::CREATED);
    // The first owner finishes last and finds its claim taken over.
    app.gate.notify_one();
    assert_eq!(first.await.unwrap(), 201);
    assert_eq!(send(&router, "/brief", BODY).await.0, StatusCode::CREATED);

    assert_clean(&capture.text());
}

#[derive(Clone, Serialize, Deserialize)]
struct Message {
    id: String,
    card: String,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Charge {
    note: String,
}

#[derive(Debug)]
struct JobError(#[allow(dead_code)] Error);

impl From<Error> for JobError {
    fn from(error: Error) -> Self {
        JobError(error)
    }
}

#[idempotent(store = "idem", key = "msg.id")]
async fn consume(#[idem(skip)] idem: &Store, msg: Message) -> Result<Charge, JobError> {
    Ok(Charge {
        note: ANSWER.to_owned(),
    })
}

#[tokio::test(flavor = "current_thread")]
async fn a_plain_function_never_logs_the_key() {
    let capture = Capture::default();
    let _guard = capture.install();
    let store = Store::new(MemoryStore::new());
    let msg = |card: &str| Message {
        id: KEY.to_owned(),
        card: card.to_owned(),
    };

    let first = consume(&store, msg(BODY)).await.unwrap();
    assert_eq!(consume(&store, msg(BODY)).await.unwrap(), first);
    let mismatch = consume(&store, msg(OTHER_BODY)).await.unwrap_err();
    assert!(matches!(mismatch.0, Error::Mismatch), "{mismatch:?}");

    assert_clean(&capture.text());
}

#[tokio::test(flavor = "current_thread")]
async fn an_unscoped_handler_warns_once_and_never_with_the_key() {
    let capture = Capture::default();
    let _guard = capture.install();
    let (_, router) = app(Store::new(MemoryStore::new()));
    for body in [BODY, OTHER_BODY, BODY] {
        send(&router, "/unscoped", body).await;
        send(&router, "/shared", body).await;
    }

    let logs = capture.text();
    let warnings: Vec<&str> = logs
        .lines()
        .filter(|line| line.contains("are not scoped"))
        .collect();
    assert_eq!(warnings.len(), 1, "one warning, on the first call:\n{logs}");
    assert!(warnings[0].starts_with("WARN "), "{}", warnings[0]);
    assert!(
        warnings[0].contains("logs::unscoped_pay"),
        "it names the handler: {}",
        warnings[0]
    );
    assert!(
        !warnings[0].contains(&KEY[..8]),
        "not even the key's prefix: {}",
        warnings[0]
    );
    assert_clean(&logs);
}
