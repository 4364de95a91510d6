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

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, PgExecutor, Row};

use super::connections::Connections;
use super::sql::{
    self, Columns, InvalidTableName, TableName, acquired_from_column, micros,
    postgres_code_is_transient,
};
use super::{BoxFuture, IdempotencyStore, StoreError, StoreResult};
use crate::record::{Claim, ClaimOutcome, Record, RecordId, StoredResponse};

/// The migrations, in order; each is idempotent and runs on every [`PostgresStore::migrate`].
const MIGRATIONS: &[&str] = &[include_str!(
    "../../migrations/postgres/0001_idempotency_keys.sql"
)];

/// How many times a claim statement runs in the READ COMMITTED corners (see the module
/// doc). A second run sees the committed row; a third covers a release in between.
pub const CLAIM_ATTEMPTS: usize = 3;

const CLAIM: &str = "
WITH standing AS (
    SELECT request_fingerprint, response_status, response_headers, response_body, locked_until,
           COALESCE(expires_at <= now()
             OR (request_fingerprint = $4
                 AND (response_status = -1
                      OR (response_status IS NULL AND locked_until <= now()))),
             false) AS takeable
    FROM {table}
    WHERE scope = $1 AND handler = $2 AND idempotency_key = $3
), claimed AS (
    INSERT INTO {table} AS t (scope, handler, idempotency_key, request_fingerprint, owner_token,
                              acquired, locked_until, created_at, updated_at, expires_at)
    SELECT $1, $2, $3, $4, $5, 'new', now() + $6::bigint * interval '1 microsecond', now(),
           now(), now() + $7::bigint * interval '1 microsecond'
    WHERE NOT EXISTS (SELECT 1 FROM standing WHERE NOT takeable)
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
)
SELECT acquired, NULL::text AS request_fingerprint, NULL::integer AS response_status,
       NULL::text AS response_headers, NULL::bytea AS response_body, 0::bigint AS lease_us,
       false AS stale
FROM claimed
UNION ALL
SELECT NULL, request_fingerprint, response_status, response_headers, response_body,
       GREATEST(0, EXTRACT(EPOCH FROM locked_until - now()) * 1000000)::bigint, takeable
FROM standing
WHERE NOT EXISTS (SELECT 1 FROM claimed)";

const RENEW: &str = "
UPDATE {table} SET locked_until = now() + $5::bigint * interval '1 microsecond', updated_at = now()
WHERE scope = $1 AND handler = $2 AND idempotency_key = $3 AND owner_token = $4
  AND response_status IS NULL";

const COMPLETE: &str = "
UPDATE {table} SET response_status = $5, response_headers = $6, response_body = $7,
    updated_at = now(), expires_at = now() + $8::bigint * interval '1 microsecond'
WHERE scope = $1 AND handler = $2 AND idempotency_key = $3 AND owner_token = $4";

const FAIL: &str = "
UPDATE {table} SET response_status = -1, response_headers = NULL, response_body = NULL,
    updated_at = now()
WHERE scope = $1 AND handler = $2 AND idempotency_key = $3 AND owner_token = $4";

const RELEASE: &str = "
DELETE FROM {table}
WHERE scope = $1 AND handler = $2 AND idempotency_key = $3 AND owner_token = $4";

const GET: &str = "
SELECT request_fingerprint, response_status, response_headers, response_body,
       GREATEST(0, EXTRACT(EPOCH FROM locked_until - now()) * 1000000)::bigint AS lease_us
FROM {table}
WHERE scope = $1 AND handler = $2 AND idempotency_key = $3 AND expires_at > now()";

const PURGE: &str = "
DELETE FROM {table}
WHERE ctid = ANY(ARRAY(SELECT ctid FROM {table} WHERE expires_at <= now()
                       LIMIT $1 FOR UPDATE SKIP LOCKED))
  AND expires_at <= now()";

/// A [`IdempotencyStore`] on Postgres, shared by every instance of a service.
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
/// own, one made by [`PostgresStore::new`] on the pool it was given. A transactional mode (not built yet) will
/// run the same methods on one transaction's connection, so that the claim, the handler's own
/// writes and the completion commit together, without a second copy of the SQL.
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// Where the store's statements run when it has connections of its own (`connect`).
    own: Option<Arc<Connections>>,
    sql: Arc<Statements>,
}

