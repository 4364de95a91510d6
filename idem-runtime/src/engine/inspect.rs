//! What an operator may see of the records (docs/contract.md, "Operating the records"): one
//! record's state and sizes, and the count of records by state. Never a stored body or
//! stored headers: an [`Inspection`] has no field that could carry them.

use std::time::Duration;

use serde::{Serialize, Serializer};

/// What `inspect` shows of one record: never its body or headers.
///
/// In JSON, durations are whole milliseconds under `*_ms` names, and the state is flattened
/// into the object:
///
/// ```
/// use std::time::Duration;
/// use idem_runtime::{InspectedState, Inspection};
///
/// let seen = Inspection {
///     state: InspectedState::Completed,
///     age: None,
///     since_update: None,
///     expires_in: Duration::from_secs(60),
///     response_status: Some(201),
///     headers: 1,
///     body_bytes: 8,
/// };
/// let json = serde_json::to_string(&seen).unwrap();
/// assert_eq!(
///     json,
///     r#"{"state":"completed","age_ms":null,"since_update_ms":null,"expires_in_ms":60000,"response_status":201,"headers":1,"body_bytes":8}"#
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Inspection {
    /// In progress (with the time left on its lease), FAILED_STORAGE, or completed.
    #[serde(flatten)]
    pub state: InspectedState,
    /// Time since the record was created, where the store keeps it (SQL stores); None for memory.
    #[serde(rename = "age_ms", serialize_with = "optional_millis")]
    pub age: Option<Duration>,
    /// Time since the record last changed, where the store keeps it (SQL stores); None for memory.
    #[serde(rename = "since_update_ms", serialize_with = "optional_millis")]
    pub since_update: Option<Duration>,
    /// Time until it expires.
    #[serde(rename = "expires_in_ms", serialize_with = "millis")]
    pub expires_in: Duration,
    /// The stored HTTP status of a completed response; None otherwise (in progress, failed, or a plain function's value).
    pub response_status: Option<u16>,
    /// How many headers are stored (0 when none).
    pub headers: usize,
    /// How many body bytes are stored (0 when none).
    pub body_bytes: usize,
}

/// The state of an inspected record (docs/contract.md, "4. Records").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum InspectedState {
    /// Claimed; the claim blocks duplicates for `lease_remaining` more (zero: abandoned, and
    /// the next request with the same fingerprint takes it over).
    InProgress {
        /// The time left on the claim's lease.
        #[serde(rename = "lease_remaining_ms", serialize_with = "millis")]
        lease_remaining: Duration,
    },
    /// The work ran and its result could not be stored; the next request takes it over.
    FailedStorage,
    /// The result is stored and replayed.
    Completed,
}

/// Live records by state, and expired records awaiting a purge.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use idem_runtime::{MemoryStore, Stats, Store};
///
/// let store = Store::new(MemoryStore::new());
/// assert_eq!(store.stats().await.unwrap(), Stats::default());
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Live records in progress (abandoned ones included until taken over or expired).
    pub in_progress: u64,
    /// Live completed records.
    pub completed: u64,
    /// Live FAILED_STORAGE records.
    pub failed_storage: u64,
    /// Records past their TTL, which no request sees any more, awaiting a purge.
    pub expired: u64,
}

/// A duration as whole milliseconds (rounded down).
fn millis<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}

fn optional_millis<S: Serializer>(
    duration: &Option<Duration>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match duration {
        Some(duration) => millis(duration, serializer),
        None => serializer.serialize_none(),
    }
}
