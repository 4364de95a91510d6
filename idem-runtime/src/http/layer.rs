//! The tower layer (feature `tower`): the attribute's behaviour for a whole router, or for
//! any tower HTTP service (hyper, tonic's HTTP routes), through the same executor, outcome
//! table and metrics.

use std::borrow::Cow;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::MatchedPath;
use axum_core::BoxError;
use axum_core::body::Body;
use axum_core::extract::Request;
use axum_core::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::request::Parts;
use http::{Method, StatusCode};
use tower_service::Service;

use crate::engine::backoff::Backoff;
use crate::engine::config::Config;
use crate::engine::handle::Store;
use crate::engine::record::Target;
use crate::engine::scope::Scope;
use crate::http::handler;
use crate::http::request;

/// The handler name of a service without an axum route, unless [`IdempotencyLayer::name`]
/// sets another.
pub const DEFAULT_LAYER_NAME: &str = "idempotency_layer";

type ScopeFn = dyn Fn(&Parts) -> String + Send + Sync;

/// Where the layer's requests take their scope from.
#[derive(Clone)]
enum LayerScope {
    /// The store's rule ([`Store::scope_by`]), or none (with the one-time warning).
    Inherit,
    /// No scope, on purpose ([`IdempotencyLayer::unscoped`]).
    None,
    /// The layer's own ([`IdempotencyLayer::scope`]).
    By(Arc<ScopeFn>),
}

/// Makes every `POST` and `PATCH` of the services it wraps idempotent, as `#[idempotent]`
/// does for one handler: the same key check, claim, replay, 409/422/503 answers, storage
/// retries and metrics.
///
/// The record's handler is the method and axum's matched route (`POST /payments/{id}`), so
/// one key on two routes never meets; a service without a matched route uses the fixed
/// [`name`](IdempotencyLayer::name). Other methods pass through untouched. Request bodies are
/// buffered and fingerprinted exactly as the attribute does (under axum's
/// `DefaultBodyLimit` and [`HARD_BODY_LIMIT`](crate::HARD_BODY_LIMIT)).
///
/// Everything the wrapped service answers is the response, extractor rejections included:
/// put the layer on the routes that need it with `Router::route_layer`. Which responses are
/// kept is the attribute's policy: 2xx–4xx kept and 5xx released by default, changed by
/// [`keep_server_errors`](IdempotencyLayer::keep_server_errors) and
/// [`release_statuses`](IdempotencyLayer::release_statuses); an error of the wrapped service
/// always releases the claim.
///
/// ```
/// use std::time::Duration;
/// use axum::{Router, body::Body, http::Request, routing::post};
/// use idem_runtime::{IdempotencyLayer, MemoryStore, Store};
/// use tower_service::Service;
///
/// async fn create_payment(body: String) -> String {
///     format!("charged {body}")
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let layer = IdempotencyLayer::new(Store::new(MemoryStore::new()))
///     .retries(5)
///     .ttl(Duration::from_secs(24 * 3600));
/// let mut app = Router::new()
///     .route("/payments", post(create_payment))
///     .route_layer(layer);
///
/// let request = || {
///     Request::post("/payments")
///         .header("idempotency-key", "order-0001")
///         .body(Body::from("12 EUR"))
///         .unwrap()
/// };
/// let first = app.call(request()).await.unwrap();
/// let again = app.call(request()).await.unwrap();
/// assert!(first.headers().get("idempotent-replayed").is_none());
/// assert_eq!(again.headers()["idempotent-replayed"], "true");
/// # }
/// ```
#[derive(Clone)]
pub struct IdempotencyLayer {
    store: Store,
    config: Config,
    name: Cow<'static, str>,
    methods: Arc<[Method]>,
    scope: LayerScope,
}

impl fmt::Debug for IdempotencyLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdempotencyLayer")
            .field("config", &self.config)
            .field("name", &self.name)
            .field("methods", &self.methods)
            .field(
                "scope",
                &match self.scope {
                    LayerScope::Inherit => "the store's",
                    LayerScope::None => "none",
                    LayerScope::By(_) => "the layer's",
                },
            )
            .finish_non_exhaustive()
    }
}

