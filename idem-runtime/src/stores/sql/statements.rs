//! The statements both SQL stores run, bound and read once for either database, and the
//! [`IdempotencyStore`] every SQL store gets from them.
//!
//! A backend brings its [`Dialect`] (the statement texts, its clock's unit, its error codes)
//! and implements [`SqlStore`]: where a statement runs, and its own claim. Everything else,
//! one statement and one round trip per step, is here.

use std::any::Any;
use std::future::Future;
use std::marker::PhantomData;
use std::ops::DerefMut;
use std::sync::Arc;
use std::time::Duration;

use sqlx::{
    AssertSqlSafe, ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Row, SqlSafeStr,
    Type,
};

use super::values::{Param, Ready, Values};
use super::{Columns, InspectColumns, TableName, payload_columns};
use crate::engine::inspect::{Inspection, Stats};
use crate::engine::record::{Claim, ClaimOutcome, Payload, Record, RecordId};
use crate::engine::store::{
    Announcements, BoxFuture, IdempotencyStore, Isolation, Ownership, Reply, StoreError,
    StoreResult, StoreTransaction,
};

/// What differs between the SQL databases in the shared statements.
///
/// The templates use `{table}` for the table; `CLAIM` binds the record's identity, the
/// request's fingerprint and the claim's token, lease and ttl, in that order. `CLAIM` and `GET`
/// name the lease left `LEASE_LEFT`, in the unit of [`Dialect::duration`]; `INSPECT` names it
/// so too, and its other times `record_age`, `since_update` and `expires_in`, in that unit.
pub trait Dialect: Database {
    /// Claims or returns the standing record (each backend reads its answer itself).
    const CLAIM: &'static str;
    /// `CLAIM` for a store with a quota per scope, bound to it as an eighth parameter: a key
    /// that would add a live record to a scope holding that many is not taken
    /// (docs/contract.md, "Quotas").
    const CLAIM_WITHIN_QUOTA: &'static str;

    /// Extends the lease of a live claim.
    const RENEW: &'static str;
    /// Stores the response.
    const COMPLETE: &'static str;
    /// Marks the record FAILED_STORAGE.
    const FAIL: &'static str;
    /// Deletes the claimed record while it is in progress.
    const RELEASE: &'static str;
    /// Reads a live record.
    const GET: &'static str;
    /// Deletes a batch of expired records.
    const PURGE: &'static str;
    /// Reads what an operator may see of a live record: state, sizes and times, with the
    /// stored headers (only to count them) but never the body.
    const INSPECT: &'static str;
    /// Deletes a record by identity, whatever its state.
    const EVICT: &'static str;
    /// Counts the table's records: `in_progress`, `completed`, `failed_storage` (live) and
    /// `expired`, one row.
    const STATS: &'static str;
    /// The column in which `CLAIM` and `GET` return the lease left.
    const LEASE_LEFT: &'static str;

    /// The statement that opens a transaction at `isolation`; `None` for the database's
    /// plain `BEGIN`.
    fn begin(isolation: Isolation) -> Option<&'static str>;

    /// The statement text of a template for `table` (SQLite also writes in its clock there).
    fn fill(table: &TableName, template: &str) -> String {
        table.fill(template)
    }

    /// A duration as the number the statements add to the database's clock.
    fn duration(duration: Duration) -> i64;

