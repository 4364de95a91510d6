//! How a statement's values reach the database: bound to a named prepared statement (the
//! default), or written into its text as literals for a transaction-mode pooler; either way
//! one [`Ready`] statement that sqlx runs in one round trip.

use sqlx::error::BoxDynError;
use sqlx::{Arguments, AssertSqlSafe, Database, Encode, Execute, SqlSafeStr, SqlStr, Type};

use crate::engine::store::{StoreError, StoreResult};

/// How a statement's values reach the database.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Values {
    /// Bound to a named prepared statement, parsed and planned once per connection.
    #[default]
    Bound,
    /// Written into the statement's text as literals and sent as one simple-protocol query:
    /// one round trip that leaves nothing on the server connection, which a transaction-mode
    /// pooler needs, at the price of parsing and planning every time (README, "Behind a
    /// connection pooler").
    #[cfg_attr(
        not(feature = "postgres"),
        expect(dead_code, reason = "only Postgres sits behind a pooler")
    )]
    InText,
}

/// One value of a statement, before it is bound or written into the text.
#[derive(Debug, Clone, Copy)]
pub enum Param<'q> {
    /// Text.
    Text(&'q str),
    /// Text or NULL.
    NullableText(Option<&'q str>),
    /// Bytes.
    Bytes(&'q [u8]),
    /// A 32-bit integer.
    Int(i32),
    /// A 64-bit integer.
    BigInt(i64),
}

impl Param<'_> {
    /// A count (a quota, a limit) as the 64-bit integer the databases take; one beyond
    /// `i64::MAX` is more than any table holds, so it saturates there.
    pub(crate) fn count(count: impl TryInto<i64>) -> Self {
        Param::BigInt(count.try_into().unwrap_or(i64::MAX))
    }

    fn bind<A>(self, arguments: &mut A) -> Result<(), BoxDynError>
    where
        A: Arguments,
        for<'a> &'a str: Encode<'a, A::Database> + Type<A::Database>,
        for<'a> Option<&'a str>: Encode<'a, A::Database>,
        for<'a> &'a [u8]: Encode<'a, A::Database> + Type<A::Database>,
        i64: for<'a> Encode<'a, A::Database> + Type<A::Database>,
        i32: for<'a> Encode<'a, A::Database> + Type<A::Database>,
    {
        match self {
            Param::Text(text) => arguments.add(text),
            Param::NullableText(text) => arguments.add(text),
            Param::Bytes(bytes) => arguments.add(bytes),
            Param::Int(number) => arguments.add(number),
            Param::BigInt(number) => arguments.add(number),
        }
    }
}

/// One statement ready to run: its text, and its values bound (a named statement, prepared
/// once per connection) or already written into the text (a simple-protocol query).
pub struct Ready<DB: Database> {
    sql: SqlStr,
    arguments: Option<DB::Arguments>,
}

impl<DB: Database> Ready<DB> {
    /// `sql` with `params` bound as its parameters 1, 2, ... in order.
    pub(crate) fn bound(sql: SqlStr, params: &[Param<'_>]) -> StoreResult<Self>
    where
        for<'a> &'a str: Encode<'a, DB> + Type<DB>,
        for<'a> Option<&'a str>: Encode<'a, DB>,
        for<'a> &'a [u8]: Encode<'a, DB> + Type<DB>,
        i64: for<'a> Encode<'a, DB> + Type<DB>,
        i32: for<'a> Encode<'a, DB> + Type<DB>,
    {
        let mut arguments = DB::Arguments::default();
        for param in params {
            param.bind(&mut arguments).map_err(StoreError::permanent)?;
        }
        Ok(Ready {
            sql,
            arguments: Some(arguments),
        })
    }

    /// `sql` with its values already written in.
    pub(crate) fn text(sql: String) -> Self {
        Ready {
            sql: AssertSqlSafe(sql).into_sql_str(),
            arguments: None,
        }
    }
}

impl<DB: Database> Execute<'_, DB> for Ready<DB> {
    fn sql(self) -> SqlStr {
        self.sql
    }

    fn statement(&self) -> Option<&DB::Statement> {
        None
    }

    fn take_arguments(&mut self) -> Result<Option<DB::Arguments>, BoxDynError> {
        Ok(self.arguments.take())
    }

    fn persistent(&self) -> bool {
        true
    }
}
