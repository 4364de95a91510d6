use idem_runtime::{idempotent, Error, MemoryStore, Store};
use std::sync::LazyLock;

static STORE: LazyLock<Store> = LazyLock::new(|| Store::new(MemoryStore::new()));

/// Not `Serialize`, not `Deserialize`: it cannot be stored and replayed.
struct Receipt {
    total: u64,
}

#[idempotent(store = "STORE", key = "order_id")]
async fn charge(order_id: String) -> Result<Receipt, Error> {
    Ok(Receipt { total: 1 })
}

fn main() {}
