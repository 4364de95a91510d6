use idem_runtime::{idempotent, Error, MemoryStore, Store};
use std::sync::LazyLock;

static STORE: LazyLock<Store> = LazyLock::new(|| Store::new(MemoryStore::new()));

/// A connection pool: context, not input. It belongs under `#[idem(skip)]`.
struct Pool;

#[idempotent(store = "STORE", key = "order_id")]
async fn charge(pool: &Pool, order_id: String) -> Result<u64, Error> {
    Ok(1)
}

fn main() {}