    /// `template` with each `$N` replaced by `params[N - 1]` written as a literal, for
    /// [`Values::InText`]. Only Postgres writes values into the text; any other database
    /// refuses.
    fn written_in(template: &str, params: &[Param<'_>]) -> StoreResult<String> {
        let _ = (template, params);
        Err(StoreError::permanent(
            "this database takes its values bound, never written into the statement",
        ))
    }

    /// The lease left, from the number in `LEASE_LEFT` (never negative).
    fn lease_left(number: u64) -> Duration;

    /// A duration from a number of the statements' unit (a negative one is zero).
    fn span(number: i64) -> Duration {
        Self::lease_left(u64::try_from(number).unwrap_or(0))
    }

    /// Whether an error code the database returned names a failure that may pass on retry.
    fn code_is_transient(code: &str) -> bool;

    /// How many rows a statement changed.
    fn rows_affected(done: &Self::QueryResult) -> u64;

    /// Maps an sqlx error to a transient or permanent [`StoreError`].
    fn classify(error: sqlx::Error) -> StoreError {
        super::classify(error, Self::code_is_transient)
    }
}

/// The statements for one table, built once. Each method is exactly one statement on any
/// executor of the database: its pool, one connection or, later, a transaction.
pub struct Statements<DB> {
    pub(crate) table: TableName,
    /// How the statements' values reach the database.
    values: Values,
    /// The most live records one scope may hold, when the store has a quota.
    quota: Option<u64>,
    claim: Arc<str>,
    renew: Arc<str>,
    complete: Arc<str>,
    /// `complete`, in a transactional run's transaction: only while the claim is in progress.
    complete_in_progress: Arc<str>,
    fail: Arc<str>,
    release: Arc<str>,
    get: Arc<str>,
    purge: Arc<str>,
    inspect: Arc<str>,
    evict: Arc<str>,
    stats: Arc<str>,
    database: PhantomData<fn() -> DB>,
}

impl<DB> Statements<DB>
where
    DB: Dialect,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB> + ColumnIndex<DB::Row>,
    for<'a> Option<&'a str>: Encode<'a, DB>,
    for<'a> &'a [u8]: Encode<'a, DB> + Type<DB>,
    String: for<'a> Decode<'a, DB> + Type<DB>,
    i64: for<'a> Encode<'a, DB> + for<'a> Decode<'a, DB> + Type<DB>,
    i32: for<'a> Encode<'a, DB> + for<'a> Decode<'a, DB> + Type<DB>,
    Vec<u8>: for<'a> Decode<'a, DB> + Type<DB>,
{
    /// The statements for `table`, with a quota of live records per scope or none, sending
    /// their values as `values` says.
    pub(crate) fn new(table: TableName, quota: Option<u64>, values: Values) -> Self {
        let fill = |template: &str| Arc::<str>::from(DB::fill(&table, template));
        let quota = quota.map(|records| records.max(1));
        Statements {
            values,
            quota,
            claim: match quota {
                None => fill(DB::CLAIM),
                Some(_) => fill(DB::CLAIM_WITHIN_QUOTA),
            },
            renew: fill(DB::RENEW),
            complete: fill(DB::COMPLETE),
            complete_in_progress: fill(&format!(
                "{} AND response_status IS NULL",
                DB::COMPLETE.trim_end()
            )),
            fail: fill(DB::FAIL),
            release: fill(DB::RELEASE),
            get: fill(DB::GET),
            purge: fill(DB::PURGE),
            inspect: fill(DB::INSPECT),
            evict: fill(DB::EVICT),
            stats: fill(DB::STATS),
            table,
            database: PhantomData,
        }
    }

    /// `sql` with `params` as its parameters `$1`, `$2`, ... (`?1`, ... on SQLite), ready to
    /// run: bound, or written into the text, as the statements' [`Values`] say.
    pub(crate) fn ready(
        &self,
        sql: impl SqlSafeStr,
        params: &[Param<'_>],
    ) -> StoreResult<Ready<DB>> {
        let sql = sql.into_sql_str();
        match self.values {
            Values::Bound => Ready::bound(sql, params),
            Values::InText => Ok(Ready::text(DB::written_in(sql.as_str(), params)?)),
        }
    }

    /// How the statements' values reach the database.
    #[cfg(feature = "postgres")]
    pub(crate) fn values(&self) -> Values {
        self.values
    }

    /// One of the statements, ready with a record's identity (first three parameters) and
    /// `more` after it, gathered in one vector.
    fn identified<'p>(
        &self,
        statement: &Arc<str>,
        id: &'p RecordId,
        more: impl IntoIterator<Item = Param<'p>>,
    ) -> StoreResult<Ready<DB>> {
        let identity = [
            Param::Text(id.scope.as_str()),
            Param::Text(id.handler.as_ref()),
            Param::Text(id.key.as_str()),
        ];
        let params: Vec<Param<'p>> = identity.into_iter().chain(more).collect();
        self.ready(AssertSqlSafe(statement.clone()), &params)
    }

    /// The claim statement (within the quota, when the store has one), ready; the backend
    /// runs it and reads its answer.
    pub(crate) fn claim(&self, claim: &Claim) -> StoreResult<Ready<DB>> {
        let (fingerprint, token) = (claim.fingerprint.to_hex(), claim.token.to_hex());
        let taken = [
            Param::Text(&fingerprint),
            Param::Text(&token),
            Param::BigInt(DB::duration(claim.lease)),
            Param::BigInt(DB::duration(claim.ttl)),
        ];
        // The claim within a quota takes the quota as its eighth parameter.
        let quota = self.quota.map(Param::count);
        self.identified(&self.claim, &claim.id, taken.into_iter().chain(quota))
    }

    /// The most live records one scope may hold, when the store has a quota.
    pub(crate) fn quota(&self) -> Option<u64> {
        self.quota
    }

    /// Runs a statement that acts on a claimed record (its identity and token, then `more`):
    /// whether it still owned the record.
    async fn on_owned<'c>(
        &self,
        statement: &Arc<str>,
        claim: &Claim,
        more: &[Param<'_>],
        db: impl Executor<'c, Database = DB>,
    ) -> StoreResult<Ownership> {
        let token = claim.token.to_hex();
        let owned = std::iter::once(Param::Text(&token)).chain(more.iter().copied());
        let ready = self.identified(statement, &claim.id, owned)?;
        let done = db.execute(ready).await.map_err(DB::classify)?;
        Ok(if DB::rows_affected(&done) == 1 {
            Ownership::Held
        } else {
            Ownership::Lost
        })
    }

    pub(crate) async fn renew<'c>(
        &self,
        db: impl Executor<'c, Database = DB>,
        claim: &Claim,
    ) -> StoreResult<Ownership> {
        let lease = [Param::BigInt(DB::duration(claim.lease))];
        self.on_owned(&self.renew, claim, &lease, db).await
    }

