//! The embedded store: SQLite on sqlx, one statement per step, leases judged by SQLite's clock.
//!
//! SQLite has no data-modifying CTE, and an upsert whose `DO UPDATE .. WHERE` is false returns
//! no row. So the claim's `DO UPDATE` has no `WHERE`: every column is set to
//! `CASE WHEN <may take over> THEN <new value> ELSE <old value> END`, and `RETURNING` always
//! hands back the row as it now stands: ours when we took it, the standing record otherwise.
//! One statement, one round trip, including for replays; the price is that a claim which
//! takes nothing still rewrites the row with its own values. SQLite runs one writer at a time,
//! so the statement is a compare-and-set without further locking.
//!
//! Time is Unix milliseconds from `unixepoch('subsec')`, which SQLite holds fixed for the
//! whole statement.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteQueryResult,
};
use sqlx::{AssertSqlSafe, Executor, Row, Sqlite};

use super::{
    Dialect, InvalidTableName, Param, SqlStore, Statements, TableName, Values,
    acquired_from_column, millis, on_connection, sqlite_code_is_transient,
};
use crate::engine::record::{Claim, ClaimOutcome};
use crate::engine::store::Isolation;
use crate::engine::store::{StoreError, StoreResult};

/// The migrations, in order; each is idempotent and runs on every [`SqliteStore::migrate`].
const MIGRATIONS: &[&str] = &[include_str!(
    "../../../migrations/sqlite/0001_idempotency_keys.sql"
)];

/// The statement's clock, in Unix milliseconds.
const NOW: &str = "CAST(round(unixepoch('subsec') * 1000) AS INTEGER)";

/// Whether the existing row (bare column names) may be taken by the claim (`excluded.`).
const TAKE: &str = "(expires_at <= {now} OR (request_fingerprint = excluded.request_fingerprint \
     AND (response_status = -1 OR (response_status IS NULL AND locked_until <= {now}))))";

/// The time until the first live record of a scope (`?1`) expires, among the first `?2`
/// found, in milliseconds (NULL when it has none): a refused claim's `Retry-After`, which the
/// claim cannot say itself (an upsert that writes nothing returns no row).
const FIRST_EXPIRY: &str = "
SELECT max(0, min(expires_at) - {now}) AS first_expiry
FROM (SELECT expires_at FROM {table} WHERE scope = ?1 AND expires_at > {now} LIMIT ?2)";

/// The claim's upsert of the standing row and its answer, which its two forms share (with
/// and without a quota).
macro_rules! take_or_return {
    () => {
        "
ON CONFLICT (scope, handler, idempotency_key) DO UPDATE SET
    request_fingerprint = CASE WHEN {take} THEN excluded.request_fingerprint
                               ELSE request_fingerprint END,
    response_status = CASE WHEN {take} THEN NULL ELSE response_status END,
    response_headers = CASE WHEN {take} THEN NULL ELSE response_headers END,
    response_body = CASE WHEN {take} THEN NULL ELSE response_body END,
    owner_token = CASE WHEN {take} THEN excluded.owner_token ELSE owner_token END,
    acquired = CASE WHEN expires_at <= {now} THEN 'new'
                    WHEN {take} AND response_status = -1 THEN 'failed_storage'
                    WHEN {take} THEN 'abandoned'
                    ELSE acquired END,
    locked_until = CASE WHEN {take} THEN excluded.locked_until ELSE locked_until END,
    created_at = CASE WHEN expires_at <= {now} THEN excluded.created_at ELSE created_at END,
    updated_at = CASE WHEN {take} THEN excluded.updated_at ELSE updated_at END,
    expires_at = CASE WHEN {take} THEN excluded.expires_at ELSE expires_at END
RETURNING owner_token = ?5 AND response_status IS NULL AS won, acquired, request_fingerprint,
          response_status, response_headers, response_body,
          max(0, locked_until - {now}) AS lease_ms"
    };
}

impl Dialect for Sqlite {
    const CLAIM: &'static str = concat!(
        "
INSERT INTO {table} (scope, handler, idempotency_key, request_fingerprint, owner_token, acquired,
                     locked_until, created_at, updated_at, expires_at)
VALUES (?1, ?2, ?3, ?4, ?5, 'new', {now} + ?6, {now}, {now}, {now} + ?7)",
        take_or_return!()
    );

    /// The claim when the store has a quota per scope (`?8`): the row to insert is offered
    /// only when this key already has a live record (a replay, a conflict, a takeover adds
    /// none) or its scope holds fewer than `?8` live records, counted by the primary key's
    /// leading column (`scope`) and no further than `?8` rows. A refusal returns no row, and
    /// `FIRST_EXPIRY` then says when room is expected.
    const CLAIM_WITHIN_QUOTA: &'static str = concat!(
        "
INSERT INTO {table} (scope, handler, idempotency_key, request_fingerprint, owner_token, acquired,
                     locked_until, created_at, updated_at, expires_at)
