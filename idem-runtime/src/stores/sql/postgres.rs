//! The shared store: Postgres on sqlx, one statement per step, leases judged by `now()`.
//!
//! Claiming is one statement. It first reads the record that stands, if any; when that record
//! cannot be taken (completed, live, or another request's), the statement returns it and
//! writes nothing, so a replay, a conflict or a mismatch costs the database a read and no
//! commit to its log. Otherwise it runs an `INSERT .. ON CONFLICT DO UPDATE .. WHERE`, which
//! inserts a new record or takes over an expired, abandoned or FAILED_STORAGE one (the row
//! lock makes it a compare-and-set against the newest version of the row). How a claim was
//! acquired comes back through the `acquired` column, which the `DO UPDATE` computes from
//! that locked, newest version.
//!
//! Under READ COMMITTED the statement's reads use its snapshot, while the upsert acts on the
//! newest committed row. Two corners follow, both from a claim that committed after the
//! snapshot was taken: a row inserted then blocks the insert yet is invisible, so nothing
//! comes back; a row taken over then comes back as the snapshot saw it, a record this claim
//! could have taken (marked `stale`). Either way the statement runs again with a fresh
//! snapshot, at most [`CLAIM_ATTEMPTS`] times in all; a stale record still standing after the
//! last attempt is returned as it is (the engine answers a conflict). A record the snapshot
//! shows standing is answered as of the snapshot: the answer the claim would have had a moment
//! earlier. Skipping the insert then can only make a claim acquire less often, never twice:
//! every acquisition still goes through the primary key and the row lock.

use std::ops::{Deref, DerefMut};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{
    PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions, PgQueryResult,
};
use sqlx::{AssertSqlSafe, ConnectOptions, Executor, PgExecutor, Postgres, Row};

use super::connections::{Connections, Lease};
use super::{
    Dialect, InvalidTableName, Param, SqlStore, Statements, TableName, Values,
    acquired_from_column, literals, micros, on_connection, postgres_code_is_transient,
};
use crate::engine::record::{Claim, ClaimOutcome, Record, RecordId};
use crate::engine::store::Isolation;
use crate::engine::store::{Announcements, Heard, Reply, StoreError, StoreResult};

/// The migrations, in order; each is idempotent and runs on every [`PostgresStore::migrate`].
const MIGRATIONS: &[&str] = &[include_str!(
    "../../../migrations/postgres/0001_idempotency_keys.sql"
)];

/// The channel on which claims that ended are announced to waiters in other processes
/// (docs/contract.md, "Waiting for the in-flight result"): the payload is the record's
/// [`RecordId::wake_key`] in hex, never its key.
pub const WAKE_CHANNEL: &str = "idem_claim_ended";

/// Announces the end of a claim: `NOTIFY` on a channel (`$1`) with a payload (`$2`), which
/// works through a transaction-mode pooler too, being one statement that commits at once.
const ANNOUNCE: &str = "SELECT pg_notify($1, $2)";

/// Serializes migrations of one table across instances, until their transaction ends.
const MIGRATION_LOCK: &str = "SELECT pg_advisory_xact_lock(hashtext($1))";

/// How many times a claim statement runs in the READ COMMITTED corners (see the module
/// doc). A second run sees the committed row; a third covers a release in between.
pub const CLAIM_ATTEMPTS: usize = 3;

