//! Helpers for driving the executor directly, as the code `#[idempotent]` generates does.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum_core::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::BodyExt;
use idem_runtime::__private::run;
use idem_runtime::{
    Config, Fingerprint, IdempotencyKey, Record, RecordId, RecordState, RequestHead, Scope, Store,
    Target,
};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber, span};

pub const HANDLER: &str = "tests::create_payment";

/// One request as the executor sees it.
#[derive(Clone)]
pub struct Req {
    pub key: Option<String>,
    pub body: Vec<u8>,
    pub path: &'static str,
    pub handler: &'static str,
    pub scope: String,
}

impl Req {
    pub fn new(key: &str) -> Self {
        Req {
            key: Some(key.to_owned()),
            body: b"{\"amount\":10}".to_vec(),
            path: "/payments",
            handler: HANDLER,
            scope: String::new(),
        }
    }
    pub fn without_key() -> Self {
        Req {
            key: None,
            ..Req::new("unused-key")
        }
    }
    pub fn body(mut self, body: &[u8]) -> Self {
        self.body = body.to_vec();
        self
    }
    pub fn handler(mut self, handler: &'static str) -> Self {
        self.handler = handler;
        self
    }
    pub fn scope(mut self, scope: &str) -> Self {
        self.scope = scope.to_owned();
        self
    }
    pub fn head(&self) -> RequestHead {
        let mut headers = HeaderMap::new();
        if let Some(key) = &self.key {
            headers.insert(
                "idempotency-key",
                HeaderValue::from_bytes(key.as_bytes()).expect("test keys are header-safe"),
            );
        }
        RequestHead::new(
            headers,
            Fingerprint::of_request("POST", self.path, "", &self.body),
        )
    }
    pub fn target(&self) -> Target {
        Target {
            handler: self.handler.into(),
            scope: Scope::Named(self.scope.clone()),
        }
    }
    pub fn id(&self) -> RecordId {
        let key = IdempotencyKey::parse(self.key.as_deref().unwrap_or_default())
            .expect("a valid test key");
        RecordId::new(self.scope.clone(), self.handler, key)
    }
}

/// A response, read whole.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub async fn read(response: Response) -> Self {
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .expect("test bodies do not fail")
            .to_bytes();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }
    pub fn replayed(&self) -> bool {
        self.headers
            .get("idempotent-replayed")
            .is_some_and(|v| v == "true")
    }
    pub fn problem_type(&self) -> String {
        assert_eq!(
            self.headers["content-type"], "application/problem+json",
            "status {} should carry a problem",
            self.status
        );
        let json: serde_json::Value =
            serde_json::from_slice(&self.body).expect("problem bodies are JSON");
        assert_eq!(json["status"], self.status.as_u16());
        assert!(json["title"].is_string() && json["detail"].is_string());
        json["type"].as_str().unwrap_or_default().to_owned()
    }
    pub fn retry_after(&self) -> Option<u64> {
        self.headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
    }
}

/// A handler that counts its runs and answers a fixed response.
#[derive(Clone, Default)]
pub struct Counter(pub Arc<AtomicUsize>);

impl Counter {
    pub fn runs(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
    /// A handler body answering 201 with a body unique to this run.
    pub fn created(&self) -> impl Future<Output = Response> + Send + 'static {
        let runs = self.0.clone();
        async move {
            let n = runs.fetch_add(1, Ordering::SeqCst) + 1;
            let mut response = (StatusCode::CREATED, format!("{{\"run\":{n}}}")).into_response();
            response
                .headers_mut()
                .insert("x-run", HeaderValue::from(n as u64));
            response
        }
    }
    /// A handler body answering `status`.
    pub fn status(&self, status: StatusCode) -> impl Future<Output = Response> + Send + 'static {
        let runs = self.0.clone();
        async move {
            runs.fetch_add(1, Ordering::SeqCst);
            (status, "handler says so").into_response()
        }
    }
}

