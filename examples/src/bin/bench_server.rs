//! The benchmark target (bench/run.sh): one trivial handler served three ways side by side,
//! so that a load generator measures only what idempotency costs.
//!
//! - `POST /bare`: the handler as it is.
//! - `POST /idem`: the same handler under `#[idempotent]`, on the store named by `IDEM_STORE`
//!   (`memory`, `sqlite://PATH`, a `postgres://` or a `redis://` URL; default `memory`); with
//!   `IDEM_PG_POOLER=transaction`, a Postgres store sends its statements as text, as behind a
//!   transaction-mode pooler (`PostgresStore::behind_pooler`), whether or not one is there.
//! - `POST /idem/tx` (SQL stores only): the same handler in transactional mode, taking the
//!   store's `Tx` and writing nothing through it, so the row measures the claim, the completion
//!   and their one shared transaction.
//! - `POST /idem/wait`: the handler under `wait = "10s"`, running 2 ms, so that duplicates sent
//!   at once meet it in progress and wait for its answer.
//! - `POST /peer` (feature `peer-bench`): the same handler behind the `axum-idempotent` crate,
//!   direct-key mode on its in-memory (moka) session store. It caches only for requests that
//!   carry a session, so a client first calls `POST /peer/session` and sends back the cookie.
//! - `GET /healthz`.
//!
//! `BIND` sets the address (default `127.0.0.1:0`); the first line printed names the port.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Json, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use bytes::Bytes;
use idem_examples::app;
use idem_examples::settings::{self, StoreUrl};
use idem_runtime::{
    IdempotencyStore, MemoryStore, PgTx, PostgresStore, RedisStore, SqliteStore, SqliteTx, Store,
    idempotent,
};
use serde::Serialize;
use tokio::net::TcpListener;

/// What the handlers share.
#[derive(Clone)]
struct BenchState {
    idem: Store,
}

/// The handler's answer.
#[derive(Serialize)]
struct Ack {
    received: usize,
}

/// Every handler's answer: 201 with the body's length.
fn ack(body: &Bytes) -> (StatusCode, Json<Ack>) {
    (
        StatusCode::CREATED,
        Json(Ack {
            received: body.len(),
        }),
    )
}

/// The trivial handler: reads the body, answers 201 with its length.
async fn bare(State(_): State<BenchState>, body: Bytes) -> (StatusCode, Json<Ack>) {
    ack(&body)
}

/// The same handler under the attribute.
#[idempotent(store = "app.idem")]
async fn idem(State(app): State<BenchState>, body: Bytes) -> (StatusCode, Json<Ack>) {
    ack(&body)
}

/// The same handler in transactional mode on Postgres.
#[idempotent(store = "app.idem", transactional)]
async fn idem_tx_pg(
    State(app): State<BenchState>,
    _tx: PgTx,
    body: Bytes,
) -> (StatusCode, Json<Ack>) {
    ack(&body)
}

/// The same handler in transactional mode on SQLite.
#[idempotent(store = "app.idem", transactional)]
async fn idem_tx_sqlite(
    State(app): State<BenchState>,
    _tx: SqliteTx,
    body: Bytes,
) -> (StatusCode, Json<Ack>) {
    ack(&body)
}

/// The handler under `wait`, long enough (2 ms) for duplicates sent together to meet it.
#[idempotent(store = "app.idem", wait = "10s")]
async fn idem_wait(State(app): State<BenchState>, body: Bytes) -> (StatusCode, Json<Ack>) {
    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    ack(&body)
}

async fn open(url: &StoreUrl, pooler: bool) -> Result<Arc<dyn IdempotencyStore>, app::Error> {
    Ok(match url {
        // Room for every key a full benchmark run sends: the default (1 million) would fill.
        StoreUrl::Memory => Arc::new(MemoryStore::with_capacity(64_000_000)),
        StoreUrl::Sqlite(url) => {
            let store = SqliteStore::connect(url).await?;
            store.migrate().await?;
            Arc::new(store)
        }
        StoreUrl::Postgres(url) => {
            let mut store = PostgresStore::connect(url).await?;
            if pooler {
                store = store.behind_pooler();
            }
            store.migrate().await?;
            Arc::new(store)
        }
        StoreUrl::Redis(url) => Arc::new(RedisStore::connect(url).await?),
    })
}

#[tokio::main]
async fn main() -> Result<(), app::Error> {
    let url = StoreUrl::parse(&std::env::var("IDEM_STORE").unwrap_or_else(|_| "memory".into()))?;
    let bind = std::env::var("BIND").unwrap_or_else(|_| "127.0.0.1:0".into());
    let pooler = settings::pg_pooler(|name| std::env::var(name).ok())?;
    let state = BenchState {
        idem: Store::from_arc(open(&url, pooler).await?),
    };
    let router = Router::new()
        .route("/bare", post(bare))
        .route("/idem", post(idem))
        .route("/idem/wait", post(idem_wait))
        .route("/healthz", get(|| async { "ok" }));
    let router = match url {
        StoreUrl::Postgres(_) => router.route("/idem/tx", post(idem_tx_pg)),
        StoreUrl::Sqlite(_) => router.route("/idem/tx", post(idem_tx_sqlite)),
        StoreUrl::Memory | StoreUrl::Redis(_) => router,
    };
    #[cfg(feature = "peer-bench")]
    let router = router.merge(peer::routes());
    let listener = TcpListener::bind(&bind).await?;
    println!(
        "bench_server listening on http://{}",
        listener.local_addr()?
    );
    axum::serve(listener, router.with_state(state))
        .with_graceful_shutdown(app::shutdown_signal())
        .await?;
    Ok(())
}

#[cfg(feature = "peer-bench")]
mod peer {
    use std::sync::Arc;

    use axum::Router;
    use axum::routing::post;
    use axum_idempotent::{IdempotentLayer, IdempotentOptions};
    use ruts::store::Ttl;
    use ruts::store::moka::MokaStore;
    use ruts::{CookieOptions, Session, SessionLayer};
    use tower_cookies::CookieManagerLayer;

    use super::{BenchState, bare};

    /// Starts a session (the peer caches only for requests that carry one).
    async fn session(session: Session<MokaStore>) -> &'static str {
        let ttl = Ttl::new(3600).expect("an hour is a valid TTL");
        match session.set("user", &"bench", ttl, None).await {
            Ok(()) => "ok",
            Err(_) => "no session",
        }
    }

    /// `/peer` behind `IdempotentLayer`, `/peer/session` beside it, both in a session.
    pub(super) fn routes() -> Router<BenchState> {
        let sessions = Arc::new(MokaStore::builder().max_capacity(1_000_000).build());
        let options = IdempotentOptions::default()
            .use_idempotency_key_header(Some("Idempotency-Key"), true)
            .expire_after(24 * 3600);
        let cookie = CookieOptions::build()
            .name("session")
            .max_age(24 * 3600)
            .path("/");
        Router::new()
            .route("/peer", post(bare))
            .layer(IdempotentLayer::<MokaStore>::new(options))
            .route("/peer/session", post(session))
            .layer(SessionLayer::new(sessions).with_cookie_options(cookie))
            .layer(CookieManagerLayer::new())
    }
}
