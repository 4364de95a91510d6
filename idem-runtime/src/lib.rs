//! # idem: safe retries in one line
//!
//! `#[idempotent]` makes an async handler safe to retry: a client that sends the same
//! `Idempotency-Key` twice gets the first response back, byte for byte, and the handler's
//! side effects happen once, even when requests race, the process dies or the store fails.
//!
//! ```
//! use axum::{Json, extract::State, http::StatusCode};
//! use idem_runtime::{MemoryStore, Store, idempotent};
//! # use serde::{Deserialize, Serialize};
//! # #[derive(Clone)]
//! # struct AppState { idem: Store }
//! # #[derive(Deserialize)]
//! # struct NewPayment { amount: i64 }
//! # #[derive(Serialize)]
//! # struct Payment { amount: i64 }
//! # type ApiError = (StatusCode, String);
//!
//! #[idempotent(store = "app.idem", retries = 5)]
//! async fn create_payment(State(app): State<AppState>, Json(req): Json<NewPayment>)
//!     -> Result<(StatusCode, Json<Payment>), ApiError> {
//!     Ok((StatusCode::CREATED, Json(Payment { amount: req.amount })))
//! }
//!
//! let app = axum::Router::new()
//!     .route("/payments", axum::routing::post(create_payment))
//!     .with_state(AppState { idem: Store::new(MemoryStore::new()) });
//! # let _: axum::Router = app;
//! ```
//!
//! ## What a request meets
//!
//! | situation | answer |
//! |---|---|
//! | key missing / invalid | 400 `problem+json` (two problem types) |
//! | new key | the handler runs once; its response is stored (unless its policy releases the status, by default a 5xx; not over 1 MiB) |
//! | same key, same request, completed | the stored response, plus `Idempotent-Replayed: true` |
//! | same key, another request | 422 |
//! | same key, still in progress | 409 with `Retry-After` |
//! | abandoned (lease expired) or FAILED_STORAGE | taken over by exactly one retry, which runs the handler |
//! | store unreachable when claiming | 503 with `Retry-After` |
//! | the store scopes keys by caller and names none for this request | 403 |
//! | a new key beyond its scope's quota (`scope_quota`) | 429 with `Retry-After` |
//!
//! Keys belong to a caller: [`Store::scope_by`] sets, once per store, the scope of each request
//! (say the account that authentication middleware put in its extensions), so one key sent by
//! two callers is two records; a handler's own `scope = ...` overrides it, `scope = none` shares
//! its keys on purpose, and a handler with no scope at all logs a warning on its first call.
//!
//! The attribute only gathers the request's facts and hands the handler to the runtime as a
//! future. Inside, one protocol-neutral executor (`engine/`: keys, fingerprints, records,
//! leases, persistence) serves every adapter (`http/`, `grpc/`, `function/`), and every backend
//! (`stores/`) implements one small trait with one method per operation. The behaviour is
//! written down in `docs/contract.md`.
//!
//! ## Beyond handlers
//!
//! - **Plain functions**: `#[idempotent(store = "self.idem", key = "msg.id")]` on any
//!   `async fn` or method returning `Result<T, E>` (a queue consumer, a job): the stored `T`
//!   is returned for a repeated key, and conflicts, mismatches and store failures come back
//!   as `E` through `From<`[`Error`]`>`. See [`function`].
//! - **The tower layer** (feature `tower`): `IdempotencyLayer::new(store)` on a whole router
//!   or any tower HTTP service, with the same behaviour and metrics.
//! - **gRPC** (feature `tonic`): the same attribute on a unary method of a tonic service
//!   implementation; the key in the `idempotency-key` metadata entry, answers in gRPC status
//!   codes. See `grpc`.
//!
//! ## Stores
//!
//! [`MemoryStore`] (in-process), `SqliteStore` (feature `sqlite`), `PostgresStore` (feature
//! `postgres`), `RedisStore` (feature `redis`: Redis, Valkey, Redis Cluster), or your own
//! [`IdempotencyStore`]. Handlers receive them as a [`Store`]
//! handle. [`FailingStore`] wraps any store and fails chosen operations, for tests.
//! Operators read one record with [`Store::inspect`] (never its body or headers), free a
//! stuck key with [`Store::evict`], count records by state with [`Store::stats`], and purge
//! expired records in the background with [`Store::purge_every`].
//!
//! ## Metrics
//!
//! `idempotency_requests_total{handler, outcome}`, `idempotency_storage_failure_total{handler}`,
//! `idempotency_storage_retries_total{handler}`, `idempotency_lease_lost_total{handler}`,
//! `idempotency_store_seconds{op}` and `idempotency_purged_total` (records removed by
//! [`Store::purge_every`]), through the `metrics` facade. Logs and spans show at most a key's first 8 characters.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod engine;
pub mod function;
#[cfg(feature = "tonic")]
pub mod grpc;
#[cfg(feature = "axum")]
mod http;
mod stores;

