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

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
};
use sqlx::{AssertSqlSafe, Row, SqliteExecutor};

use super::sql::{
    self, Columns, InvalidTableName, TableName, acquired_from_column, millis,
    sqlite_code_is_transient,
};
use super::{BoxFuture, IdempotencyStore, StoreResult};
use crate::record::{Claim, ClaimOutcome, Record, RecordId, StoredResponse};

/// The migrations, in order; each is idempotent and runs on every [`SqliteStore::migrate`].
const MIGRATIONS: &[&str] = &[include_str!(
    "../../migrations/sqlite/0001_idempotency_keys.sql"
)];

/// The statement's clock, in Unix milliseconds.
const NOW: &str = "CAST(round(unixepoch('subsec') * 1000) AS INTEGER)";

/// Whether the existing row (bare column names) may be taken by the claim (`excluded.`).
const TAKE: &str = "(expires_at <= {now} OR (request_fingerprint = excluded.request_fingerprint \
     AND (response_status = -1 OR (response_status IS NULL AND locked_until <= {now}))))";

const CLAIM: &str = "
INSERT INTO {table} (scope, handler, idempotency_key, request_fingerprint, owner_token, acquired,
                     locked_until, created_at, updated_at, expires_at)
VALUES (?1, ?2, ?3, ?4, ?5, 'new', {now} + ?6, {now}, {now}, {now} + ?7)
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
          max(0, locked_until - {now}) AS lease_ms";

const RENEW: &str = "
UPDATE {table} SET locked_until = {now} + ?5, updated_at = {now}
WHERE scope = ?1 AND handler = ?2 AND idempotency_key = ?3 AND owner_token = ?4
  AND response_status IS NULL";

const COMPLETE: &str = "
UPDATE {table} SET response_status = ?5, response_headers = ?6, response_body = ?7,
    updated_at = {now}, expires_at = {now} + ?8
WHERE scope = ?1 AND handler = ?2 AND idempotency_key = ?3 AND owner_token = ?4";

const FAIL: &str = "
UPDATE {table} SET response_status = -1, response_headers = NULL, response_body = NULL,
    updated_at = {now}
WHERE scope = ?1 AND handler = ?2 AND idempotency_key = ?3 AND owner_token = ?4";

const RELEASE: &str = "
DELETE FROM {table}
WHERE scope = ?1 AND handler = ?2 AND idempotency_key = ?3 AND owner_token = ?4";

const GET: &str = "
SELECT request_fingerprint, response_status, response_headers, response_body,
       max(0, locked_until - {now}) AS lease_ms
FROM {table}
WHERE scope = ?1 AND handler = ?2 AND idempotency_key = ?3 AND expires_at > {now}";

const PURGE: &str = "
DELETE FROM {table}
WHERE rowid IN (SELECT rowid FROM {table} WHERE expires_at <= {now} LIMIT ?1)";

/// A [`IdempotencyStore`] in a SQLite database, for a service that runs as one process.
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
    sql: Arc<Statements>,
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
            sql: Arc::new(Statements::new(TableName::default())),
        }
    }

    /// Opens (creating if missing) the database at `url` (`sqlite://PATH`, or
    /// `sqlite::memory:`), in WAL mode with a 5 s busy timeout. An in-memory database lives
    /// on one connection that the pool keeps open.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(classify)?
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
        Ok(SqliteStore::new(pool.map_err(classify)?))
    }

    /// Uses another table (a plain identifier).
    pub fn with_table(mut self, table: &str) -> Result<Self, InvalidTableName> {
        self.sql = Arc::new(Statements::new(TableName::new(table)?));
        Ok(self)
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        self.sql.table.as_str()
    }

    /// The pool.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Creates the table and its index if missing, in one `BEGIN IMMEDIATE` transaction.
    /// Running it again, or from several processes at once, is harmless.
    pub async fn migrate(&self) -> StoreResult<()> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(classify)?;
        for migration in MIGRATIONS {
            sqlx::raw_sql(AssertSqlSafe(self.sql.table.fill(migration)))
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
        }
        tx.commit().await.map_err(classify)
    }
}

/// Maps an sqlx error on SQLite to a transient or permanent [`super::StoreError`].
fn classify(error: sqlx::Error) -> super::StoreError {
    sql::classify(error, sqlite_code_is_transient)
}

/// The statements for one table, built once; each method is exactly one statement.
struct Statements {
    table: TableName,
    claim: Arc<str>,
    renew: Arc<str>,
    complete: Arc<str>,
    fail: Arc<str>,
    release: Arc<str>,
    get: Arc<str>,
    purge: Arc<str>,
}

type SqliteQuery<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>;

impl Statements {
    fn new(table: TableName) -> Self {
        let fill = |template: &str| {
            let template = template.replace("{take}", TAKE).replace("{now}", NOW);
            Arc::<str>::from(table.fill(&template))
        };
        Statements {
            claim: fill(CLAIM),
            renew: fill(RENEW),
            complete: fill(COMPLETE),
            fail: fill(FAIL),
            release: fill(RELEASE),
            get: fill(GET),
            purge: fill(PURGE),
            table,
        }
    }

