#![allow(unused)]

use std::sync::LazyLock;

use axum::extract::Json;
use idem_runtime::{idempotent, Error, MemoryStore, PgTx};

// A `MemoryStore` has no database to open a transaction on: as a static behind `LazyLock`
// (which derefs to a `MemoryStore`, not to a `Store`)...
static MEMORY: LazyLock<MemoryStore> = LazyLock::new(MemoryStore::new);

#[idempotent(store = MEMORY, transactional)]
async fn handler(mut tx: PgTx, Json(body): Json<String>) {}

// ...or as a value.
fn memory() -> MemoryStore {
    MemoryStore::new()
}

#[idempotent(store = memory(), key = id, transactional)]
async fn consume(id: u64, mut tx: PgTx) -> Result<u64, Error> {
    Ok(id)
}

fn main() {}
