//! The key's metadata entry over real gRPC (docs/contract.md, "The gRPC adapter"): a method's
//! `header` names it whatever the case the attribute writes it in, and with `optional` a call
//! without it runs unguarded.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use idem_examples::grpc::pb::payments_server::Payments;
use idem_examples::grpc::pb::{
    CreatePaymentRequest, ListPaymentsRequest, ListPaymentsResponse, Payment,
};
use idem_runtime::{MemoryStore, Store, idempotent};
use support::grpc::{client_of, numbered, pay, replayed, unlisted};
use tonic::{Request, Response, Status};

/// A payment method whose key is optional and travels in an entry of its own, written in
/// the attribute in an HTTP header's usual case.
#[derive(Clone)]
struct Relaxed {
    idem: Store,
    runs: Arc<AtomicI64>,
}

#[tonic::async_trait]
impl Payments for Relaxed {
    #[idempotent(store = self.idem, scope = none, header = "X-Request-Key", optional = true)]
    async fn create_payment(
        &self,
        request: Request<CreatePaymentRequest>,
    ) -> Result<Response<Payment>, Status> {
        numbered(&self.runs, request)
    }

    async fn list_payments(
        &self,
        _: Request<ListPaymentsRequest>,
    ) -> Result<Response<ListPaymentsResponse>, Status> {
        unlisted()
    }
}

fn relaxed() -> Relaxed {
    Relaxed {
        idem: Store::new(MemoryStore::new()),
        runs: Arc::default(),
    }
}

/// A payment with `key` in the `x-request-key` entry: gRPC metadata travel in lower case.
fn keyed(key: &str) -> Request<CreatePaymentRequest> {
    let mut request = pay(None, 1200, "EUR");
    request
        .metadata_mut()
        .insert("x-request-key", key.parse().expect("an ASCII key"));
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_named_entry_carries_the_key_whatever_its_case() {
    let service = relaxed();
    let mut client = client_of(service.clone()).await;
    let first = client.create_payment(keyed("order-0201")).await.unwrap();
    let again = client.create_payment(keyed("order-0201")).await.unwrap();
    assert!(!replayed(first.metadata()));
    assert!(replayed(again.metadata()), "the key was read");
    assert_eq!(again.into_inner(), first.into_inner());
    assert_eq!(service.runs.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_optional_a_call_without_the_key_runs_unguarded() {
    let service = relaxed();
    let mut client = client_of(service.clone()).await;
    // The default entry is not this method's: a key there is no key.
    for request in [
        || pay(None, 1200, "EUR"),
        || pay(Some("order-0202"), 1200, "EUR"),
    ] {
        let first = client.create_payment(request()).await.unwrap();
        let again = client.create_payment(request()).await.unwrap();
        assert!(!replayed(again.metadata()), "nothing was stored");
        assert_ne!(again.into_inner().id, first.into_inner().id, "it ran again");
    }
    assert_eq!(service.runs.load(Ordering::SeqCst), 4);
    let stats = service.idem.stats().await.unwrap();
    assert_eq!((stats.in_progress, stats.completed), (0, 0), "no record");
}