/// The claim's parts that its two forms share (with and without a quota): the standing
/// record and whether this claim may take it, the upsert that takes it, and the answer.
macro_rules! standing {
    ($($live:literal)?) => {
        concat!("
WITH standing AS (
    SELECT request_fingerprint, response_status, response_headers, response_body, locked_until,
           ", $($live, )? "COALESCE(expires_at <= now()
             OR (request_fingerprint = $4
                 AND (response_status = -1
                      OR (response_status IS NULL AND locked_until <= now()))),
             false) AS takeable
    FROM {table}
    WHERE scope = $1 AND handler = $2 AND idempotency_key = $3
)")
    };
}

macro_rules! upsert {
    ($admitted:literal) => {
        concat!(
            "
claimed AS (
    INSERT INTO {table} AS t (scope, handler, idempotency_key, request_fingerprint, owner_token,
                              acquired, locked_until, created_at, updated_at, expires_at)
    SELECT $1, $2, $3, $4, $5, 'new', now() + $6::bigint * interval '1 microsecond', now(),
           now(), now() + $7::bigint * interval '1 microsecond'
    WHERE NOT EXISTS (SELECT 1 FROM standing WHERE NOT takeable)",
            $admitted,
            "
    ON CONFLICT (scope, handler, idempotency_key) DO UPDATE SET
        request_fingerprint = excluded.request_fingerprint,
        response_status = NULL,
        response_headers = NULL,
        response_body = NULL,
        owner_token = excluded.owner_token,
        acquired = CASE WHEN t.expires_at <= now() THEN 'new'
                        WHEN t.response_status = -1 THEN 'failed_storage'
                        ELSE 'abandoned' END,
        locked_until = excluded.locked_until,
        created_at = CASE WHEN t.expires_at <= now() THEN now() ELSE t.created_at END,
        updated_at = now(),
        expires_at = excluded.expires_at
    WHERE t.expires_at <= now()
       OR (t.request_fingerprint = excluded.request_fingerprint
           AND (t.response_status = -1
                OR (t.response_status IS NULL AND t.locked_until <= now())))
    RETURNING acquired
)"
        )
    };
}

macro_rules! answer {
    ($quota_column:literal, $admitted:literal) => {
        concat!(
            "
SELECT acquired, NULL::text AS request_fingerprint, NULL::integer AS response_status,
       NULL::text AS response_headers, NULL::bytea AS response_body, 0::bigint AS lease_us,
       false AS stale",
            $quota_column,
            "
FROM claimed
UNION ALL
SELECT NULL, request_fingerprint, response_status, response_headers, response_body,
       GREATEST(0, EXTRACT(EPOCH FROM locked_until - now()) * 1000000)::bigint, takeable",
            $quota_column,
            "
FROM standing
WHERE NOT EXISTS (SELECT 1 FROM claimed)",
            $admitted
        )
    };
}

impl Dialect for Postgres {
    const CLAIM: &'static str = concat!(standing!(), ",", upsert!(""), answer!("", ""));

    /// The claim when the store has a quota per scope (`$8`): a key that would add a live
    /// record to its scope is admitted only while the scope holds fewer than `$8` live
    /// records, counted by the primary key's leading column (`scope`) and no further than `$8`
    /// rows. A refusal is one row whose `quota_wait_us` (otherwise NULL) is the time until the
    /// first of the counted records expires.
    const CLAIM_WITHIN_QUOTA: &'static str = concat!(
        standing!("expires_at > now() AS live, "),
        ",
counted AS (
    SELECT count(*) AS records, min(expires_at) AS first_expiry
    FROM (SELECT expires_at FROM {table} WHERE scope = $1 AND expires_at > now() LIMIT $8) held
),
admitted AS (
    SELECT EXISTS (SELECT 1 FROM standing WHERE live)
           OR (SELECT records FROM counted) < $8 AS ok
),",
        upsert!(
            "
      AND (SELECT ok FROM admitted)"
        ),
        answer!(
            ", NULL::bigint AS quota_wait_us",
            "
  AND (SELECT ok FROM admitted)"
        ),
        "
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, 0::bigint, false,
       GREATEST(0, EXTRACT(EPOCH FROM first_expiry - now()) * 1000000)::bigint
FROM counted
WHERE NOT (SELECT ok FROM admitted)"
    );

    const RENEW: &'static str = "
UPDATE {table} SET locked_until = now() + $5::bigint * interval '1 microsecond', updated_at = now()
WHERE scope = $1 AND handler = $2 AND idempotency_key = $3 AND owner_token = $4
  AND response_status IS NULL";

    const COMPLETE: &'static str = "
UPDATE {table} SET response_status = $5, response_headers = $6, response_body = $7,
    updated_at = now(), expires_at = now() + $8::bigint * interval '1 microsecond'
WHERE scope = $1 AND handler = $2 AND idempotency_key = $3 AND owner_token = $4";

    const FAIL: &'static str = "
UPDATE {table} SET response_status = -1, response_headers = NULL, response_body = NULL,
    updated_at = now()
WHERE scope = $1 AND handler = $2 AND idempotency_key = $3 AND owner_token = $4";

    const RELEASE: &'static str = "
DELETE FROM {table}
WHERE scope = $1 AND handler = $2 AND idempotency_key = $3 AND owner_token = $4
  AND response_status IS NULL";

    const GET: &'static str = "
SELECT request_fingerprint, response_status, response_headers, response_body,
       GREATEST(0, EXTRACT(EPOCH FROM locked_until - now()) * 1000000)::bigint AS lease_us
FROM {table}
WHERE scope = $1 AND handler = $2 AND idempotency_key = $3 AND expires_at > now()";

    const PURGE: &'static str = "
DELETE FROM {table}
WHERE ctid = ANY(ARRAY(SELECT ctid FROM {table} WHERE expires_at <= now()
                       LIMIT $1 FOR UPDATE SKIP LOCKED))
  AND expires_at <= now()";

    const INSPECT: &'static str = "
SELECT response_status, response_headers, octet_length(response_body)::bigint AS body_bytes,
       GREATEST(0, EXTRACT(EPOCH FROM now() - created_at) * 1000000)::bigint AS record_age,
       GREATEST(0, EXTRACT(EPOCH FROM now() - updated_at) * 1000000)::bigint AS since_update,
       GREATEST(0, EXTRACT(EPOCH FROM expires_at - now()) * 1000000)::bigint AS expires_in,
       GREATEST(0, EXTRACT(EPOCH FROM locked_until - now()) * 1000000)::bigint AS lease_us
FROM {table}
WHERE scope = $1 AND handler = $2 AND idempotency_key = $3 AND expires_at > now()";

    const EVICT: &'static str = "
DELETE FROM {table} WHERE scope = $1 AND handler = $2 AND idempotency_key = $3";

    const STATS: &'static str = "
SELECT count(*) FILTER (WHERE expires_at > now() AND response_status IS NULL) AS in_progress,
       count(*) FILTER (WHERE expires_at > now() AND response_status >= 100) AS completed,
       count(*) FILTER (WHERE expires_at > now() AND response_status = -1) AS failed_storage,
       count(*) FILTER (WHERE expires_at <= now()) AS expired
FROM {table}";

    const LEASE_LEFT: &'static str = "lease_us";

    fn duration(duration: Duration) -> i64 {
        micros(duration)
    }

    fn written_in(template: &str, params: &[Param<'_>]) -> StoreResult<String> {
        literals::written_in(template, params)
    }

    fn lease_left(number: u64) -> Duration {
        Duration::from_micros(number)
    }

    fn begin(isolation: Isolation) -> Option<&'static str> {
        match isolation {
            Isolation::Default => None,
            Isolation::ReadCommitted => Some("BEGIN ISOLATION LEVEL READ COMMITTED"),
            Isolation::RepeatableRead => Some("BEGIN ISOLATION LEVEL REPEATABLE READ"),
            Isolation::Serializable => Some("BEGIN ISOLATION LEVEL SERIALIZABLE"),
        }
    }

    fn code_is_transient(code: &str) -> bool {
        postgres_code_is_transient(code)
    }

    fn rows_affected(done: &PgQueryResult) -> u64 {
        done.rows_affected()
    }
}