pub use engine::backoff::{Backoff, DurationError, Jitter, parse_duration};
pub use engine::config::Config;
pub use engine::execute::{Lendable, Lent};
pub use engine::fingerprint::Fingerprint;
pub use engine::handle::Store;
pub use engine::inspect::{InspectedState, Inspection, Stats};
pub use engine::key::{IdempotencyKey, KeyError, MAX_KEY_LEN, MIN_KEY_LEN};
pub use engine::metrics;
pub use engine::outcome::{OUTCOMES, Outcome};
pub use engine::purge::PurgeTask;
pub use engine::record::{
    Acquired, Claim, ClaimOutcome, FAILED_STORAGE_STATUS, OwnerToken, Payload, Record, RecordId,
    RecordState, Target,
};
pub use engine::scope::Scope;
pub use engine::store::{
    Announcements, BoxFuture, Heard, IdempotencyStore, Isolation, Ownership, Reply, StoreError,
    StoreErrorKind, StoreResult, StoreTransaction,
};
pub use engine::wait::{DEFAULT_MAX_WAITERS, FIRST_POLL, LAST_POLL};
pub use function::Error;
#[cfg(feature = "tower")]
pub use http::layer::{DEFAULT_LAYER_NAME, IdempotencyLayer, Idempotent};
#[cfg(feature = "axum")]
pub use http::problem::Problem;
#[cfg(feature = "axum")]
pub use http::request::{
    Fingerprinted, FingerprintedAllHeaders, FingerprintedAllParts, FingerprintedParts,
    HARD_BODY_LIMIT, RequestHead,
};
#[cfg(feature = "axum")]
pub use http::response::REPLAYED_HEADER;
/// The `redis` crate the Redis store is built on, for the application's own commands on
/// [`RedisStore::connection`].
#[cfg(feature = "redis")]
pub use redis;
#[cfg(feature = "postgres")]
pub use stores::{CLAIM_ATTEMPTS, PgTx, PostgresStore, WAKE_CHANNEL};
pub use stores::{
    DEFAULT_MEMORY_CAPACITY, FailingStore, Failures, Gate, Hooked, MemoryStore, Op, StoreHook,
};
#[cfg(feature = "redis")]
pub use stores::{DEFAULT_REDIS_PREFIX, InvalidPrefix, RedisConnection, RedisOptions, RedisStore};
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub use stores::{DEFAULT_TABLE, InvalidTableName, Tx};
#[cfg(feature = "sqlite")]
pub use stores::{SqliteStore, SqliteTx};

pub use idem_macros::idempotent;

/// What the code generated by `#[idempotent]` calls. Not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use crate::engine::backoff::Backoff;
    pub use crate::engine::config::Config;
    pub use crate::engine::record::Target;
    pub use crate::engine::scope::Scope;
    pub use crate::engine::store::Isolation;
    #[cfg(feature = "axum")]
    pub use crate::http::handler::{run, run_transactional};
    #[cfg(feature = "axum")]
    pub use crate::http::request::{
        Fingerprinted, FingerprintedAllHeaders, FingerprintedAllParts, FingerprintedParts,
        RequestHead, Via,
    };
    pub use axum_core::response::Response;
    pub use core::time::Duration;

    /// A handle that can open a transactional handler's transaction: a `Store`, or anything
    /// (an `Arc` or a `LazyLock` of one; its backend is checked when the first call runs).
    #[diagnostic::on_unimplemented(
        message = "`{Self}` cannot open the transaction that `transactional` needs",
        label = "not a `Store`",
        note = "give `store` a `Store` built on a `PostgresStore` or a `SqliteStore`: a transactional handler's writes go to the store's own database"
    )]
    pub trait OpensTransactions {
        /// The handle.
        fn handle(&self) -> crate::Store;
    }

    impl OpensTransactions for crate::Store {
        fn handle(&self) -> crate::Store {
            self.clone()
        }
    }

    impl<T: OpensTransactions + ?Sized> OpensTransactions for &T {
        fn handle(&self) -> crate::Store {
            (**self).handle()
        }
    }

    impl OpensTransactions for std::sync::Arc<crate::Store> {
        fn handle(&self) -> crate::Store {
            (**self).clone()
        }
    }

    impl<F: FnOnce() -> crate::Store> OpensTransactions for std::sync::LazyLock<crate::Store, F> {
        fn handle(&self) -> crate::Store {
            (**self).clone()
        }
    }

    /// An owned handle for a transactional handler.
    pub fn transactional_store(store: &impl OpensTransactions) -> crate::Store {
        store.handle()
    }

    /// An owned handle from anything that derefs to a `Store`.
    pub fn store(store: &crate::Store) -> crate::Store {
        store.clone()
    }

    /// The handler's name and the scope it asks for, as the executor wants them.
    pub fn target(handler: &'static str, scope: Scope) -> Target {
        Target {
            handler: std::borrow::Cow::Borrowed(handler),
            scope,
        }
    }

    /// The handler's own scope (`scope = ...`), as text.
    pub fn scope(scope: &dyn core::fmt::Display) -> Scope {
        Scope::Named(scope.to_string())
    }

    /// Plain-function mode: the runtime entry and its helpers.
    pub use crate::function::{
        Arguments, key, run as call, run_transactional as call_transactional,
    };

    /// The gRPC adapter's entries and the service's clone.
    #[cfg(feature = "tonic")]
    pub use crate::grpc::{
        run as grpc_run, run_transactional as grpc_run_transactional, service as grpc_service,
    };

    /// The handler name of a method: its `Self` type's name and the method's.
    pub fn method_target(self_type: &'static str, method: &'static str, scope: Scope) -> Target {
        Target {
            handler: std::borrow::Cow::Owned(format!("{self_type}::{method}")),
            scope,
        }
    }

    /// Pins a future's output type, so that `?` in the handler's body infers.
    pub fn typed<T, F: core::future::Future<Output = T>>(future: F) -> F {
        future
    }
}
