//! How a stored record's parts are written and read back, by every store that keeps them
//! outside the process (the SQL stores' columns, the Redis store's hash fields): a payload as
//! a status, headers as JSON and a body; how a claim was acquired as a word; durations as
//! bounded whole numbers. One encoding, so a record means the same thing in every store
//! (`docs/contract.md`, "4. Records").

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::engine::fingerprint::Fingerprint;
use crate::engine::inspect::{InspectedState, Inspection};
use crate::engine::record::{Acquired, FAILED_STORAGE_STATUS, Payload, Record, RecordState};
use crate::engine::store::StoreError;

/// Longest duration written to a store: 100 years, so `now + duration` never overflows.
const MAX_STORED_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// A duration as whole microseconds, capped at 100 years.
pub(crate) fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.min(MAX_STORED_DURATION).as_micros()).unwrap_or(i64::MAX)
}

/// A duration as whole milliseconds (rounded up, so a 1µs lease is not 0), capped at 100 years.
#[cfg_attr(not(any(feature = "sqlite", feature = "redis")), allow(dead_code))]
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
pub(crate) fn payload_from_columns(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_become_bounded_numbers() {
        assert_eq!(micros(Duration::from_millis(200)), 200_000);
        assert_eq!(millis(Duration::from_micros(1)), 1);
        assert_eq!(millis(Duration::from_millis(250)), 250);
        assert_eq!(micros(Duration::MAX), micros(MAX_STORED_DURATION));
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