/// An [`IdempotencyStore`](crate::IdempotencyStore) on Postgres, shared by every instance of a service.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use idem_runtime::{PostgresStore, Store};
///
/// let pg = PostgresStore::connect("postgres://app@localhost/app").await?;
/// pg.migrate().await?; // idempotent; safe from several instances at once
/// let store = Store::new(pg);
/// # drop(store); Ok(()) }
/// ```
///
/// Each step is one statement, and each statement is a method generic over
/// [`PgExecutor`]: a store made by [`PostgresStore::connect`] runs them on connections of its
/// own, one made by [`PostgresStore::new`] on the pool it was given, and a transactional run
/// completes on its transaction's connection, without a second copy of the SQL.
///
/// Behind a transaction-mode pooler such as PgBouncer, say so with
/// [`PostgresStore::behind_pooler`], and give waiting a direct connection with
/// [`PostgresStore::listen_url`]:
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use idem_runtime::{PostgresStore, Store};
///
/// let pg = PostgresStore::connect("postgres://app@pgbouncer:6432/app")
///     .await?
///     .behind_pooler()
///     .listen_url("postgres://app@db:5432/app")?; // LISTEN goes around the pooler
/// pg.migrate().await?;
/// let store = Store::new(pg);
/// # drop(store); Ok(()) }
/// ```
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// Where the store's statements run when it has connections of its own (`connect`).
    own: Option<Arc<Connections>>,
    sql: Arc<Statements<Postgres>>,
    /// Where waiting listens, when not on the pool's server (`listen_url`).
    listen_at: Option<Arc<PgConnectOptions>>,
    /// Set once the store has logged that it cannot listen behind a pooler.
    told_why_polling: Arc<AtomicBool>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("table", &self.sql.table)
            .field("values", &self.sql.values())
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// A store whose statements run on the application's pool, using the table
    /// `idempotency_keys`.
    ///
    /// sqlx's pool pings a connection when it comes back, from a task of its own: one round
    /// trip to the server more per statement (and, with its default
    /// `test_before_acquire(true)`, one more before). [`PostgresStore::connect`] avoids both.
    pub fn new(pool: PgPool) -> Self {
        PostgresStore {
            pool,
            own: None,
            sql: Arc::new(Statements::new(TableName::default(), None, Values::Bound)),
            listen_at: None,
            told_why_polling: Arc::default(),
        }
    }

    /// Connects to `url`, checking that the server answers. The store's statements run on
    /// connections of its own, at most [`PostgresStore::CONNECTIONS`], each used for one
    /// statement at a time and handed on without a ping; a connection whose statement failed
    /// or was interrupted is closed, and one idle for 30 seconds is pinged before its next
    /// statement. [`PostgresStore::pool`] is a pool on the same database, of as many
    /// connections, for [`PostgresStore::migrate`] and the application's own queries.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let pool = Self::own_pool()
            .connect(url)
            .await
            .map_err(Postgres::classify)?;
        let own = Connections::new(
            (*pool.connect_options()).clone(),
            Self::CONNECTIONS as usize,
        );
        Ok(PostgresStore {
            own: Some(Arc::new(own)),
            ..PostgresStore::new(pool)
        })
    }

    /// How many connections [`PostgresStore::connect`] opens at most for the store's
    /// statements (and as many for its pool).
    pub const CONNECTIONS: u32 = 10;

    /// The pool [`PostgresStore::connect`] makes.
    fn own_pool() -> PgPoolOptions {
        PgPoolOptions::new()
            .max_connections(Self::CONNECTIONS)
            .acquire_timeout(Duration::from_secs(5))
            .test_before_acquire(false)
    }

    /// Runs every statement of the store (its steps, `migrate`, announcing to waiters, and a
    /// transactional run's completion) as simple-protocol text with its values written in as
    /// literals, for a Postgres behind a pooler in transaction mode (PgBouncer's `pool_mode =
    /// transaction`). Transaction pooling hands each statement outside a transaction whichever
    /// server connection is free, so the named statements the store prepares by default would
    /// be missing there or clash with another client's; text is still one round trip per
    /// step, but Postgres parses and plans it every time (README, "Behind a connection
    /// pooler", has what that costs).
    ///
    /// The statements then carry keys and stored bodies in their text, which sqlx logs (every
    /// statement at debug level, slow ones at warn): on a store from
    /// [`PostgresStore::connect`] that logging is turned off, on its own connections and its
    /// pool; on a pool of yours ([`PostgresStore::new`]), connect it with
    /// `PgConnectOptions::disable_statement_logging()`.
    ///
    /// `LISTEN` cannot work through transaction pooling: without
    /// [`PostgresStore::listen_url`], waiting for an in-flight result polls, and says so once
    /// in the log.
    pub fn behind_pooler(mut self) -> Self {
        self.sql = Arc::new(Statements::new(
            self.sql.table.clone(),
            self.sql.quota(),
            Values::InText,
        ));
        if self.own.is_some() {
            // Made by `connect`: remade quiet, the pool opening its connections when needed.
            let quiet = (*self.pool.connect_options())
                .clone()
                .disable_statement_logging();
            let own = Connections::new(quiet.clone(), Self::CONNECTIONS as usize);
            self.own = Some(Arc::new(own));
            self.pool = Self::own_pool().connect_lazy_with(quiet);
        }
        self
    }

    /// Listens for the announcements that wake waiters (docs/contract.md, "Waiting for the
    /// in-flight result") on a connection to `url` instead of the store's own server: a
    /// direct connection to Postgres when the store's URL goes through a transaction-mode
    /// pooler, which cannot keep a `LISTEN`. Announcements still go through the pooler, as
    /// one `pg_notify` statement each. The URL is checked here; the connection is opened on
    /// the first wait.
    pub fn listen_url(mut self, url: &str) -> StoreResult<Self> {
        let options = PgConnectOptions::from_str(url).map_err(Postgres::classify)?;
        self.listen_at = Some(Arc::new(options));
        Ok(self)
    }

    /// Uses another table (a plain identifier; set the schema with the pool's `search_path`).
    pub fn with_table(mut self, table: &str) -> Result<Self, InvalidTableName> {
        let table = TableName::new(table)?;
        self.sql = Arc::new(Statements::new(table, self.sql.quota(), self.sql.values()));
        Ok(self)
    }

    /// Caps the live records one scope may hold at `records` (at least 1): a claim that would
    /// add one more is refused (429 with `Retry-After` over HTTP), so that one caller cannot
    /// grow the table without bound (docs/contract.md, "Quotas"). The claim then counts the
    /// scope's live records, at most `records` of them, by the primary key's leading column;
    /// a store without a quota runs the claim without the count. Concurrent first calls of one
    /// scope, each counting before the others commit, can pass the cap by as many as run at
    /// once.
    pub fn scope_quota(mut self, records: u64) -> Self {
        let table = self.sql.table.clone();
        self.sql = Arc::new(Statements::new(table, Some(records), self.sql.values()));
        self
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        self.sql.table.as_str()
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Creates the table and its index if missing. Running it again, or from several
    /// instances starting at once, is harmless: the migrations are idempotent and run in one
    /// transaction holding an advisory lock on the table's name.
    pub async fn migrate(&self) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(Postgres::classify)?;
        let lock = format!("idem.migrate.{}", self.table());
        let lock = self.sql.ready(MIGRATION_LOCK, &[Param::Text(&lock)])?;
        tx.execute(lock).await.map_err(Postgres::classify)?;
        for migration in MIGRATIONS {
            sqlx::raw_sql(AssertSqlSafe(self.sql.table.fill(migration)))
                .execute(&mut *tx)
                .await
                .map_err(Postgres::classify)?;
        }
        tx.commit().await.map_err(Postgres::classify)
    }
}

