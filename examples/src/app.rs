//! The service: routes, the idempotent handler, and how it starts and stops.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use axum::{Json, Router};
use idem_runtime::{
    IdempotencyStore, MemoryStore, PgTx, PostgresStore, RedisOptions, RedisStore, SqliteStore,
    SqliteTx, Store, idempotent,
};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use sqlx::ConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::net::TcpListener;

use crate::payments::{self, Payment, Payments};
use crate::settings::{Mode, Settings, StoreUrl};

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The idempotency store.
    pub idem: Store,
    /// Where payments are recorded.
    pub payments: Payments,
    /// A simulated processor delay.
    pub latency: Duration,
    /// Whether payments are written in the idempotency transaction.
    pub mode: Mode,
    /// Renders `/metrics`; `None` when no Prometheus recorder is installed.
    pub metrics: Option<PrometheusHandle>,
}

/// Who is calling: what the authentication middleware ([`authenticate`]) puts in each
/// request's extensions, and what idempotency keys are scoped by (docs/contract.md, "Scopes").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller(pub String);

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The caller of a request without credentials, in this example only.
pub const GUEST: &str = "guest";

/// The example's stand-in for authentication: `Authorization: Bearer <caller>` (1 to 64 of
/// `A-Za-z0-9_-`) names the caller; a request without it is the caller [`GUEST`]; any other
/// `Authorization` is 401. A real service checks a token here and answers 401 without one;
/// the example lets requests without credentials through so that `curl` works as it is.
pub async fn authenticate(mut request: Request, next: Next) -> Response {
    let authorization = request.headers().get("authorization").map(|v| v.as_bytes());
    let caller = caller_of(authorization);
    let Some(caller) = caller else {
        return (
            StatusCode::UNAUTHORIZED,
            [("www-authenticate", "Bearer")],
            "expected Authorization: Bearer <caller>",
        )
            .into_response();
    };
    request.extensions_mut().insert(Caller(caller));
    next.run(request).await
}

/// The caller an `Authorization` value names (`Bearer <caller>`, 1 to 64 of `A-Za-z0-9_-`),
/// [`GUEST`] without one, `None` for any other value: [`authenticate`]'s rule, which the gRPC
/// service applies to its metadata too.
pub fn caller_of(authorization: Option<&[u8]>) -> Option<String> {
    match authorization {
        None => Some(GUEST.to_owned()),
        Some(value) => std::str::from_utf8(value)
            .ok()
            .and_then(|value| value.strip_prefix("Bearer "))
            .filter(|caller| {
                (1..=64).contains(&caller.len())
                    && caller
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            })
            .map(str::to_owned),
    }
}

/// The body of `POST /payments`.
#[derive(Debug, Deserialize)]
pub struct NewPayment {
    /// Must be positive.
    pub amount: i64,
    /// Three ASCII letters; `"ERR"` makes the processor fail (500).
    pub currency: String,
}

/// The handler's own errors.
#[derive(Debug)]
pub enum ApiError {
    /// 422: the payment is not acceptable (stored and replayed like any 4xx).
    Invalid(&'static str),
    /// 500: the processor failed (not stored: a retry runs again).
    Processor,
    /// 500: the database failed.
    Database(payments::Error),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            ApiError::Invalid(why) => (StatusCode::UNPROCESSABLE_ENTITY, why.to_owned()),
            ApiError::Processor => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the payment processor failed".to_owned(),
            ),
            ApiError::Database(error) => {
                tracing::error!(%error, "recording a payment failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the payment could not be recorded".to_owned(),
                )
            }
        };
        (status, Json(serde_json::json!({ "error": message }))).into_response()
    }
}

/// `POST /payments` in plain mode (and on the memory store): records a payment, once per
/// idempotency key while the process lives; a crash after the payment is written and before
/// the response is stored leaves a payment whose key runs again after its lease.
#[idempotent(store = app.idem)]
pub async fn create_payment(
    State(app): State<AppState>,
    Json(req): Json<NewPayment>,
) -> Result<(StatusCode, Json<Payment>), ApiError> {
    process(&app, &req).await?;
    let payment = app
        .payments
        .record(req.amount, &req.currency)
        .await
        .map_err(ApiError::Database)?;
    Ok((StatusCode::CREATED, Json(payment)))
}

/// `POST /payments` on Postgres in transactional mode: the payment is written in the
/// transaction that stores the response, so a key makes one payment or none, whenever the
/// process dies (docs/contract.md, "Transactional mode").
#[idempotent(store = app.idem, transactional)]
pub async fn create_payment_pg(
    State(app): State<AppState>,
    mut tx: PgTx,
    Json(req): Json<NewPayment>,
) -> Result<(StatusCode, Json<Payment>), ApiError> {
    process(&app, &req).await?;
    let payment = app
        .payments
        .record_in(&mut *tx, req.amount, &req.currency)
        .await
        .map_err(|e| ApiError::Database(e.into()))?;
    Ok((StatusCode::CREATED, Json(payment)))
}

/// [`create_payment_pg`] on SQLite.
#[idempotent(store = app.idem, transactional)]
pub async fn create_payment_sqlite(
    State(app): State<AppState>,
    mut tx: SqliteTx,
    Json(req): Json<NewPayment>,
) -> Result<(StatusCode, Json<Payment>), ApiError> {
    process(&app, &req).await?;
    let payment = app
        .payments
        .record_in(&mut *tx, req.amount, &req.currency)
        .await
        .map_err(|e| ApiError::Database(e.into()))?;
    Ok((StatusCode::CREATED, Json(payment)))
}