SELECT ?1, ?2, ?3, ?4, ?5, 'new', {now} + ?6, {now}, {now}, {now} + ?7
WHERE EXISTS (SELECT 1 FROM {table}
              WHERE scope = ?1 AND handler = ?2 AND idempotency_key = ?3 AND expires_at > {now})
   OR (SELECT count(*) FROM (SELECT 1 FROM {table} WHERE scope = ?1 AND expires_at > {now}
                             LIMIT ?8)) < ?8",
        take_or_return!()
    );

    const RENEW: &'static str = "
UPDATE {table} SET locked_until = {now} + ?5, updated_at = {now}
WHERE scope = ?1 AND handler = ?2 AND idempotency_key = ?3 AND owner_token = ?4
  AND response_status IS NULL";

    const COMPLETE: &'static str = "
UPDATE {table} SET response_status = ?5, response_headers = ?6, response_body = ?7,
    updated_at = {now}, expires_at = {now} + ?8
WHERE scope = ?1 AND handler = ?2 AND idempotency_key = ?3 AND owner_token = ?4";

    const FAIL: &'static str = "
UPDATE {table} SET response_status = -1, response_headers = NULL, response_body = NULL,
    updated_at = {now}
WHERE scope = ?1 AND handler = ?2 AND idempotency_key = ?3 AND owner_token = ?4";

    const RELEASE: &'static str = "
DELETE FROM {table}
WHERE scope = ?1 AND handler = ?2 AND idempotency_key = ?3 AND owner_token = ?4
  AND response_status IS NULL";

    const GET: &'static str = "
SELECT request_fingerprint, response_status, response_headers, response_body,
       max(0, locked_until - {now}) AS lease_ms
FROM {table}
WHERE scope = ?1 AND handler = ?2 AND idempotency_key = ?3 AND expires_at > {now}";

    const PURGE: &'static str = "
DELETE FROM {table}
WHERE rowid IN (SELECT rowid FROM {table} WHERE expires_at <= {now} LIMIT ?1)";

    const INSPECT: &'static str = "
SELECT response_status, response_headers, length(CAST(response_body AS BLOB)) AS body_bytes,
       max(0, {now} - created_at) AS record_age, max(0, {now} - updated_at) AS since_update,
       max(0, expires_at - {now}) AS expires_in, max(0, locked_until - {now}) AS lease_ms
FROM {table}
WHERE scope = ?1 AND handler = ?2 AND idempotency_key = ?3 AND expires_at > {now}";

    const EVICT: &'static str = "
DELETE FROM {table} WHERE scope = ?1 AND handler = ?2 AND idempotency_key = ?3";

    const STATS: &'static str = "
SELECT
    coalesce(sum(CASE WHEN expires_at > {now} AND response_status IS NULL THEN 1 ELSE 0 END), 0)
        AS in_progress,
    coalesce(sum(CASE WHEN expires_at > {now} AND response_status >= 100 THEN 1 ELSE 0 END), 0)
        AS completed,
    coalesce(sum(CASE WHEN expires_at > {now} AND response_status = -1 THEN 1 ELSE 0 END), 0)
        AS failed_storage,
    coalesce(sum(CASE WHEN expires_at <= {now} THEN 1 ELSE 0 END), 0) AS expired
FROM {table}";

    const LEASE_LEFT: &'static str = "lease_ms";

    /// Also writes in the statement's clock and the claim's takeover condition.
    fn fill(table: &TableName, template: &str) -> String {
        table.fill(&template.replace("{take}", TAKE).replace("{now}", NOW))
    }

    fn duration(duration: Duration) -> i64 {
        millis(duration)
    }

    fn lease_left(number: u64) -> Duration {
        Duration::from_millis(number)
    }

    /// SQLite's transactions are serializable whatever is asked: one writer at a time.
    fn begin(_: Isolation) -> Option<&'static str> {
        None
    }

    fn code_is_transient(code: &str) -> bool {
        sqlite_code_is_transient(code)
    }

    fn rows_affected(done: &SqliteQueryResult) -> u64 {
        done.rows_affected()
    }
}