/// Runs one statement, `$db => $statement`, on the store's own connections when it has
/// them, else on its pool.
macro_rules! on_store {
    ($store:expr, $db:ident => $statement:expr) => {
        match &$store.own {
            Some(own) => {
                let mut lease = own.lease().await?;
                let $db = lease.connection();
                let result = $statement.await;
                lease.settle(result)
            }
            None => {
                let $db = &$store.pool;
                $statement.await
            }
        }
    };
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("table", &self.sql.table)
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
            sql: Arc::new(Statements::new(TableName::default())),
        }
    }

    /// Connects to `url`, checking that the server answers. The store's statements run on
    /// connections of its own, at most [`PostgresStore::CONNECTIONS`], each used for one
    /// statement at a time and handed on without a ping; a connection whose statement failed
    /// or was interrupted is closed, and one idle for 30 seconds is pinged before its next
    /// statement. [`PostgresStore::pool`] is a pool on the same database, of as many
    /// connections, for [`PostgresStore::migrate`] and the application's own queries.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(Self::CONNECTIONS)
            .acquire_timeout(Duration::from_secs(5))
            .test_before_acquire(false)
            .connect(url)
            .await
            .map_err(classify)?;
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

    /// Uses another table (a plain identifier; set the schema with the pool's `search_path`).
    pub fn with_table(mut self, table: &str) -> Result<Self, InvalidTableName> {
        self.sql = Arc::new(Statements::new(TableName::new(table)?));
        Ok(self)
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
        let mut tx = self.pool.begin().await.map_err(classify)?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
            .bind(format!("idem.migrate.{}", self.table()))
            .execute(&mut *tx)
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

    async fn claim_attempts(&self, claim: &Claim) -> StoreResult<ClaimOutcome> {
        let mut stale = None;
        for _ in 0..CLAIM_ATTEMPTS {
            match on_store!(self, db => self.sql.claim(db, claim))? {
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

/// Maps an sqlx error on Postgres to a transient or permanent [`StoreError`].
pub(super) fn classify(error: sqlx::Error) -> StoreError {
    sql::classify(error, postgres_code_is_transient)
}

/// The statements for one table, built once. Each method is exactly one statement on any
/// executor: the pool, a pooled connection or a transaction.
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

/// What one run of the claim statement found.
enum Claimed {
    /// Acquired, or a standing record as it is now.
    Fresh(ClaimOutcome),
    /// A record this claim could have taken, as an old snapshot saw it: someone else took it.
    Stale(Record),
    /// A row too new for the statement's snapshot blocked the insert.
    Invisible,
}

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

impl Statements {
    fn new(table: TableName) -> Self {
        let fill = |template: &str| Arc::<str>::from(table.fill(template));
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

    /// A statement bound to a record's identity (`$1..$3`) and, with `claim`, its token (`$4`).
    fn owned<'q>(statement: &Arc<str>, claim: &'q Claim) -> PgQuery<'q> {
        sqlx::query(AssertSqlSafe(statement.clone()))
            .bind(claim.id.scope.as_str())
            .bind(claim.id.handler.as_ref())
            .bind(claim.id.key.as_str())
            .bind(claim.token.to_hex())
    }

    /// Claims, or returns the standing record, or meets a READ COMMITTED corner.
    async fn claim<'c>(&self, db: impl PgExecutor<'c>, claim: &Claim) -> StoreResult<Claimed> {
        let row = sqlx::query(AssertSqlSafe(self.claim.clone()))
            .bind(claim.id.scope.as_str())
            .bind(claim.id.handler.as_ref())
            .bind(claim.id.key.as_str())
            .bind(claim.fingerprint.to_hex())
            .bind(claim.token.to_hex())
            .bind(micros(claim.lease))
            .bind(micros(claim.ttl))
            .fetch_optional(db)
            .await
            .map_err(classify)?;
        let Some(row) = row else {
            return Ok(Claimed::Invisible);
        };
        if let Some(acquired) = row
            .try_get::<Option<String>, _>("acquired")
            .map_err(classify)?
        {
            let acquired = acquired_from_column(&acquired)?;
            return Ok(Claimed::Fresh(ClaimOutcome::Acquired(acquired)));
        }
        let record = columns(&row)?.into_record()?;
        if row.try_get::<bool, _>("stale").map_err(classify)? {
            Ok(Claimed::Stale(record))
        } else {
            Ok(Claimed::Fresh(ClaimOutcome::Existing(record)))
        }
    }

    async fn renew<'c>(&self, db: impl PgExecutor<'c>, claim: &Claim) -> StoreResult<bool> {
        let done = Self::owned(&self.renew, claim)
            .bind(micros(claim.lease))
            .execute(db)
            .await
            .map_err(classify)?;
        Ok(done.rows_affected() == 1)
    }

    async fn complete<'c>(
        &self,
        db: impl PgExecutor<'c>,
        claim: &Claim,
        response: &StoredResponse,
    ) -> StoreResult<bool> {
        let done = Self::owned(&self.complete, claim)
            .bind(i32::from(response.status))
            .bind(response.encode_headers())
            .bind(response.body.as_ref())
            .bind(micros(claim.ttl))
            .execute(db)
            .await
            .map_err(classify)?;
        Ok(done.rows_affected() == 1)
    }

    async fn fail<'c>(&self, db: impl PgExecutor<'c>, claim: &Claim) -> StoreResult<bool> {
        let done = Self::owned(&self.fail, claim)
            .execute(db)
            .await
            .map_err(classify)?;
        Ok(done.rows_affected() == 1)
    }

    async fn release<'c>(&self, db: impl PgExecutor<'c>, claim: &Claim) -> StoreResult<bool> {
        let done = Self::owned(&self.release, claim)
            .execute(db)
            .await
            .map_err(classify)?;
        Ok(done.rows_affected() == 1)
    }

    async fn get<'c>(&self, db: impl PgExecutor<'c>, id: &RecordId) -> StoreResult<Option<Record>> {
        let row = sqlx::query(AssertSqlSafe(self.get.clone()))
            .bind(id.scope.as_str())
            .bind(id.handler.as_ref())
            .bind(id.key.as_str())
            .fetch_optional(db)
            .await
            .map_err(classify)?;
        row.map(|row| columns(&row)?.into_record()).transpose()
    }

    async fn purge<'c>(&self, db: impl PgExecutor<'c>, limit: usize) -> StoreResult<u64> {
        let done = sqlx::query(AssertSqlSafe(self.purge.clone()))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .execute(db)
            .await
            .map_err(classify)?;
        Ok(done.rows_affected())
    }
}