    /// A statement bound to a record's identity (`?1..?3`) and its claim's token (`?4`).
    fn owned<'q>(statement: &Arc<str>, claim: &'q Claim) -> SqliteQuery<'q> {
        sqlx::query(AssertSqlSafe(statement.clone()))
            .bind(claim.id.scope.as_str())
            .bind(claim.id.handler.as_ref())
            .bind(claim.id.key.as_str())
            .bind(claim.token.to_hex())
    }

    /// Claims, or returns the standing record. A claim issued again with the same token
    /// finds its own live claim and answers `Acquired` again.
    async fn claim<'c>(
        &self,
        db: impl SqliteExecutor<'c>,
        claim: &Claim,
    ) -> StoreResult<ClaimOutcome> {
        let row = sqlx::query(AssertSqlSafe(self.claim.clone()))
            .bind(claim.id.scope.as_str())
            .bind(claim.id.handler.as_ref())
            .bind(claim.id.key.as_str())
            .bind(claim.fingerprint.to_hex())
            .bind(claim.token.to_hex())
            .bind(millis(claim.lease))
            .bind(millis(claim.ttl))
            .fetch_one(db)
            .await
            .map_err(classify)?;
        if row.try_get::<bool, _>("won").map_err(classify)? {
            let acquired: String = row.try_get("acquired").map_err(classify)?;
            Ok(ClaimOutcome::Acquired(acquired_from_column(&acquired)?))
        } else {
            Ok(ClaimOutcome::Existing(columns(&row)?.into_record()?))
        }
    }

    async fn renew<'c>(&self, db: impl SqliteExecutor<'c>, claim: &Claim) -> StoreResult<bool> {
        let done = Self::owned(&self.renew, claim)
            .bind(millis(claim.lease))
            .execute(db)
            .await
            .map_err(classify)?;
        Ok(done.rows_affected() == 1)
    }

    async fn complete<'c>(
        &self,
        db: impl SqliteExecutor<'c>,
        claim: &Claim,
        response: &StoredResponse,
    ) -> StoreResult<bool> {
        let done = Self::owned(&self.complete, claim)
            .bind(i32::from(response.status))
            .bind(response.encode_headers())
            .bind(response.body.as_ref())
            .bind(millis(claim.ttl))
            .execute(db)
            .await
            .map_err(classify)?;
        Ok(done.rows_affected() == 1)
    }

    async fn fail<'c>(&self, db: impl SqliteExecutor<'c>, claim: &Claim) -> StoreResult<bool> {
        let done = Self::owned(&self.fail, claim)
            .execute(db)
            .await
            .map_err(classify)?;
        Ok(done.rows_affected() == 1)
    }

    async fn release<'c>(&self, db: impl SqliteExecutor<'c>, claim: &Claim) -> StoreResult<bool> {
        let done = Self::owned(&self.release, claim)
            .execute(db)
            .await
            .map_err(classify)?;
        Ok(done.rows_affected() == 1)
    }

    async fn get<'c>(
        &self,
        db: impl SqliteExecutor<'c>,
        id: &RecordId,
    ) -> StoreResult<Option<Record>> {
        let row = sqlx::query(AssertSqlSafe(self.get.clone()))
            .bind(id.scope.as_str())
            .bind(id.handler.as_ref())
            .bind(id.key.as_str())
            .fetch_optional(db)
            .await
            .map_err(classify)?;
        row.map(|row| columns(&row)?.into_record()).transpose()
    }

    async fn purge<'c>(&self, db: impl SqliteExecutor<'c>, limit: usize) -> StoreResult<u64> {
        let done = sqlx::query(AssertSqlSafe(self.purge.clone()))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .execute(db)
            .await
            .map_err(classify)?;
        Ok(done.rows_affected())
    }
}

fn columns(row: &SqliteRow) -> StoreResult<Columns> {
    let lease_ms: i64 = row.try_get("lease_ms").map_err(classify)?;
    Ok(Columns {
        fingerprint: row.try_get("request_fingerprint").map_err(classify)?,
        status: row.try_get("response_status").map_err(classify)?,
        headers: row.try_get("response_headers").map_err(classify)?,
        body: row.try_get("response_body").map_err(classify)?,
        lease_remaining: Duration::from_millis(u64::try_from(lease_ms).unwrap_or(0)),
    })
}

impl IdempotencyStore for SqliteStore {
    fn claim<'a>(&'a self, claim: &'a Claim) -> BoxFuture<'a, StoreResult<ClaimOutcome>> {
        Box::pin(self.sql.claim(&self.pool, claim))
    }

    fn renew<'a>(&'a self, claim: &'a Claim) -> BoxFuture<'a, StoreResult<bool>> {
        Box::pin(self.sql.renew(&self.pool, claim))
    }

    fn complete<'a>(
        &'a self,
        claim: &'a Claim,
        response: &'a StoredResponse,
    ) -> BoxFuture<'a, StoreResult<bool>> {
        Box::pin(self.sql.complete(&self.pool, claim, response))
    }

    fn fail<'a>(&'a self, claim: &'a Claim) -> BoxFuture<'a, StoreResult<bool>> {
        Box::pin(self.sql.fail(&self.pool, claim))
    }

    fn release<'a>(&'a self, claim: &'a Claim) -> BoxFuture<'a, StoreResult<bool>> {
        Box::pin(self.sql.release(&self.pool, claim))
    }

    fn get<'a>(&'a self, id: &'a RecordId) -> BoxFuture<'a, StoreResult<Option<Record>>> {
        Box::pin(self.sql.get(&self.pool, id))
    }

    fn purge(&self, limit: usize) -> BoxFuture<'_, StoreResult<u64>> {
        Box::pin(self.sql.purge(&self.pool, limit))
    }
}
