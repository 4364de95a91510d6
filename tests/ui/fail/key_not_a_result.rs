use idem_runtime::{idempotent, MemoryStore, Store};
use std::sync::LazyLock;

static STORE: LazyLock<Store> = LazyLock::new(|| Store::new(MemoryStore::new()));

#[idempotent(store = "STORE", key = "order_id")]
async fn charge(order_id: String) -> u64 {
    1
}

fn main() {}
