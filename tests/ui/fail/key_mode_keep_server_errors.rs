#![allow(unused)]

use idem_runtime::{idempotent, Error, MemoryStore, Store};
use std::sync::LazyLock;

static STORE: LazyLock<Store> = LazyLock::new(|| Store::new(MemoryStore::new()));

#[idempotent(store = STORE, key = order_id, keep_server_errors = true)]
async fn charge(order_id: String) -> Result<u64, Error> {
    Ok(1)
}

fn main() {}
