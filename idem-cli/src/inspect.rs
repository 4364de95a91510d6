//! `idem inspect`: one record's state, times, response status and sizes, never its contents.

use idem_runtime::{InspectedState, Inspection, RecordId, Store};
use serde_json::Value;

use crate::duration::human;
use crate::failure::Failure;
use crate::record;
use crate::report::Report;

/// Reads the record; none is [`Failure::not_found`].
pub async fn run(store: &Store, id: &RecordId) -> Result<Report, Failure> {
    let inspection = store
        .inspect(id)
        .await
        .map_err(|e| Failure::from_store("cannot read the record", &e))?
        .ok_or_else(|| {
            Failure::not_found(format!(
                "no record for {} (never stored, expired, or evicted)",
                record::describe(id)
            ))
        })?;
    Ok(Report {
        human: text(id, &inspection),
        json: object(id, &inspection)?,
    })
}

/// `in_progress`, `failed_storage` or `completed`, and the lease left when in progress.
fn state(inspection: &Inspection) -> (&'static str, Option<std::time::Duration>) {
    match inspection.state {
        InspectedState::InProgress { lease_remaining } => ("in_progress", Some(lease_remaining)),
        InspectedState::FailedStorage => ("failed_storage", None),
        InspectedState::Completed => ("completed", None),
    }
}

fn text(id: &RecordId, inspection: &Inspection) -> String {
    let (name, lease) = state(inspection);
    let state = match (&inspection.state, lease) {
        (_, Some(std::time::Duration::ZERO)) => {
            format!(
                "{name} (abandoned: its lease ran out; the next identical request takes it over)"
            )
        }
        (_, Some(lease)) => format!("{name} (lease: {} left)", human(lease)),
        (InspectedState::FailedStorage, _) => {
            format!("{name} (the next request with this key runs the handler again)")
        }
        _ => name.to_owned(),
    };
    let ago =
        |d: Option<std::time::Duration>| d.map_or("unknown".to_owned(), |d| human(d) + " ago");
    let response = match inspection.response_status {
        Some(status) => format!(
            "{status}, {} header{}, {} bytes of body",
            inspection.headers,
            if inspection.headers == 1 { "" } else { "s" },
            inspection.body_bytes
        ),
        None => "none stored".to_owned(),
    };
    [
        ("record", record::describe(id)),
        ("state", state),
        ("created", ago(inspection.age)),
        ("updated", ago(inspection.since_update)),
        ("expires", format!("in {}", human(inspection.expires_in))),
        ("response", response),
    ]
    .iter()
    .map(|(label, value)| format!("{label:<9} {value}"))
    .collect::<Vec<_>>()
    .join("\n")
}

/// The record's identity and the runtime's own JSON of the inspection (durations as `*_ms`).
fn object(id: &RecordId, inspection: &Inspection) -> Result<Value, Failure> {
    let fields = serde_json::to_value(inspection)
        .map_err(|e| Failure::store(format!("cannot write the record as JSON: {e}")))?;
    let mut object = record::json_head("inspect", id);
    if let Value::Object(fields) = fields {
        object.extend(fields);
    }
    Ok(Value::Object(object))
}
