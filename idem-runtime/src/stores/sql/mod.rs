//! What the SQL stores share: the table name, the error classes, durations as numbers,
//! payloads in columns and records rebuilt from them, and the statements themselves
//! (`statements`).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::engine::fingerprint::Fingerprint;
use crate::engine::inspect::{InspectedState, Inspection};
use crate::engine::record::{Acquired, FAILED_STORAGE_STATUS, Payload, Record, RecordState};
use crate::engine::store::StoreError;

#[cfg(feature = "postgres")]
mod connections;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
#[cfg(test)]
mod properties;
#[cfg(feature = "sqlite")]
pub(crate) mod sqlite;
mod statements;
mod tx;

pub(crate) use statements::{Dialect, SqlStore};
pub(crate) use statements::{Statements, on_connection};
#[cfg(feature = "postgres")]
pub use tx::PgTx;
#[cfg(feature = "sqlite")]
pub use tx::SqliteTx;
pub use tx::Tx;

/// The table SQL stores use unless told otherwise (`docs/contract.md`, "4. Records").
pub const DEFAULT_TABLE: &str = "idempotency_keys";

/// Longest table name accepted: Postgres keeps 63 bytes of a name, and index names add a suffix.
const MAX_TABLE_LEN: usize = 48;

/// Longest duration written to a database: 100 years, so `now + duration` never overflows.
const MAX_SQL_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

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

/// A duration as whole microseconds, capped at 100 years.
pub(crate) fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.min(MAX_SQL_DURATION).as_micros()).unwrap_or(i64::MAX)
}

/// A duration as whole milliseconds (rounded up, so a 1µs lease is not 0), capped at 100 years.
#[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
pub(crate) fn millis(duration: Duration) -> i64 {
    let micros = micros(duration);
    micros / 1000 + i64::from(micros % 1000 != 0)
}

/// The `acquired` column's text for each way of acquiring a claim.
pub(crate) fn acquired_from_column(text: &str) -> Result<Acquired, StoreError> {
    match text {
        "new" => Ok(Acquired::New),
        "abandoned" => Ok(Acquired::Abandoned),
        "failed_storage" => Ok(Acquired::FailedStorage),
        _ => Err(StoreError::permanent(format!(
            "unknown `acquired` value {text:?} in the idempotency table"
        ))),
    }
}

/// A stored record that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a stored record could not be decoded: {0}")]
pub struct DecodeError(&'static str);

/// Encodes headers for the `response_headers` column: a JSON array of `[name, value]` pairs,
/// the value a string when it is UTF-8 and an array of byte values otherwise.
pub(crate) fn encode_headers(headers: &[(String, Bytes)]) -> String {
    let pairs: Vec<serde_json::Value> = headers
        .iter()
        .map(|(name, value)| {
            let value = match std::str::from_utf8(value) {
                Ok(text) => serde_json::Value::from(text),
                Err(_) => serde_json::Value::from(value.to_vec()),
            };
            serde_json::Value::Array(vec![name.as_str().into(), value])
        })
        .collect();
    serde_json::Value::Array(pairs).to_string()
}

/// Decodes [`encode_headers`]'s output.
pub(crate) fn decode_headers(text: &str) -> Result<Vec<(String, Bytes)>, DecodeError> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|_| DecodeError("headers are not JSON"))?;
    let pairs = value
        .as_array()
        .ok_or(DecodeError("headers are not an array"))?;
    pairs
        .iter()
        .map(|pair| match pair.as_array().map(Vec::as_slice) {
            Some([serde_json::Value::String(name), value]) => {
                let bytes = match value {
                    serde_json::Value::String(text) => Bytes::from(text.clone()),
                    serde_json::Value::Array(items) => items
                        .iter()
                        .map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
                        .collect::<Option<Vec<u8>>>()
                        .map(Bytes::from)
                        .ok_or(DecodeError("a header value is not a byte array"))?,
                    _ => return Err(DecodeError("a header value is neither text nor bytes")),
                };
                Ok((name.clone(), bytes))
            }
            _ => Err(DecodeError("a header is not a [name, value] pair")),
        })
        .collect()
}

/// The `response_status`, `response_headers` and `response_body` columns of a payload. A
/// plain function's value is status 200 with no headers, so the existing columns hold both
/// kinds without a migration (`docs/contract.md`, "4. Records").
pub(crate) fn payload_columns(payload: &Payload) -> (i32, Option<String>, &[u8]) {
    match payload {
        Payload::Response {
            status,
            headers,
            body,
        } => (i32::from(*status), Some(encode_headers(headers)), body),
        Payload::Value(json) => (200, None, json),
    }
}

/// Rebuilds a completed record's payload from its columns: no headers is a plain function's
/// value; headers make a response, whose status must be an HTTP status.
fn payload_from_columns(
    status: i32,
    headers: Option<&str>,
    body: Vec<u8>,
) -> Result<Payload, DecodeError> {
    let body = Bytes::from(body);
    let Some(headers) = headers else {
        return Ok(Payload::Value(body));
    };
    let status = u16::try_from(status)
        .ok()
        .filter(|s| (100..=599).contains(s))
        .ok_or(DecodeError("the status is outside 100..=599"))?;
    Ok(Payload::Response {
        status,
        headers: decode_headers(headers)?,
        body,
    })
}

/// The columns of a stored record, as both SQL stores read them.
pub(crate) struct Columns {
    pub fingerprint: String,
    pub status: Option<i32>,
    pub headers: Option<String>,
    pub body: Option<Vec<u8>>,
    pub lease_remaining: Duration,
}

