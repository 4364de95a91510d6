#![allow(unused)]

use idem_runtime::{idempotent, Error, MemoryStore, Store};
use std::sync::LazyLock;

static STORE: LazyLock<Store> = LazyLock::new(|| Store::new(MemoryStore::new()));

#[idempotent(store = STORE, key = order_id, release = [429])]
async fn charge(order_id: String) -> Result<u64, Error> {
    Ok(1)
}

fn main() {}
