//! `idem evict`: deletes one record, whatever its state, so the next request runs the handler.

use idem_runtime::{RecordId, Store};
use serde_json::{Value, json};

use crate::failure::Failure;
use crate::record;
use crate::report::Report;

/// Deletes the record; none is [`Failure::not_found`].
pub async fn run(store: &Store, id: &RecordId) -> Result<Report, Failure> {
    let deleted = store
        .evict(id)
        .await
        .map_err(|e| Failure::from_store("cannot delete the record", &e))?;
    if !deleted {
        return Err(Failure::not_found(format!(
            "no record for {}: nothing deleted",
            record::describe(id)
        )));
    }
    let mut object = record::json_head("evict", id);
    object.insert("deleted".to_owned(), json!(true));
    Ok(Report {
        human: format!(
            "evicted {}: the next request with this key runs the handler",
            record::describe(id)
        ),
        json: Value::Object(object),
    })
}