impl IdempotencyLayer {
    /// A layer on `store` with the attribute's defaults, for `POST` and `PATCH`.
    pub fn new(store: impl Into<Store>) -> Self {
        IdempotencyLayer {
            store: store.into(),
            config: Config::new(),
            name: Cow::Borrowed(DEFAULT_LAYER_NAME),
            methods: Arc::from([Method::POST, Method::PATCH]),
            scope: LayerScope::Inherit,
        }
    }

    /// Every setting at once (those below change one each).
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Attempts to persist a response before the key is marked FAILED_STORAGE.
    pub fn retries(self, retries: u32) -> Self {
        let config = self.config.retries(retries);
        self.config(config)
    }

    /// First and largest delay between attempts.
    pub fn backoff(self, first: Duration, cap: Duration) -> Self {
        let config = self.config.backoff(Backoff::new(first, cap));
        self.config(config)
    }

    /// How long a completed response is kept and replayed.
    pub fn ttl(self, ttl: Duration) -> Self {
        let config = self.config.ttl(ttl);
        self.config(config)
    }

    /// How long an in-progress claim blocks duplicates before it counts as abandoned.
    pub fn lease(self, lease: Duration) -> Self {
        let config = self.config.lease(lease);
        self.config(config)
    }

    /// The request header carrying the key (default `Idempotency-Key`).
    pub fn header(self, header: &'static str) -> Self {
        let config = self.config.header(header);
        self.config(config)
    }

    /// When true, a request without the header passes through with no idempotency.
    pub fn optional(self, optional: bool) -> Self {
        let config = self.config.optional(optional);
        self.config(config)
    }

    /// The largest response body that is stored (default 1 MiB).
    pub fn max_stored_body(self, bytes: usize) -> Self {
        let config = self.config.max_stored_body(bytes);
        self.config(config)
    }

    /// When true, a 5xx answer of the service is kept and replayed like any other (Stripe's
    /// choice); by default it releases the claim, so a retry runs again. An *error* of the
    /// service (its `Err`, not a 5xx response) always releases the claim.
    pub fn keep_server_errors(self, keep: bool) -> Self {
        let config = self.config.keep_server_errors(keep);
        self.config(config)
    }

    /// 4xx statuses that release the claim instead of being kept, so that a retry runs again
    /// (a 429 or a 408 that the next attempt may get past):
    ///
    /// ```
    /// use idem_runtime::{IdempotencyLayer, MemoryStore, Store};
    ///
    /// let layer = IdempotencyLayer::new(Store::new(MemoryStore::new())).release_statuses(&[429, 408]);
    /// # drop(layer);
    /// ```
    ///
    /// Only 400..=499 can be released: a 5xx is released already unless
    /// [`keep_server_errors`](IdempotencyLayer::keep_server_errors), and 1xx–3xx are always
    /// kept. Another status in the list is ignored, with a warning logged here, once, rather
    /// than refused: the layer is built in one infallible chain, and the attribute, which
    /// checks the same list at compile time, is where a typo is an error.
    pub fn release_statuses(self, statuses: &'static [u16]) -> Self {
        for &status in statuses.iter().filter(|s| !(400..=499).contains(*s)) {
            tracing::warn!(
                status,
                "IdempotencyLayer::release_statuses: only 4xx statuses can be released; ignoring this one"
            );
        }
        let config = self.config.release_statuses(statuses);
        self.config(config)
    }

    /// Waits up to `wait` for an in-flight result instead of answering 409 at once
    /// (docs/contract.md, "Waiting for the in-flight result").
    pub fn wait(self, wait: Duration) -> Self {
        let config = self.config.wait(wait);
        self.config(config)
    }

    /// Sets a 409's `Retry-After`, instead of the hint learnt from the usual run time.
    pub fn retry_after(self, after: Duration) -> Self {
        let config = self.config.retry_after(after);
        self.config(config)
    }