    pub(crate) async fn complete<'c>(
        &self,
        db: impl Executor<'c, Database = DB>,
        claim: &Claim,
        payload: &Payload,
    ) -> StoreResult<Ownership> {
        self.complete_with(&self.complete, db, claim, payload).await
    }

    /// Stores the payload in a transactional run's transaction, if the claim is still in
    /// progress and its own.
    pub(crate) async fn complete_in_progress<'c>(
        &self,
        db: impl Executor<'c, Database = DB>,
        claim: &Claim,
        payload: &Payload,
    ) -> StoreResult<Ownership> {
        self.complete_with(&self.complete_in_progress, db, claim, payload)
            .await
    }

    async fn complete_with<'c>(
        &self,
        statement: &Arc<str>,
        db: impl Executor<'c, Database = DB>,
        claim: &Claim,
        payload: &Payload,
    ) -> StoreResult<Ownership> {
        let (status, headers, body) = payload_columns(payload);
        let response = [
            Param::Int(status),
            Param::NullableText(headers.as_deref()),
            Param::Bytes(body),
            Param::BigInt(DB::duration(claim.ttl)),
        ];
        self.on_owned(statement, claim, &response, db).await
    }

    pub(crate) async fn fail<'c>(
        &self,
        db: impl Executor<'c, Database = DB>,
        claim: &Claim,
    ) -> StoreResult<Ownership> {
        self.on_owned(&self.fail, claim, &[], db).await
    }

    pub(crate) async fn release<'c>(
        &self,
        db: impl Executor<'c, Database = DB>,
        claim: &Claim,
    ) -> StoreResult<Ownership> {
        self.on_owned(&self.release, claim, &[], db).await
    }

    pub(crate) async fn get<'c>(
        &self,
        db: impl Executor<'c, Database = DB>,
        id: &RecordId,
    ) -> StoreResult<Option<Record>> {
        let ready = self.identified(&self.get, id, [])?;
        let row = db.fetch_optional(ready).await.map_err(DB::classify)?;
        row.map(|row| Self::record(&row)).transpose()
    }

    pub(crate) async fn purge<'c>(
        &self,
        db: impl Executor<'c, Database = DB>,
        limit: usize,
    ) -> StoreResult<u64> {
        let limit = [Param::count(limit)];
        let ready = self.ready(AssertSqlSafe(self.purge.clone()), &limit)?;
        let done = db.execute(ready).await.map_err(DB::classify)?;
        Ok(DB::rows_affected(&done))
    }

    pub(crate) async fn inspect<'c>(
        &self,
        db: impl Executor<'c, Database = DB>,
        id: &RecordId,
    ) -> StoreResult<Option<Inspection>> {
        let ready = self.identified(&self.inspect, id, [])?;
        let row = db.fetch_optional(ready).await.map_err(DB::classify)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let span = |column: &str| -> StoreResult<Duration> {
            let number: i64 = row.try_get(column).map_err(DB::classify)?;
            Ok(DB::span(number))
        };
        let body_bytes: Option<i64> = row.try_get("body_bytes").map_err(DB::classify)?;
        InspectColumns {
            status: row.try_get("response_status").map_err(DB::classify)?,
            headers: row.try_get("response_headers").map_err(DB::classify)?,
            body_bytes: body_bytes
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(0),
            age: span("record_age")?,
            since_update: span("since_update")?,
            expires_in: span("expires_in")?,
            lease_remaining: span(DB::LEASE_LEFT)?,
        }
        .into_inspection()
        .map(Some)
    }

    pub(crate) async fn evict<'c>(
        &self,
        db: impl Executor<'c, Database = DB>,
        id: &RecordId,
    ) -> StoreResult<bool> {
        let ready = self.identified(&self.evict, id, [])?;
        let done = db.execute(ready).await.map_err(DB::classify)?;
        Ok(DB::rows_affected(&done) > 0)
    }

    pub(crate) async fn stats<'c>(
        &self,
        db: impl Executor<'c, Database = DB>,
    ) -> StoreResult<Stats> {
        let ready = self.ready(AssertSqlSafe(self.stats.clone()), &[])?;
        let row = db.fetch_one(ready).await.map_err(DB::classify)?;
        let count = |column: &str| -> StoreResult<u64> {
            let number: i64 = row.try_get(column).map_err(DB::classify)?;
            Ok(u64::try_from(number).unwrap_or(0))
        };
        Ok(Stats {
            in_progress: count("in_progress")?,
            completed: count("completed")?,
            failed_storage: count("failed_storage")?,
            expired: count("expired")?,
        })
    }

    /// The record in a row of `CLAIM` or `GET`; a row that does not decode is a permanent
    /// error.
    pub(crate) fn record(row: &DB::Row) -> StoreResult<Record> {
        let lease_left: i64 = row.try_get(DB::LEASE_LEFT).map_err(DB::classify)?;
        Columns {
            fingerprint: row.try_get("request_fingerprint").map_err(DB::classify)?,
            status: row.try_get("response_status").map_err(DB::classify)?,
            headers: row.try_get("response_headers").map_err(DB::classify)?,
            body: row.try_get("response_body").map_err(DB::classify)?,
            lease_remaining: DB::lease_left(u64::try_from(lease_left).unwrap_or(0)),
        }
        .into_record()
    }
}