/// What every mode does before the payment is written: checks the request (422, or 500 for
/// the failing processor) and waits for the simulated processor. The wait comes before the
/// write, so that a transactional handler holds no row or SQLite write lock while it waits.
async fn process(app: &AppState, req: &NewPayment) -> Result<(), ApiError> {
    if req.amount <= 0 {
        return Err(ApiError::Invalid("amount must be a positive integer"));
    }
    if req.currency == "ERR" {
        return Err(ApiError::Processor);
    }
    if req.currency.len() != 3 || !req.currency.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(ApiError::Invalid("currency must be three letters"));
    }
    if !app.latency.is_zero() {
        tokio::time::sleep(app.latency).await;
    }
    Ok(())
}

async fn list_payments(State(app): State<AppState>) -> Result<Json<Vec<Payment>>, ApiError> {
    app.payments
        .list()
        .await
        .map(Json)
        .map_err(ApiError::Database)
}

async fn healthz() -> &'static str {
    "ok"
}

async fn metrics(State(app): State<AppState>) -> Response {
    match &app.metrics {
        Some(handle) => (
            [("content-type", "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no metrics recorder installed").into_response(),
    }
}

/// `POST /payments` for the state's mode and database: one of the three handlers.
fn create(state: &AppState) -> MethodRouter<AppState> {
    match (state.mode, &state.payments) {
        (Mode::Transactional, Payments::Postgres { .. }) => post(create_payment_pg),
        (Mode::Transactional, Payments::Sqlite(_)) => post(create_payment_sqlite),
        _ => post(create_payment),
    }
}

/// The routes of `docs/contract.md`, "7. The example server", behind the authentication
/// middleware that names each request's caller.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/payments", create(&state).get(list_payments))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn(authenticate))
        .with_state(state)
}

/// Any failure to start.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Opens the store named by the settings, runs its migrations, and returns the idempotency
/// backend and the payments beside it.
pub async fn open(settings: &Settings) -> Result<(Arc<dyn IdempotencyStore>, Payments), Error> {
    let (store, payments): (Arc<dyn IdempotencyStore>, _) = match &settings.store {
        StoreUrl::Memory => (Arc::new(MemoryStore::new()), Payments::memory()),
        StoreUrl::Sqlite(url) => {
            let store = SqliteStore::connect(url).await?;
            store.migrate().await?;
            let payments = Payments::Sqlite(store.pool().clone());
            (Arc::new(store), payments)
        }
        StoreUrl::Postgres(url) => {
            let mut store = match settings.pg_pool {
                None => PostgresStore::connect(url).await?,
                // One pool of that size for everything: the store's statements, the handlers'
                // transactions and the payments list.
                Some(size) => {
                    let mut options: PgConnectOptions = url.parse()?;
                    if settings.pg_pooler {
                        // The store's statements carry keys and bodies in their text then.
                        options = options.disable_statement_logging();
                    }
                    PostgresStore::new(
                        PgPoolOptions::new()
                            .max_connections(size)
                            .acquire_timeout(Duration::from_secs(5))
                            .test_before_acquire(false)
                            .connect_with(options)
                            .await?,
                    )
                }
            };
            if settings.pg_pooler {
                store = store.behind_pooler();
            }
            if let Some(direct) = &settings.pg_listen_url {
                store = store.listen_url(direct)?;
            }
            store.migrate().await?;
            let payments = Payments::Postgres {
                pool: store.pool().clone(),
                behind_pooler: settings.pg_pooler,
            };
            (Arc::new(store), payments)
        }
        StoreUrl::Redis(url) => {
            let mut options = RedisOptions::new();
            if settings.redis_assume_noeviction {
                options = options.assume_noeviction();
            }
            let store = RedisStore::connect_with(url, options).await?;
            let payments = Payments::Redis(store.connection().clone());
            (Arc::new(store), payments)
        }
    };
    payments.migrate().await?;
    Ok((store, payments))
}

impl AppState {
    /// The state for `settings`, around an opened backend; an error when transactional mode
    /// meets the memory or Redis store, which have no transaction to share.
    pub fn new(
        settings: &Settings,
        backend: Arc<dyn IdempotencyStore>,
        payments: Payments,
        metrics: Option<PrometheusHandle>,
    ) -> Result<Self, Error> {
        if settings.mode == Mode::Transactional
            && matches!(payments, Payments::Memory(_) | Payments::Redis(_))
        {
            return Err(format!(
                "IDEM_MODE=transactional needs a SQL store: the {} store has no transaction \
                 to share",
                settings.store.kind()
            )
            .into());
        }
        // Keys are per caller, set once for every handler (docs/contract.md, "Scopes").
        let mut idem = Store::from_arc(backend).scope_by_extension::<Caller>();
        if let Some(lease) = settings.lease {
            idem = idem.override_lease(lease);
        }
        if let Some(retries) = settings.retries {
            idem = idem.override_retries(retries);
        }
        if let Some(wait) = settings.wait {
            idem = idem.override_wait(wait);
        }
        Ok(AppState {
            idem,
            payments,
            latency: settings.latency,
            mode: settings.mode,
            metrics,
        })
    }

    /// The handler name under which `POST /payments` keeps its records in this state's mode.
    pub fn create_handler(&self) -> &'static str {
        match (self.mode, &self.payments) {
            (Mode::Transactional, Payments::Postgres { .. }) => {
                "idem_examples::app::create_payment_pg"
            }
            (Mode::Transactional, Payments::Sqlite(_)) => {
                "idem_examples::app::create_payment_sqlite"
            }
            _ => "idem_examples::app::create_payment",
        }
    }
}

/// Serves until `shutdown` completes, purging expired keys every `purge_every`.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    purge_every: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // The runtime's background purge (docs/contract.md, "Operating the records").
    let purge = state.idem.purge_every(purge_every, 1000);
    let served = axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await;
    purge.stop().await;
    served
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}