/// What one run of the claim statement found.
enum Claimed {
    /// Acquired, or a standing record as it is now.
    Fresh(ClaimOutcome),
    /// A record this claim could have taken, as an old snapshot saw it: someone else took it.
    Stale(Record),
    /// A row too new for the statement's snapshot blocked the insert.
    Invisible,
}

/// Runs the claim statement once: acquired, the standing record, or a READ COMMITTED corner.
async fn claimed<'c>(
    sql: &Statements<Postgres>,
    db: impl PgExecutor<'c>,
    claim: &Claim,
) -> StoreResult<Claimed> {
    let row = db
        .fetch_optional(sql.claim(claim)?)
        .await
        .map_err(Postgres::classify)?;
    let Some(row) = row else {
        return Ok(Claimed::Invisible);
    };
    if sql.quota().is_some()
        && let Some(wait) = row
            .try_get::<Option<i64>, _>("quota_wait_us")
            .map_err(Postgres::classify)?
    {
        let retry_after = Postgres::span(wait);
        return Ok(Claimed::Fresh(ClaimOutcome::OverQuota { retry_after }));
    }
    if let Some(acquired) = row
        .try_get::<Option<String>, _>("acquired")
        .map_err(Postgres::classify)?
    {
        let acquired = acquired_from_column(&acquired)?;
        return Ok(Claimed::Fresh(ClaimOutcome::Acquired(acquired)));
    }
    let record = Statements::<Postgres>::record(&row)?;
    if row
        .try_get::<bool, _>("stale")
        .map_err(Postgres::classify)?
    {
        Ok(Claimed::Stale(record))
    } else {
        Ok(Claimed::Fresh(ClaimOutcome::Existing(record)))
    }
}