    /// The handler name for services without an axum matched route (metrics label and record
    /// identity; default `"idempotency_layer"`). Keep it fixed: never a raw path.
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.name = name.into();
        self
    }

    /// The methods made idempotent (default `POST` and `PATCH`); others pass through.
    pub fn methods(mut self, methods: impl IntoIterator<Item = Method>) -> Self {
        self.methods = methods.into_iter().collect();
        self
    }

    /// A namespace for keys from the request (a tenant set by an authentication layer, a
    /// header), instead of the store's rule ([`Store::scope_by`], which the layer follows by
    /// default): the same key under two scopes is two records.
    pub fn scope(mut self, scope: impl Fn(&Parts) -> String + Send + Sync + 'static) -> Self {
        self.scope = LayerScope::By(Arc::new(scope));
        self
    }

    /// No scope, on purpose, whatever the store's rule: every caller shares the keys, as
    /// `scope = none` does for the attribute, and no warning is logged (docs/contract.md,
    /// "Scopes").
    pub fn unscoped(mut self) -> Self {
        self.scope = LayerScope::None;
        self
    }

    /// What the request's head must keep: a copy of it when the store's rule will read it.
    fn keep(&self) -> request::Keep {
        match self.scope {
            LayerScope::Inherit if self.store.is_scoped() => request::Keep::Parts,
            _ => request::Keep::KeyHeader(self.config.header_value()),
        }
    }

    fn target(&self, req: Request) -> (Request, Target) {
        let (parts, body) = req.into_parts();
        let handler = match parts.extensions.get::<MatchedPath>() {
            Some(route) => Cow::Owned(format!("{} {}", parts.method, route.as_str())),
            None => self.name.clone(),
        };
        let scope = match &self.scope {
            LayerScope::Inherit => Scope::Inherit,
            LayerScope::None => Scope::None,
            LayerScope::By(scope) => Scope::Named(scope(&parts)),
        };
        (Request::from_parts(parts, body), Target { handler, scope })
    }
}

impl<S> tower_layer::Layer<S> for IdempotencyLayer {
    type Service = Idempotent<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Idempotent {
            inner,
            layer: self.clone(),
        }
    }
}

/// A service wrapped by [`IdempotencyLayer`].
#[derive(Debug, Clone)]
pub struct Idempotent<S> {
    inner: S,
    layer: IdempotencyLayer,
}

impl<S, B> Service<http::Request<B>> for Idempotent<S>
where
    S: Service<Request> + Clone + Send + 'static,
    S::Response: IntoResponse,
    S::Error: Send + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let req = req.map(Body::new);
        // The clone that was made ready is the one to call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        if !self.layer.methods.contains(req.method()) {
            return Box::pin(async move { inner.call(req).await.map(IntoResponse::into_response) });
        }
        let layer = self.layer.clone();
        Box::pin(async move {
            // Only the configured key header is kept for the engine, not a copy of every header,
            // unless the store's scope rule needs the request's head.
            let (req, head) = match request::buffer_keeping(req, layer.keep()).await {
                Ok(buffered) => buffered,
                Err(rejection) => return Ok(rejection),
            };
            let (req, target) = layer.target(req);
            // An error of the service is no response: the engine sees a 500 marked as no
            // answer (it releases the claim whatever the policy), the caller gets the error
            // back.
            let failed = Arc::new(Mutex::new(None));
            let handler = {
                let failed = failed.clone();
                async move {
                    match inner.call(req).await {
                        Ok(response) => response.into_response(),
                        Err(error) => {
                            *failed.lock().unwrap_or_else(PoisonError::into_inner) = Some(error);
                            let mut stand_in = StatusCode::INTERNAL_SERVER_ERROR.into_response();
                            stand_in.extensions_mut().insert(handler::NotAnAnswer);
                            stand_in
                        }
                    }
                }
            };
            let response = handler::run(layer.store, &layer.config, target, head, handler).await;
            let error = failed.lock().unwrap_or_else(PoisonError::into_inner).take();
            match error {
                Some(error) => Err(error),
                None => Ok(response),
            }
        })
    }
}
