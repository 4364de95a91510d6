//! `idem stats`: how many records the store holds in each state.

use idem_runtime::Store;
use serde_json::{Map, Value, json};

use crate::failure::Failure;
use crate::report::Report;

/// Counts the records by state.
pub async fn run(store: &Store) -> Result<Report, Failure> {
    let stats = store
        .stats()
        .await
        .map_err(|e| Failure::from_store("cannot count the records", &e))?;
    let rows = [
        ("in_progress", stats.in_progress),
        ("completed", stats.completed),
        ("failed_storage", stats.failed_storage),
        ("expired", stats.expired),
    ];
    let mut human = format!("{:<15}{:>10}", "state", "records");
    let mut object = Map::new();
    object.insert("command".to_owned(), json!("stats"));
    for (state, count) in rows {
        human.push_str(&format!("\n{state:<15}{count:>10}"));
        object.insert(state.to_owned(), json!(count));
    }
    Ok(Report {
        human,
        json: Value::Object(object),
    })
}
