//! Driving an idempotent router: requests, whole answers, the contract of one route, and the
//! routes an [`App`] serves for the shared checks of `behaviour.rs`.
//!
//! Routes an [`App`] serves (each handler counts its runs in `App::runs`):
//!
//! | route | answers |
//! |---|---|
//! | `POST /state` | 201 `run N` |
//! | `POST /path/{id}` | `run N id ID` |
//! | `POST /query?x=..` | `run N x Some("..")` |
//! | `POST /headers` | `run N note Some("hello")` |
//! | `POST /extension` | `run N tenant acme` (an `Extension<Tenant>`) |
//! | `POST /json` `{"name"}` | 201 JSON `{"run", "name"}` |
//! | `POST /form` `name=..` | `run N name ..` |
//! | `POST /bytes` | `run N ` + the body bytes |
//! | `POST /string` | `run N body ..` |
//! | `POST /fallible` `{"name"}` | 201 when `name` is a number, 422 when not, 500 for `crash` |
//! | `POST /scoped/{tenant}` | `run N tenant T`, keys scoped by tenant |
//! | `POST /optional` | `run N`; key in `X-Request-Key`, optional |
//! | `POST /slow` | waits `App::gate`, then `run N` |
//! | `POST /caller` | `run N for C body B`, keys scoped by the caller's `Authorization: Bearer C` |

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode};
use http_body_util::BodyExt;
use tokio::sync::Notify;
use tower::ServiceExt;

/// A router made idempotent one way or another, with its handlers' run counter.
pub struct App {
    pub router: Router,
    pub runs: Arc<AtomicUsize>,
    /// What `POST /slow` waits for.
    pub gate: Arc<Notify>,
}

impl App {
    pub fn runs(&self) -> usize {
        self.runs.load(Ordering::SeqCst)
    }
}

/// What handlers share: the run counter and the gate.
#[derive(Clone, Default)]
pub struct Counter {
    pub runs: Arc<AtomicUsize>,
    pub gate: Arc<Notify>,
}

impl Counter {
    /// Counts one run and returns its number.
    pub fn run(&self) -> usize {
        self.runs.fetch_add(1, Ordering::SeqCst) + 1
    }

    pub fn app(&self, router: Router) -> App {
        App {
            router,
            runs: self.runs.clone(),
            gate: self.gate.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Tenant(pub String);

/// The caller that [`authenticate`] found, as authentication middleware puts it in a request's
/// extensions.
#[derive(Clone, Debug)]
pub struct Caller(pub String);

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A tiny authentication middleware: `Authorization: Bearer <caller>` becomes a [`Caller`]
/// extension; a request without it goes on without one.
pub async fn authenticate(
    mut request: Request<Body>,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let caller = request
        .headers()
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(|caller| Caller(caller.to_owned()));
    if let Some(caller) = caller {
        request.extensions_mut().insert(caller);
    }
    next.run(request).await
}

/// A request to `POST /caller` from `caller` (none: no `Authorization`), under `KEY`.
pub fn from_caller(caller: Option<&str>, body: &'static str) -> Request<Body> {
    let mut request = Call::new("/caller", TEXT, body).request(Some(KEY));
    if let Some(caller) = caller {
        let value = HeaderValue::from_str(&format!("Bearer {caller}")).expect("a header value");
        request.headers_mut().insert("authorization", value);
    }
    request
}

/// A request to send: where, with which content type and body, under which key.
#[derive(Clone)]
pub struct Call {
    uri: &'static str,
    content_type: &'static str,
    body: &'static str,
}

impl Call {
    pub fn new(uri: &'static str, content_type: &'static str, body: &'static str) -> Self {
        Call {
            uri,
            content_type,
            body,
        }
    }

    pub fn request(&self, key: Option<&str>) -> Request<Body> {
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
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn replayed(&self) -> bool {
        self.headers
            .get("idempotent-replayed")
            .is_some_and(|v| v == "true")
    }

    pub fn content_type(&self) -> Option<&str> {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
    }

    pub fn problem_type(&self) -> String {
        assert_eq!(self.content_type(), Some("application/problem+json"));
        let json: serde_json::Value =
            serde_json::from_slice(&self.body).expect("problem bodies are JSON");
        json["type"].as_str().unwrap_or_default().to_owned()
    }
}

pub async fn send(router: &Router, request: Request<Body>) -> Answer {
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

pub const KEY: &str = "key-0000-0001";
pub const TEXT: &str = "text/plain";
pub const JSON: &str = "application/json";
pub const FORM: &str = "application/x-www-form-urlencoded";

/// The contract for one route. `first` is the request that runs it, `other` one that differs
/// in path, query or body (so it has another fingerprint).
pub async fn contract_on(
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
    assert_eq!(mismatch.problem_type(), "urn:idem:problem:key-reused");

    let missing = send(&router, first.request(None)).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert_eq!(missing.problem_type(), "urn:idem:problem:missing-key");

    let invalid = send(&router, first.request(Some("short"))).await;
    assert_eq!(invalid.status, StatusCode::BAD_REQUEST);
    assert_eq!(invalid.problem_type(), "urn:idem:problem:invalid-key");

    let mut twice = first.request(Some(KEY));
    twice
        .headers_mut()
        .append("idempotency-key", HeaderValue::from_static(KEY));
    let twice = send(&router, twice).await;
    assert_eq!(
        twice.status,
        StatusCode::BAD_REQUEST,
        "the key header twice"
    );
    assert_eq!(twice.problem_type(), "urn:idem:problem:invalid-key");

    assert_eq!(runs() - before, 1, "the handler ran exactly once");
}