/// An [`IdempotencyStore`](crate::IdempotencyStore) in a SQLite database, for a service that runs as one process.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use idem_runtime::{SqliteStore, Store};
///
/// let sqlite = SqliteStore::connect("sqlite://idem.db").await?; // created if missing
/// sqlite.migrate().await?; // idempotent
/// let store = Store::new(sqlite);
/// # drop(store); Ok(()) }
/// ```
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    sql: Arc<Statements<Sqlite>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("table", &self.sql.table)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// A store on the application's pool, using the table `idempotency_keys`.
    pub fn new(pool: SqlitePool) -> Self {
        SqliteStore {
            pool,
            sql: Arc::new(Statements::new(TableName::default(), None, Values::Bound)),
        }
    }

    /// Opens (creating if missing) the database at `url` (`sqlite://PATH`, or
    /// `sqlite::memory:`), in WAL mode with a 5 s busy timeout. An in-memory database lives
    /// on one connection that the pool keeps open.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(Sqlite::classify)?
            .create_if_missing(true)
            .busy_timeout(Duration::from_secs(5));
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let pool = if in_memory {
            SqlitePoolOptions::new()
                .min_connections(1)
                .max_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_with(options)
                .await
        } else {
            SqlitePoolOptions::new()
                .max_connections(4)
                .connect_with(options.journal_mode(SqliteJournalMode::Wal))
                .await
        };
        Ok(SqliteStore::new(pool.map_err(Sqlite::classify)?))
    }

    /// Uses another table (a plain identifier).
    pub fn with_table(mut self, table: &str) -> Result<Self, InvalidTableName> {
        self.sql = Arc::new(Statements::new(
            TableName::new(table)?,
            self.sql.quota(),
            Values::Bound,
        ));
        Ok(self)
    }

    /// Caps the live records one scope may hold at `records` (at least 1): a claim that would
    /// add one more is refused (429 with `Retry-After` over HTTP), so that one caller cannot
    /// grow the table without bound (docs/contract.md, "Quotas"). The claim then counts the
    /// scope's live records, at most `records` of them, by the primary key's leading column
    /// (SQLite runs one writer at a time, so the count is exact); a store without a quota runs
    /// the claim without the count. A refusal costs one more read, for its `Retry-After`, on
    /// the claim's connection.
    pub fn scope_quota(mut self, records: u64) -> Self {
        self.sql = Arc::new(Statements::new(
            self.sql.table.clone(),
            Some(records),
            Values::Bound,
        ));
        self
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        self.sql.table.as_str()
    }

    /// The pool.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// How long until one of the first `quota` live records of `scope` expires (a second
    /// when it has none left: room is there already).
    async fn first_expiry(
        &self,
        db: &mut SqliteConnection,
        scope: &str,
        quota: u64,
    ) -> StoreResult<Duration> {
        let statement = Sqlite::fill(&self.sql.table, FIRST_EXPIRY);
        let params = [Param::Text(scope), Param::count(quota)];
        let ready = self.sql.ready(AssertSqlSafe(statement), &params)?;
        let row = db.fetch_one(ready).await.map_err(Sqlite::classify)?;
        let wait: Option<i64> = row.try_get("first_expiry").map_err(Sqlite::classify)?;
        Ok(wait.map_or(Duration::from_secs(1), Sqlite::span))
    }

    /// Creates the table and its index if missing, in one `BEGIN IMMEDIATE` transaction.
    /// Running it again, or from several processes at once, is harmless.
    pub async fn migrate(&self) -> StoreResult<()> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(Sqlite::classify)?;
        for migration in MIGRATIONS {
            sqlx::raw_sql(AssertSqlSafe(self.sql.table.fill(migration)))
                .execute(&mut *tx)
                .await
                .map_err(Sqlite::classify)?;
        }
        tx.commit().await.map_err(Sqlite::classify)
    }
}

impl SqlStore for SqliteStore {
    type Db = Sqlite;
    type Connection<'a> = PoolConnection<Sqlite>;

    fn statements(&self) -> &Arc<Statements<Sqlite>> {
        &self.sql
    }

    fn pool(&self) -> &sqlx::Pool<Sqlite> {
        &self.pool
    }

    async fn connection(&self) -> StoreResult<PoolConnection<Sqlite>> {
        self.pool.acquire().await.map_err(Sqlite::classify)
    }

    fn settle<T>(&self, _: PoolConnection<Sqlite>, result: StoreResult<T>) -> StoreResult<T> {
        result
    }

    /// One statement, which takes the key or returns the standing record; a claim refused at
    /// its scope's quota then reads its wait on the same connection. A claim issued again with
    /// the same token finds its own live claim and answers `Acquired` again.
    async fn claim_key(&self, claim: &Claim) -> StoreResult<ClaimOutcome> {
        on_connection!(self, db => async {
            let claimed = (&mut *db).fetch_optional(self.sql.claim(claim)?);
            let Some(row) = claimed.await.map_err(Sqlite::classify)? else {
                // Only the claim within a quota offers no row: its scope is full. The wait is
                // read on the claim's connection, free again, rather than taking another.
                let Some(quota) = self.sql.quota() else {
                    return Err(StoreError::permanent("the claim statement returned no row"));
                };
                let retry_after = self.first_expiry(db, claim.id.scope.as_str(), quota).await?;
                return Ok(ClaimOutcome::OverQuota { retry_after });
            };
            if row.try_get::<bool, _>("won").map_err(Sqlite::classify)? {
                let acquired: String = row.try_get("acquired").map_err(Sqlite::classify)?;
                Ok(ClaimOutcome::Acquired(acquired_from_column(&acquired)?))
            } else {
                Ok(ClaimOutcome::Existing(Statements::<Sqlite>::record(&row)?))
            }
        })
    }
}
