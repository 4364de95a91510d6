//! The contract's request and persistence rules (docs/contract.md, "What a request meets" and
//! "Persisting the response"), one test per row, against the memory store and the failing
//! wrapper, driving the executor the way `#[idempotent]`'s expansion does.
//!
//! Time is tokio's paused clock: leases, expiry and backoff are exact, and no test sleeps on
//! the wall clock, but for the one about a handler that blocks its thread, which needs real
//! threads and real time.

mod isolation;
mod leases;
mod persistence;
mod requests;
mod support;

use std::sync::Arc;
use std::time::Duration;

use idem_runtime::{
    Acquired, Claim, ClaimOutcome, Config, FailingStore, MemoryStore, OwnerToken, Store,
};

use support::Req;

/// The attribute's defaults: retries 5, lease 30 s, TTL 24 h.
const CONFIG: Config = Config::new();

fn memory() -> Store {
    Store::new(MemoryStore::new())
}

/// A memory store that fails what the test says, and the handle to it.
fn failing() -> (Arc<FailingStore<MemoryStore>>, Store) {
    let failing = Arc::new(FailingStore::new(MemoryStore::new()));
    (failing.clone(), Store::new(failing).with_jitter_seed(7))
}

/// A claim whose owner died: taken directly and never renewed.
async fn abandon(store: &Store, req: &Req, lease: Duration) {
    let claim = Claim {
        id: req.id(),
        fingerprint: req.head().fingerprint(),
        token: OwnerToken::random(),
        lease,
        ttl: Duration::from_secs(3600),
    };
    let claimed = store.backend().claim(&claim).await.unwrap();
    assert_eq!(claimed, ClaimOutcome::Acquired(Acquired::New));
}