/// A SQL store: its statements, where they run, and its claim. Every SQL store is an
/// [`IdempotencyStore`] through this trait.
pub trait SqlStore: Send + Sync + 'static {
    /// The database.
    type Db: Dialect;
    /// A connection for one statement.
    type Connection<'a>: DerefMut<Target = <Self::Db as Database>::Connection> + Send
    where
        Self: 'a;

    /// The store's statements.
    fn statements(&self) -> &Arc<Statements<Self::Db>>;

    /// A connection for the next statement.
    fn connection(&self) -> impl Future<Output = StoreResult<Self::Connection<'_>>> + Send;

    /// Ends a statement's use of `connection` with its result (a backend may close a
    /// connection whose statement failed).
    fn settle<T>(&self, connection: Self::Connection<'_>, result: StoreResult<T>)
    -> StoreResult<T>;

    /// The pool a transactional run's transaction is opened on.
    fn pool(&self) -> &sqlx::Pool<Self::Db>;

    /// Claims, or returns the standing record, as [`IdempotencyStore::claim`].
    fn claim_key<'a>(
        &'a self,
        claim: &'a Claim,
    ) -> impl Future<Output = StoreResult<ClaimOutcome>> + Send + 'a;

    /// As [`IdempotencyStore::announce`]: nothing, unless the database can tell other
    /// processes.
    fn announce<'a>(&'a self, id: &'a RecordId) -> Reply<'a, ()> {
        let _ = id;
        Reply::Ready(Ok(()))
    }

    /// As [`IdempotencyStore::listen`]: `None`, unless the database can tell other processes.
    fn listen(&self) -> Option<Reply<'_, Announcements>> {
        None
    }
}