impl Columns {
    /// Rebuilds the record; a row that does not decode is a permanent error.
    pub(crate) fn into_record(self) -> Result<Record, StoreError> {
        let fingerprint = Fingerprint::from_hex(&self.fingerprint).ok_or_else(|| {
            StoreError::permanent("a request_fingerprint in the idempotency table is not hex")
        })?;
        let state = match self.status {
            None => RecordState::InProgress {
                lease_remaining: self.lease_remaining,
            },
            Some(FAILED_STORAGE_STATUS) => RecordState::FailedStorage,
            Some(status) => RecordState::Completed(Arc::new(
                payload_from_columns(
                    status,
                    self.headers.as_deref(),
                    self.body.unwrap_or_default(),
                )
                .map_err(StoreError::permanent)?,
            )),
        };
        Ok(Record { fingerprint, state })
    }
}

/// What `INSPECT` reads of a record, as both SQL stores read it.
pub(crate) struct InspectColumns {
    pub status: Option<i32>,
    /// Read only to count the headers: never logged, never returned.
    pub headers: Option<String>,
    pub body_bytes: usize,
    pub age: Duration,
    pub since_update: Duration,
    pub expires_in: Duration,
    pub lease_remaining: Duration,
}

impl InspectColumns {
    /// What an operator sees: a completed record without headers is a plain function's
    /// value, which has no HTTP status (`docs/contract.md`, "6. Plain-function mode").
    /// Headers that do not decode are a permanent error, as on a read.
    pub(crate) fn into_inspection(self) -> Result<Inspection, StoreError> {
        let state = match self.status {
            None => InspectedState::InProgress {
                lease_remaining: self.lease_remaining,
            },
            Some(FAILED_STORAGE_STATUS) => InspectedState::FailedStorage,
            Some(_) => InspectedState::Completed,
        };
        let completed = state == InspectedState::Completed;
        let headers = match self.headers.as_deref().filter(|_| completed) {
            Some(text) => Some(decode_headers(text).map_err(StoreError::permanent)?.len()),
            None => None,
        };
        let response_status = match headers {
            Some(_) => self.status.and_then(|s| u16::try_from(s).ok()),
            None => None,
        };
        Ok(Inspection {
            state,
            age: Some(self.age),
            since_update: Some(self.since_update),
            expires_in: self.expires_in,
            response_status,
            headers: headers.unwrap_or(0),
            body_bytes: if completed { self.body_bytes } else { 0 },
        })
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
    fn durations_become_bounded_numbers() {
        assert_eq!(micros(Duration::from_millis(200)), 200_000);
        assert_eq!(millis(Duration::from_micros(1)), 1);
        assert_eq!(millis(Duration::from_millis(250)), 250);
        assert_eq!(micros(Duration::MAX), micros(MAX_SQL_DURATION));
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

    #[test]
    fn payloads_round_trip_through_columns_including_non_utf8_header_values() {
        let response = Payload::Response {
            status: 201,
            headers: vec![
                (
                    "content-type".into(),
                    Bytes::from_static(b"application/json"),
                ),
                ("x-raw".into(), Bytes::from_static(b"caf\xe9")),
            ],
            body: Bytes::from_static(b"{}"),
        };
        let value = Payload::Value(Bytes::from_static(b"{\"id\":7}"));
        for payload in [response, value] {
            let (status, headers, body) = payload_columns(&payload);
            let decoded = payload_from_columns(status, headers.as_deref(), body.to_vec());
            assert_eq!(decoded, Ok(payload));
        }
    }

    #[test]
    fn corrupt_columns_are_errors_not_panics() {
        for bad in [
            "",
            "{}",
            "[1]",
            "[[\"a\"]]",
            "[[\"a\", 3]]",
            "[[\"a\", [300]]]",
        ] {
            assert!(decode_headers(bad).is_err(), "{bad:?}");
        }
        assert!(payload_from_columns(-1, Some("[]"), vec![]).is_err());
        assert!(payload_from_columns(600, Some("[]"), vec![]).is_err());
    }

    #[test]
    fn records_decode_from_columns_or_fail_permanently() {
        let fp = Fingerprint::of_parts(&[b"x"]);
        let columns = |status, headers: Option<&str>| Columns {
            fingerprint: fp.to_hex(),
            status,
            headers: headers.map(str::to_owned),
            body: Some(b"hi".to_vec()),
            lease_remaining: Duration::from_millis(5),
        };
        let record = columns(None, None).into_record().ok().map(|r| r.state);
        assert_eq!(
            record,
            Some(RecordState::InProgress {
                lease_remaining: Duration::from_millis(5)
            })
        );
        let failed = columns(Some(-1), None).into_record().ok().map(|r| r.state);
        assert_eq!(failed, Some(RecordState::FailedStorage));
        let done = columns(Some(201), Some("[]"))
            .into_record()
            .ok()
            .map(|r| r.state);
        assert!(matches!(
            done,
            Some(RecordState::Completed(p)) if matches!(*p, Payload::Response { status: 201, .. })
        ));
        let value = columns(Some(200), None).into_record().ok().map(|r| r.state);
        assert!(matches!(
            value,
            Some(RecordState::Completed(p)) if *p == Payload::Value(Bytes::from_static(b"hi"))
        ));
        assert!(columns(Some(42), Some("[]")).into_record().is_err());
        assert!(columns(Some(201), Some("{}")).into_record().is_err());
        let mut bad = columns(None, None);
        bad.fingerprint = "zz".into();
        assert!(bad.into_record().is_err_and(|e| !e.is_transient()));
        assert!(acquired_from_column("abandoned").is_ok_and(|a| a == Acquired::Abandoned));
        assert!(acquired_from_column("other").is_err());
    }
}
