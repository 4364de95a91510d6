#![allow(unused)]

use idem_runtime::{idempotent, Error, MemoryStore, Store};
use std::sync::LazyLock;

static STORE: LazyLock<Store> = LazyLock::new(|| Store::new(MemoryStore::new()));

#[idempotent(store = "STORE", key = "order_id", header = "X-Key", optional = true)]
async fn charge(order_id: String) -> Result<u64, Error> {
    Ok(1)
}

#[idempotent(store = "STORE", key = "order_id")]
async fn refund(#[idem(ignore)] order_id: String) -> Result<u64, Error> {
    Ok(1)
}

fn main() {}