/// Runs one statement, `$db => $statement`, on a connection of `$store`, then settles it.
macro_rules! on_connection {
    ($store:expr, $db:ident => $statement:expr) => {{
        let mut connection = $store.connection().await?;
        let $db = &mut *connection;
        let result = $statement.await;
        $store.settle(connection, result)
    }};
}
pub(crate) use on_connection;

impl<S, DB> IdempotencyStore for S
where
    S: SqlStore<Db = DB>,
    DB: Dialect,
    Statements<DB>: Finish<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB> + ColumnIndex<DB::Row>,
    for<'a> Option<&'a str>: Encode<'a, DB>,
    for<'a> &'a [u8]: Encode<'a, DB> + Type<DB>,
    String: for<'a> Decode<'a, DB> + Type<DB>,
    i64: for<'a> Encode<'a, DB> + for<'a> Decode<'a, DB> + Type<DB>,
    i32: for<'a> Encode<'a, DB> + for<'a> Decode<'a, DB> + Type<DB>,
    Vec<u8>: for<'a> Decode<'a, DB> + Type<DB>,
{
    fn claim<'a>(&'a self, claim: &'a Claim) -> Reply<'a, ClaimOutcome> {
        Reply::pending(self.claim_key(claim))
    }

    fn renew<'a>(&'a self, claim: &'a Claim) -> Reply<'a, Ownership> {
        Reply::pending(
            async move { on_connection!(self, db => self.statements().renew(db, claim)) },
        )
    }

    fn complete<'a>(&'a self, claim: &'a Claim, payload: &'a Arc<Payload>) -> Reply<'a, Ownership> {
        Reply::pending(async move {
            on_connection!(self, db => self.statements().complete(db, claim, payload))
        })
    }

    fn fail<'a>(&'a self, claim: &'a Claim) -> Reply<'a, Ownership> {
        Reply::pending(async move { on_connection!(self, db => self.statements().fail(db, claim)) })
    }

    fn release<'a>(&'a self, claim: &'a Claim) -> Reply<'a, Ownership> {
        Reply::pending(
            async move { on_connection!(self, db => self.statements().release(db, claim)) },
        )
    }

    fn get<'a>(&'a self, id: &'a RecordId) -> Reply<'a, Option<Record>> {
        Reply::pending(async move { on_connection!(self, db => self.statements().get(db, id)) })
    }

    fn purge(&self, limit: usize) -> Reply<'_, u64> {
        Reply::pending(
            async move { on_connection!(self, db => self.statements().purge(db, limit)) },
        )
    }

    fn inspect<'a>(&'a self, id: &'a RecordId) -> Reply<'a, Option<Inspection>> {
        Reply::pending(async move { on_connection!(self, db => self.statements().inspect(db, id)) })
    }

    fn evict<'a>(&'a self, id: &'a RecordId) -> Reply<'a, bool> {
        Reply::pending(async move { on_connection!(self, db => self.statements().evict(db, id)) })
    }

    fn stats(&self) -> Reply<'_, Stats> {
        Reply::pending(async move { on_connection!(self, db => self.statements().stats(db)) })
    }

    fn begin(&self, isolation: Isolation) -> Option<Reply<'_, Box<dyn StoreTransaction>>> {
        Some(Reply::pending(async move {
            let pool = self.pool();
            let transaction = match DB::begin(isolation) {
                Some(statement) => pool.begin_with(statement).await,
                None => pool.begin().await,
            }
            .map_err(DB::classify)?;
            let statements: Arc<dyn Finish<DB>> = self.statements().clone();
            Ok(Box::new(SqlTransaction {
                transaction,
                statements,
            }) as Box<dyn StoreTransaction>)
        }))
    }

    fn announce<'a>(&'a self, id: &'a RecordId) -> Reply<'a, ()> {
        SqlStore::announce(self, id)
    }

    fn listen(&self) -> Option<Reply<'_, Announcements>> {
        SqlStore::listen(self)
    }
}

