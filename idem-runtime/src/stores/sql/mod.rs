//! What the SQL stores share: the table name, the error classes and the statements themselves
//! (`statements`). How a record's parts are written into columns and read back is
//! `stores/columns.rs`, which the Redis store shares.

use std::fmt;

use crate::engine::store::StoreError;

#[cfg(feature = "postgres")]
mod connections;
#[cfg(feature = "postgres")]
mod literals;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
#[cfg(test)]
mod properties;
#[cfg(feature = "sqlite")]
pub(crate) mod sqlite;
mod statements;
mod tx;
mod values;

#[cfg(feature = "postgres")]
pub(crate) use super::columns::micros;
#[cfg(feature = "sqlite")]
pub(crate) use super::columns::millis;
pub(crate) use super::columns::{Columns, InspectColumns, acquired_from_column, payload_columns};
#[cfg(test)]
pub(crate) use super::columns::{decode_headers, payload_from_columns};
pub(crate) use statements::{Dialect, SqlStore};
pub(crate) use statements::{Statements, on_connection};
#[cfg(feature = "postgres")]
pub use tx::PgTx;
#[cfg(feature = "sqlite")]
pub use tx::SqliteTx;
pub use tx::Tx;
pub(crate) use values::{Param, Values};

/// The table SQL stores use unless told otherwise (`docs/contract.md`, "4. Records").
pub const DEFAULT_TABLE: &str = "idempotency_keys";

/// Longest table name accepted: Postgres keeps 63 bytes of a name, and index names add a suffix.
const MAX_TABLE_LEN: usize = 48;

/// A table name that is not a plain SQL identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid table name {0:?}: expected 1 to 48 characters from A-Z a-z 0-9 _, not starting \
     with a digit (set the schema with the connection's search_path instead)"
)]
pub struct InvalidTableName(pub String);

/// A validated table name, safe to write into SQL text (it is also double-quoted there).
#[derive(Clone, PartialEq, Eq)]
pub struct TableName(String);

impl TableName {
    pub(crate) fn new(name: &str) -> Result<Self, InvalidTableName> {
        let mut chars = name.chars();
        let valid = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
            && name.len() <= MAX_TABLE_LEN;
        if valid {
            Ok(TableName(name.to_owned()))
        } else {
            Err(InvalidTableName(name.to_owned()))
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// Fills a migration or statement template: `{table}` becomes the quoted table name and
    /// `{name}` the bare one (for index names).
    pub(crate) fn fill(&self, template: &str) -> String {
        template
            .replace("{table}", &format!("\"{}\"", self.0))
            .replace("{name}", &self.0)
    }
}

impl Default for TableName {
    fn default() -> Self {
        TableName(DEFAULT_TABLE.to_owned())
    }
}

impl fmt::Debug for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// Whether a Postgres SQLSTATE names a failure that may pass on retry.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) fn postgres_code_is_transient(code: &str) -> bool {
    matches!(
        code,
        "40001" // serialization_failure
            | "40P01" // deadlock_detected
            | "40003" // statement_completion_unknown
            | "55P03" // lock_not_available
            | "57014" // query_canceled (statement_timeout)
            | "57P01" // admin_shutdown
            | "57P02" // crash_shutdown
            | "57P03" // cannot_connect_now
            | "57P05" // idle_session_timeout
            | "53000" // insufficient_resources
            | "53200" // out_of_memory
            | "53300" // too_many_connections
            | "58000" // system_error
            | "58030" // io_error
            | "25006" // read_only_sql_transaction (a failover in progress)
    ) || code.starts_with("08") // connection_exception and its subclasses
}

/// Whether a SQLite (extended) result code names a failure that may pass on retry.
#[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
pub(crate) fn sqlite_code_is_transient(code: &str) -> bool {
    const SQLITE_BUSY: i32 = 5;
    const SQLITE_LOCKED: i32 = 6;
    const SQLITE_NOMEM: i32 = 7;
    const SQLITE_IOERR: i32 = 10;
    const SQLITE_PROTOCOL: i32 = 15;
    code.parse::<i32>().is_ok_and(|code| {
        matches!(
            code & 0xff,
            SQLITE_BUSY | SQLITE_LOCKED | SQLITE_NOMEM | SQLITE_IOERR | SQLITE_PROTOCOL
        )
    })
}

/// Classifies an sqlx error: transient when retrying may help, permanent otherwise.
/// `database_code_is_transient` judges errors the database itself returned.
pub(crate) fn classify(
    error: sqlx::Error,
    database_code_is_transient: fn(&str) -> bool,
) -> StoreError {
    let transient = match &error {
        sqlx::Error::Database(db) => db.code().is_some_and(|c| database_code_is_transient(&c)),
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::BeginFailed => true,
        // A closed pool is the application shutting down: no retry reopens it. Schema,
        // type, decoding and configuration errors are bugs or missing migrations.
        _ => false,
    };
    if transient {
        StoreError::transient(error)
    } else {
        StoreError::permanent(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_plain_identifiers() {
        for good in ["idempotency_keys", "_t", "Keys2", &"a".repeat(48)] {
            assert_eq!(TableName::new(good).map(|t| t.0), Ok(good.to_owned()));
        }
        for bad in [
            "",
            "1keys",
            "keys; DROP TABLE x",
            "public.keys",
            "\"keys\"",
            "ключи",
            &"a".repeat(49),
        ] {
            assert!(TableName::new(bad).is_err(), "{bad:?}");
        }
        let filled = TableName::new("k").map(|t| t.fill("CREATE INDEX {name}_x ON {table}"));
        assert_eq!(filled.as_deref(), Ok("CREATE INDEX k_x ON \"k\""));
    }

    #[test]
    fn postgres_codes_are_classified() {
        for transient in [
            "40001", "40P01", "57P01", "57P03", "08006", "08001", "53300",
        ] {
            assert!(postgres_code_is_transient(transient), "{transient}");
        }
        for permanent in ["42P01", "42501", "42703", "23505", "22P02", "XX000"] {
            assert!(!postgres_code_is_transient(permanent), "{permanent}");
        }
    }

    #[test]
    fn sqlite_codes_are_classified_by_primary_code() {
        // 5 BUSY, 261 BUSY_RECOVERY, 517 BUSY_SNAPSHOT, 6 LOCKED, 262 LOCKED_SHAREDCACHE, 10 IOERR
        for transient in ["5", "261", "517", "6", "262", "10", "3338"] {
            assert!(sqlite_code_is_transient(transient), "{transient}");
        }
        // 1 ERROR (no such table), 8 READONLY, 11 CORRUPT, 19 CONSTRAINT, 2067 UNIQUE
        for permanent in ["1", "8", "11", "19", "2067", "not a number"] {
            assert!(!sqlite_code_is_transient(permanent), "{permanent}");
        }
    }

    #[test]
    fn driver_errors_are_classified() {
        let io = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(classify(io, postgres_code_is_transient).is_transient());
        assert!(classify(sqlx::Error::PoolTimedOut, postgres_code_is_transient).is_transient());
        assert!(!classify(sqlx::Error::PoolClosed, postgres_code_is_transient).is_transient());
        assert!(!classify(sqlx::Error::RowNotFound, postgres_code_is_transient).is_transient());
        let decode = sqlx::Error::Decode("bad".into());
        assert!(!classify(decode, sqlite_code_is_transient).is_transient());
        let config = sqlx::Error::Configuration("bad url".into());
        assert!(!classify(config, sqlite_code_is_transient).is_transient());
    }
}
