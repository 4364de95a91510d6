use idem_runtime::{idempotent, MemoryStore, Store};
use std::sync::LazyLock;

static STORE: LazyLock<Store> = LazyLock::new(|| Store::new(MemoryStore::new()));

/// Lacks `impl From<idem_runtime::Error> for ChargeError`: conflicts, mismatches and store
/// failures have nowhere to go.
#[derive(Debug)]
enum ChargeError {
    Declined,
}

#[idempotent(store = "STORE", key = "order_id")]
async fn charge(order_id: String) -> Result<u64, ChargeError> {
    Err(ChargeError::Declined)
}

fn main() {}