/// The one statement a transactional run's transaction needs of its store's, without the
/// store's bounds on the database's types.
pub(crate) trait Finish<DB: Database>: Send + Sync + 'static {
    /// Stores the payload on `connection` while the claim is in progress and its own.
    fn complete_in_progress<'a>(
        &'a self,
        connection: &'a mut DB::Connection,
        claim: &'a Claim,
        payload: &'a Payload,
    ) -> BoxFuture<'a, StoreResult<Ownership>>;
}

impl<DB> Finish<DB> for Statements<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB> + ColumnIndex<DB::Row>,
    for<'a> Option<&'a str>: Encode<'a, DB>,
    for<'a> &'a [u8]: Encode<'a, DB> + Type<DB>,
    String: for<'a> Decode<'a, DB> + Type<DB>,
    i64: for<'a> Encode<'a, DB> + for<'a> Decode<'a, DB> + Type<DB>,
    i32: for<'a> Encode<'a, DB> + for<'a> Decode<'a, DB> + Type<DB>,
    Vec<u8>: for<'a> Decode<'a, DB> + Type<DB>,
{
    fn complete_in_progress<'a>(
        &'a self,
        connection: &'a mut DB::Connection,
        claim: &'a Claim,
        payload: &'a Payload,
    ) -> BoxFuture<'a, StoreResult<Ownership>> {
        Box::pin(Statements::complete_in_progress(
            self, connection, claim, payload,
        ))
    }
}

/// A transactional run's transaction on a SQL store: what the executor holds, and what the
/// work's [`Tx`](super::tx::Tx) borrows.
pub(crate) struct SqlTransaction<DB: Database> {
    pub(crate) transaction: sqlx::Transaction<'static, DB>,
    statements: Arc<dyn Finish<DB>>,
}

impl<DB: Database> StoreTransaction for SqlTransaction<DB>
where
    DB: Dialect,
{
    fn commit<'a>(
        self: Box<Self>,
        claim: &'a Claim,
        payload: &'a Arc<Payload>,
    ) -> BoxFuture<'a, StoreResult<Ownership>> {
        Box::pin(async move {
            let SqlTransaction {
                mut transaction,
                statements,
            } = *self;
            let owned = statements
                .complete_in_progress(&mut transaction, claim, payload)
                .await?;
            match owned {
                Ownership::Held => transaction.commit().await.map_err(DB::classify)?,
                Ownership::Lost => transaction.rollback().await.map_err(DB::classify)?,
            }
            Ok(owned)
        })
    }

    fn rollback(self: Box<Self>) -> BoxFuture<'static, StoreResult<()>> {
        Box::pin(async move { self.transaction.rollback().await.map_err(DB::classify) })
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        self
    }
}