pub async fn send<F>(store: &Store, config: &Config, req: &Req, handler: F) -> Answer
where
    F: Future + Send + 'static,
    F::Output: IntoResponse,
{
    Answer::read(run(store.clone(), config, req.target(), req.head(), handler).await).await
}

pub async fn record(store: &Store, req: &Req) -> Option<Record> {
    store.get(&req.id()).await.expect("the test store answers")
}

pub async fn state(store: &Store, req: &Req) -> Option<&'static str> {
    record(store, req).await.map(|r| match r.state {
        RecordState::InProgress { .. } => "IN_PROGRESS",
        RecordState::FailedStorage => "FAILED_STORAGE",
        RecordState::Completed(_) => "COMPLETED",
    })
}

/// Metrics recorded on this thread while the guard lives (the tests that read metrics run on
/// a current-thread runtime, so the executor's tasks, the lease keeper included, record here
/// too).
pub struct Metrics {
    snapshotter: Snapshotter,
    /// Everything seen so far: a snapshot drains the recorder, counters and histograms alike.
    seen: Mutex<Seen>,
    _guard: metrics::LocalRecorderGuard<'static>,
}

/// Totals by metric name and labels: counters' values, histograms' sample counts.
type Seen = HashMap<(String, Vec<(String, String)>), u64>;

impl Metrics {
    pub fn install() -> Self {
        let recorder: &'static DebuggingRecorder = Box::leak(Box::new(DebuggingRecorder::new()));
        let snapshotter = recorder.snapshotter();
        let guard = metrics::set_default_local_recorder(recorder);
        Metrics {
            snapshotter,
            seen: Mutex::default(),
            _guard: guard,
        }
    }

    /// The totals so far, the recorder drained into them.
    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        let mut seen = self.seen.lock().unwrap();
        for (key, _, _, value) in self.snapshotter.snapshot().into_vec() {
            let key = key.key();
            let labels = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            let n = match value {
                DebugValue::Counter(n) => n,
                DebugValue::Histogram(samples) => samples.len() as u64,
                DebugValue::Gauge(_) => continue,
            };
            *seen.entry((key.name().to_owned(), labels)).or_default() += n;
        }
        seen
    }

    /// The total of the counter `name` over every label set that includes all of `labels`.
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.seen()
            .iter()
            .filter(|((seen_name, seen_labels), _)| {
                seen_name == name
                    && labels
                        .iter()
                        .all(|(k, v)| seen_labels.iter().any(|(sk, sv)| sk == k && sv == v))
            })
            .map(|(_, n)| n)
            .sum()
    }

    pub fn outcome(&self, outcome: &str) -> u64 {
        self.counter("idempotency_requests_total", &[("outcome", outcome)])
    }

    /// How many samples the histogram `name` with the label value `op` holds.
    pub fn samples(&self, name: &str, op: &str) -> usize {
        self.counter(name, &[("op", op)]) as usize
    }
}

/// Events logged on this thread while the guard lives (the tests that read them run on a
/// current-thread runtime, so the executor's tasks log here too): their level and message.
pub struct Logs {
    events: Arc<Mutex<Vec<(Level, String)>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

impl Logs {
    pub fn install() -> Self {
        let events = Arc::new(Mutex::new(Vec::new()));
        let guard = tracing::subscriber::set_default(Collect(events.clone()));
        Logs {
            events,
            _guard: guard,
        }
    }

    /// How many warnings were logged whose message contains `text`.
    pub fn warnings(&self, text: &str) -> usize {
        let events = self.events.lock().unwrap();
        events
            .iter()
            .filter(|(level, message)| *level == Level::WARN && message.contains(text))
            .count()
    }
}

/// A subscriber that keeps every event's level and message, and ignores spans.
struct Collect(Arc<Mutex<Vec<(Level, String)>>>);

impl Subscriber for Collect {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
        span::Id::from_u64(1)
    }
    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}
    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut message = Message(String::new());
        event.record(&mut message);
        let level = *event.metadata().level();
        self.0.lock().unwrap().push((level, message.0));
    }
    fn enter(&self, _: &span::Id) {}
    fn exit(&self, _: &span::Id) {}
}

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}