fn columns(row: &PgRow) -> StoreResult<Columns> {
    let lease_us: i64 = row.try_get("lease_us").map_err(classify)?;
    Ok(Columns {
        fingerprint: row.try_get("request_fingerprint").map_err(classify)?,
        status: row.try_get("response_status").map_err(classify)?,
        headers: row.try_get("response_headers").map_err(classify)?,
        body: row.try_get("response_body").map_err(classify)?,
        lease_remaining: Duration::from_micros(u64::try_from(lease_us).unwrap_or(0)),
    })
}

impl IdempotencyStore for PostgresStore {
    fn claim<'a>(&'a self, claim: &'a Claim) -> BoxFuture<'a, StoreResult<ClaimOutcome>> {
        Box::pin(self.claim_attempts(claim))
    }

    fn renew<'a>(&'a self, claim: &'a Claim) -> BoxFuture<'a, StoreResult<bool>> {
        Box::pin(async move { on_store!(self, db => self.sql.renew(db, claim)) })
    }

    fn complete<'a>(
        &'a self,
        claim: &'a Claim,
        response: &'a StoredResponse,
    ) -> BoxFuture<'a, StoreResult<bool>> {
        Box::pin(async move { on_store!(self, db => self.sql.complete(db, claim, response)) })
    }

    fn fail<'a>(&'a self, claim: &'a Claim) -> BoxFuture<'a, StoreResult<bool>> {
        Box::pin(async move { on_store!(self, db => self.sql.fail(db, claim)) })
    }

    fn release<'a>(&'a self, claim: &'a Claim) -> BoxFuture<'a, StoreResult<bool>> {
        Box::pin(async move { on_store!(self, db => self.sql.release(db, claim)) })
    }

    fn get<'a>(&'a self, id: &'a RecordId) -> BoxFuture<'a, StoreResult<Option<Record>>> {
        Box::pin(async move { on_store!(self, db => self.sql.get(db, id)) })
    }

    fn purge(&self, limit: usize) -> BoxFuture<'_, StoreResult<u64>> {
        Box::pin(async move { on_store!(self, db => self.sql.purge(db, limit)) })
    }
}