/// A connection for one statement: one of the store's own, or one from its pool.
pub enum PgConnectionFor<'a> {
    Own(Lease<'a>),
    Pooled(PoolConnection<Postgres>),
}

impl Deref for PgConnectionFor<'_> {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        match self {
            PgConnectionFor::Own(lease) => lease,
            PgConnectionFor::Pooled(pooled) => pooled,
        }
    }
}

impl DerefMut for PgConnectionFor<'_> {
    fn deref_mut(&mut self) -> &mut PgConnection {
        match self {
            PgConnectionFor::Own(lease) => lease,
            PgConnectionFor::Pooled(pooled) => pooled,
        }
    }
}

impl SqlStore for PostgresStore {
    type Db = Postgres;
    type Connection<'a> = PgConnectionFor<'a>;

    fn statements(&self) -> &Arc<Statements<Postgres>> {
        &self.sql
    }

    fn pool(&self) -> &sqlx::Pool<Postgres> {
        &self.pool
    }

    /// One of the store's own connections when it has them, else one from its pool.
    async fn connection(&self) -> StoreResult<PgConnectionFor<'_>> {
        match &self.own {
            Some(own) => Ok(PgConnectionFor::Own(own.lease().await?)),
            // Boxed, so that with the store's own connections every statement's future does
            // not carry the pool's wait too (see `Connections::lease`).
            None => match Box::pin(self.pool.acquire()).await {
                Ok(pooled) => Ok(PgConnectionFor::Pooled(pooled)),
                Err(error) => Err(Postgres::classify(error)),
            },
        }
    }

    fn settle<T>(&self, connection: PgConnectionFor<'_>, result: StoreResult<T>) -> StoreResult<T> {
        match connection {
            PgConnectionFor::Own(lease) => lease.settle(result),
            PgConnectionFor::Pooled(_) => result,
        }
    }

    /// `NOTIFY`s the record's wake key on [`WAKE_CHANNEL`], for the listeners of other
    /// processes: one statement, delivered when it commits (at once, outside a transaction).
    fn announce<'a>(&'a self, id: &'a RecordId) -> Reply<'a, ()> {
        Reply::pending(async move {
            let key = format!("{:016x}", id.wake_key());
            let announce = self
                .sql
                .ready(ANNOUNCE, &[Param::Text(WAKE_CHANNEL), Param::Text(&key)])?;
            on_connection!(self, db => async {
                db.execute(announce).await.map(drop).map_err(Postgres::classify)
            })
        })
    }

    /// `LISTEN`s on [`WAKE_CHANNEL`] on one connection of its own, outside the store's
    /// connections and the pool, so that waiting never takes a connection from requests: to
    /// the [`PostgresStore::listen_url`] when given, else to the store's server, unless that
    /// is a pooler (`None`: waiters poll).
    fn listen(&self) -> Option<Reply<'_, Announcements>> {
        let options = match (&self.listen_at, self.sql.values()) {
            (Some(direct), _) => (**direct).clone(),
            (None, Values::Bound) => (*self.pool.connect_options()).clone(),
            (None, Values::InText) => {
                if !self.told_why_polling.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "waiters for in-flight results poll (up to 1 s late): LISTEN cannot \
                         work through a transaction-mode pooler; give the Postgres store a \
                         direct connection for it with PostgresStore::listen_url"
                    );
                }
                return None;
            }
        };
        Some(Reply::pending(async move {
            let one = PgPoolOptions::new()
                .max_connections(1)
                .max_lifetime(None)
                .idle_timeout(None)
                .connect_with(options)
                .await
                .map_err(Postgres::classify)?;
            let mut listener = PgListener::connect_with(&one)
                .await
                .map_err(Postgres::classify)?;
            listener.ignore_pool_close_event(true);
            listener
                .listen(WAKE_CHANNEL)
                .await
                .map_err(Postgres::classify)?;
            let heard = futures_util::stream::unfold(listener, |mut listener| async move {
                match listener.try_recv().await {
                    Ok(Some(notification)) => {
                        let heard = u64::from_str_radix(notification.payload(), 16)
                            .map_or(Heard::Gap, Heard::Ended);
                        Some((heard, listener))
                    }
                    // The connection was lost and is made again: announcements may be missed.
                    Ok(None) => Some((Heard::Gap, listener)),
                    Err(_) => None,
                }
            });
            Ok(Box::pin(heard) as Announcements)
        }))
    }

    /// Runs the claim statement up to [`CLAIM_ATTEMPTS`] times (see the module doc).
    async fn claim_key(&self, claim: &Claim) -> StoreResult<ClaimOutcome> {
        let mut stale = None;
        for _ in 0..CLAIM_ATTEMPTS {
            match on_connection!(self, db => claimed(&self.sql, db, claim))? {
                Claimed::Fresh(outcome) => return Ok(outcome),
                Claimed::Stale(record) => stale = Some(record),
                Claimed::Invisible => {}
            }
        }
        stale.map(ClaimOutcome::Existing).ok_or_else(|| {
            StoreError::transient(format!(
                "the record was replaced under {CLAIM_ATTEMPTS} claim attempts in a row"
            ))
        })
    }
}
