//! The store conformance suite on [`MemoryStore`], on real time like the SQL stores.

use idem_runtime::{MemoryStore, Store};

async fn memory() -> Option<(Store, ())> {
    Some((Store::new(MemoryStore::new()), ()))
}

idem_tests::conformance_tests!(memory);
