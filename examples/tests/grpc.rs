//! The gRPC adapter's behaviour, over real gRPC on loopback (a tonic server on 127.0.0.1:0,
//! a tonic client), one test per row of docs/contract.md's "The gRPC adapter", on the memory,
//! SQLite and Postgres stores.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use idem_examples::grpc::pb::payments_client::PaymentsClient;
use idem_examples::grpc::pb::payments_server::Payments;
use idem_examples::grpc::pb::{
    CreatePaymentRequest, ListPaymentsRequest, ListPaymentsResponse, Payment,
};
use idem_runtime::{
    FailingStore, IdempotencyKey, IdempotencyStore, MemoryStore, Op, RecordId, SqliteStore, Store,
    idempotent,
};
use support::grpc::{client_of, numbered, pay, replayed, unlisted};
use tokio::sync::{Notify, Semaphore};
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};

/// A payments method that counts its runs and can be held while running, and a listing that
/// counts its own.
#[derive(Clone)]
struct Probe {
    idem: Store,
    runs: Arc<AtomicI64>,
    listed: Arc<AtomicI64>,
    started: Arc<Notify>,
    /// Each run takes a permit before it answers (closed gates hold runs).
    gate: Arc<Semaphore>,
}

/// The record names of [`Probe`]'s idempotent methods.
const HANDLER: &str = "grpc::Probe::create_payment";
const LISTING: &str = "grpc::Probe::list_payments";

#[tonic::async_trait]
impl Payments for Probe {
    #[idempotent(store = self.idem, scope = tenant(&request), ttl = "1h")]
    async fn create_payment(
        &self,
        request: Request<CreatePaymentRequest>,
    ) -> Result<Response<Payment>, Status> {
        let run = self.runs.fetch_add(1, Ordering::SeqCst) + 1;
        self.started.notify_one();
        let _permit = self.gate.acquire().await;
        let req = request.into_inner();
        match req.currency.as_str() {
            "ERR" => Err(Status::internal("the processor failed")),
            "PANIC" => panic!("the processor's client panicked"),
            "BAD" => {
                let mut status =
                    Status::with_details(Code::InvalidArgument, "no such currency", "why".into());
                status
                    .metadata_mut()
                    .insert("x-reason", "currency".parse().unwrap());
                Err(status)
            }
            _ => {
                let mut response = Response::new(Payment {
                    id: run,
                    amount: req.amount,
                    currency: req.currency,
                });
                response.metadata_mut().insert("x-run", run.into());
                response.metadata_mut().insert_bin(
                    "x-trace-bin",
                    tonic::metadata::MetadataValue::from_bytes(b"\x00\x01"),
                );
                Ok(response)
            }
        }
    }

    #[idempotent(store = self.idem, scope = tenant(&request), ttl = "1h")]
    async fn list_payments(
        &self,
        request: Request<ListPaymentsRequest>,
    ) -> Result<Response<ListPaymentsResponse>, Status> {
        let ListPaymentsRequest {} = request.into_inner();
        self.listed.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(ListPaymentsResponse::default()))
    }
}

/// The `tenant` metadata entry, the scope of a key.
fn tenant<M>(request: &Request<M>) -> String {
    request
        .metadata()
        .get("tenant")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

struct Running {
    probe: Probe,
    client: PaymentsClient<Channel>,
}

/// Serves a [`Probe`] on `store` on a free loopback port, and a client of it.
async fn serve(store: Store, gate: usize) -> Running {
    let probe = Probe {
        idem: store,
        runs: Arc::default(),
        listed: Arc::default(),
        started: Arc::default(),
        gate: Arc::new(Semaphore::new(gate)),
    };
    let client = client_of(probe.clone()).await;
    Running { probe, client }
}

const OPEN: usize = Semaphore::MAX_PERMITS;

// ---- the checks, one per row ------------------------------------------------------------

pub async fn a_new_key_runs_once_and_its_answer_replays_with_its_metadata(backend: Backend) {
    let Running { probe, mut client } = serve(Store::from_arc(backend), OPEN).await;
    let first = client
        .create_payment(pay(Some("order-0001"), 1200, "EUR"))
        .await
        .unwrap();
    let again = client
        .create_payment(pay(Some("order-0001"), 1200, "EUR"))
        .await
        .unwrap();
    assert_eq!(probe.runs.load(Ordering::SeqCst), 1, "the method ran once");
    assert!(!replayed(first.metadata()));
    assert!(replayed(again.metadata()));
    assert_eq!(again.metadata().get("x-run"), first.metadata().get("x-run"));
    assert_eq!(
        again
            .metadata()
            .get_bin("x-trace-bin")
            .unwrap()
            .to_bytes()
            .unwrap(),
        &b"\x00\x01"[..]
    );
    assert_eq!(again.into_inner(), first.into_inner());
}

pub async fn a_missing_or_invalid_key_is_invalid_argument_and_nothing_runs(backend: Backend) {
    let Running { probe, mut client } = serve(Store::from_arc(backend), OPEN).await;
    for key in [None, Some("short"), Some("has space 123")] {
        let status = client.create_payment(pay(key, 1, "EUR")).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{key:?}");
        assert!(!status.message().contains("short"), "never echoes the key");
    }
    let mut twice = pay(Some("order-0002"), 1, "EUR");
    twice
        .metadata_mut()
        .append("idempotency-key", "order-0003".parse().unwrap());
    let status = client.create_payment(twice).await.unwrap_err();
    assert_eq!(
        status.code(),
        Code::InvalidArgument,
        "the entry given twice"
    );
    assert_eq!(probe.runs.load(Ordering::SeqCst), 0);
}

pub async fn another_request_under_the_key_is_failed_precondition(backend: Backend) {
    let Running { probe, mut client } = serve(Store::from_arc(backend), OPEN).await;
    client
        .create_payment(pay(Some("order-0004"), 1200, "EUR"))
        .await
        .unwrap();
    let status = client
        .create_payment(pay(Some("order-0004"), 1300, "EUR"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(probe.runs.load(Ordering::SeqCst), 1);
}

pub async fn a_call_in_progress_is_aborted_with_retry_after(backend: Backend) {
    let Running { probe, mut client } = serve(Store::from_arc(backend), 0).await;
    let mut first_client = client.clone();
    let first = tokio::spawn(async move {
        first_client
            .create_payment(pay(Some("order-0005"), 1200, "EUR"))
            .await
    });
    probe.started.notified().await;
    let status = client
        .create_payment(pay(Some("order-0005"), 1200, "EUR"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Aborted);
    // Another request under the key is refused while the first runs, as once it is done.
    let other = client
        .create_payment(pay(Some("order-0005"), 9900, "EUR"))
        .await
        .unwrap_err();
    assert_eq!(other.code(), Code::FailedPrecondition);
    let retry_after: u64 = status
        .metadata()
        .get("retry-after")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1, "{retry_after}");
    probe.gate.add_permits(OPEN);
    first.await.unwrap().unwrap();
    assert_eq!(probe.runs.load(Ordering::SeqCst), 1);
}

pub async fn a_status_a_retry_might_cure_releases_the_claim(backend: Backend) {
    let store = Store::from_arc(backend);
    let Running { probe, mut client } = serve(store.clone(), OPEN).await;
    for _ in 0..2 {
        let status = client
            .create_payment(pay(Some("order-0006"), 1200, "ERR"))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Internal);
        assert!(!replayed(status.metadata()));
    }
    assert_eq!(probe.runs.load(Ordering::SeqCst), 2, "a retry runs again");
    let record = |key| RecordId::new("", HANDLER, IdempotencyKey::parse(key).unwrap());
    assert_eq!(
        store.inspect(&record("order-0006")).await.unwrap(),
        None,
        "no record is left"
    );
    client
        .create_payment(pay(Some("order-0106"), 1200, "EUR"))
        .await
        .unwrap();
    assert!(
        store
            .inspect(&record("order-0106"))
            .await
            .unwrap()
            .is_some(),
        "a kept answer is"
    );
}

pub async fn a_panicking_method_is_internal_and_releases_the_claim(backend: Backend) {
    let Running { probe, mut client } = serve(Store::from_arc(backend), OPEN).await;
    for run in 1..=2 {
        let status = client
            .create_payment(pay(Some("order-0012"), 1200, "PANIC"))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Internal);
        assert!(!replayed(status.metadata()));
        assert_eq!(probe.runs.load(Ordering::SeqCst), run, "a retry runs again");
    }
}

pub async fn another_error_status_is_kept_and_replayed_whole(backend: Backend) {
    let Running { probe, mut client } = serve(Store::from_arc(backend), OPEN).await;
    let first = client
        .create_payment(pay(Some("order-0007"), 1200, "BAD"))
        .await
        .unwrap_err();
    let again = client
        .create_payment(pay(Some("order-0007"), 1200, "BAD"))
        .await
        .unwrap_err();
    assert_eq!(probe.runs.load(Ordering::SeqCst), 1);
    assert_eq!(again.code(), Code::InvalidArgument);
    assert_eq!(again.message(), first.message());
    assert_eq!(again.details(), b"why");
    assert_eq!(again.metadata().get("x-reason").unwrap(), "currency");
    assert!(replayed(again.metadata()));
}

pub async fn one_key_under_two_scopes_is_two_records(backend: Backend) {
    let Running { probe, mut client } = serve(Store::from_arc(backend), OPEN).await;
    let mut ids = Vec::new();
    for tenant in ["tenant-a", "tenant-b"] {
        let mut request = pay(Some("order-0008"), 1200, "EUR");
        request
            .metadata_mut()
            .insert("tenant", tenant.parse().unwrap());
        let answer = client.create_payment(request).await.unwrap();
        assert!(!replayed(answer.metadata()), "{tenant} runs its own");
        ids.push(answer.into_inner().id);
    }
    assert_eq!(probe.runs.load(Ordering::SeqCst), 2);
    assert_ne!(ids[0], ids[1]);
}

pub async fn one_key_on_two_methods_is_two_records(backend: Backend) {
    let store = Store::from_arc(backend);
    let Running { probe, mut client } = serve(store.clone(), OPEN).await;
    let listing = || {
        let mut request = Request::new(ListPaymentsRequest {});
        request
            .metadata_mut()
            .insert("idempotency-key", "order-0013".parse().unwrap());
        request
    };
    for call in 0..2 {
        let paid = client
            .create_payment(pay(Some("order-0013"), 1200, "EUR"))
            .await
            .unwrap();
        // Were the key one record for both, the listing would meet the payment's record.
        let listed = client.list_payments(listing()).await.unwrap();
        assert_eq!(replayed(paid.metadata()), call == 1, "call {call}");
        assert_eq!(replayed(listed.metadata()), call == 1, "call {call}");
    }
    assert_eq!(probe.runs.load(Ordering::SeqCst), 1, "the payment ran once");
    assert_eq!(
        probe.listed.load(Ordering::SeqCst),
        1,
        "the listing ran once"
    );
    for method in [HANDLER, LISTING] {
        let id = RecordId::new("", method, IdempotencyKey::parse("order-0013").unwrap());
        assert!(store.inspect(&id).await.unwrap().is_some(), "{method}");
    }
}

pub async fn a_cancelled_call_finishes_and_its_answer_is_stored(backend: Backend) {
    let Running { probe, mut client } = serve(Store::from_arc(backend), 0).await;
    let mut first_client = client.clone();
    let first = tokio::spawn(async move {
        first_client
            .create_payment(pay(Some("order-0009"), 1200, "EUR"))
            .await
    });
    probe.started.notified().await;
    first.abort(); // the client goes away: the stream is reset
    assert!(first.await.unwrap_err().is_cancelled());
    probe.gate.add_permits(OPEN);
    // A retrying client: ABORTED while the detached run finishes, then its stored answer.
    let answer = loop {
        match client
            .create_payment(pay(Some("order-0009"), 1200, "EUR"))
            .await
        {
            Err(status) if status.code() == Code::Aborted => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => break other.unwrap(),
        }
    };
    assert!(replayed(answer.metadata()), "the cancelled run's answer");
    assert_eq!(probe.runs.load(Ordering::SeqCst), 1, "never run twice");
}

pub async fn with_wait_a_duplicate_gets_the_owners_answer(backend: Backend) {
    let store = Store::from_arc(backend).override_wait(Duration::from_secs(10));
    let Running { probe, mut client } = serve(store, 0).await;
    let mut first_client = client.clone();
    let first = tokio::spawn(async move {
        first_client
            .create_payment(pay(Some("order-0011"), 1200, "EUR"))
            .await
    });
    probe.started.notified().await;
    let duplicate = tokio::spawn(async move {
        client
            .create_payment(pay(Some("order-0011"), 1200, "EUR"))
            .await
    });
    // Without `wait` the duplicate, sent while the owner is held, would be ABORTED at once:
    // release the owner only once the duplicate is waiting for it.
    while probe.idem.waiting() == 0 {
        tokio::task::yield_now().await;
    }
    probe.gate.add_permits(OPEN);
    let first = first.await.unwrap().unwrap();
    let duplicate = duplicate.await.unwrap().unwrap();
    assert!(
        replayed(duplicate.metadata()),
        "the owner's answer, replayed"
    );
    assert_eq!(duplicate.into_inner(), first.into_inner());
    assert_eq!(probe.runs.load(Ordering::SeqCst), 1);
}

/// The store down when claiming: `UNAVAILABLE` with `retry-after: 1`, and nothing runs.
async fn a_store_outage_is_unavailable_and_nothing_runs(backend: Backend) {
    let failing = Arc::new(FailingStore::new(backend));
    failing.fail_next(Op::Claim, 1);
    let Running { probe, mut client } = serve(Store::from_arc(failing), OPEN).await;
    let status = client
        .create_payment(pay(Some("order-0010"), 1200, "EUR"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(status.metadata().get("retry-after").unwrap(), "1");
    assert_eq!(probe.runs.load(Ordering::SeqCst), 0);
    client
        .create_payment(pay(Some("order-0010"), 1200, "EUR"))
        .await
        .unwrap();
    assert_eq!(probe.runs.load(Ordering::SeqCst), 1, "the retry runs");
}

/// A method that takes its scope from the store's rule, on a memory store with a quota of
/// one record per scope.
#[derive(Clone)]
struct Guarded {
    idem: Store,
    runs: Arc<AtomicI64>,
}

#[tonic::async_trait]
impl Payments for Guarded {
    #[idempotent(store = self.idem)]
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

/// The store's scope rule reads the call's metadata: a call it cannot place is
/// `PERMISSION_DENIED`, and a new key beyond its scope's quota `RESOURCE_EXHAUSTED` with a
/// `retry-after`; neither runs the method, and other scopes go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_s_scope_rule_and_quota_speak_grpc() {
    let store = Store::new(MemoryStore::new().scope_quota(1)).scope_by_header("tenant");
    let guarded = Guarded {
        idem: store,
        runs: Arc::default(),
    };
    let mut client = client_of(guarded.clone()).await;
    let as_tenant = |key: &str, tenant: &str| {
        let mut request = pay(Some(key), 1200, "EUR");
        request
            .metadata_mut()
            .insert("tenant", tenant.parse().unwrap());
        request
    };

    let status = client
        .create_payment(pay(Some("order-0101"), 1200, "EUR"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "no tenant: no scope");

    client
        .create_payment(as_tenant("order-0102", "tenant-a"))
        .await
        .unwrap();
    let status = client
        .create_payment(as_tenant("order-0103", "tenant-a"))
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::ResourceExhausted,
        "tenant-a is at its quota"
    );
    assert!(status.metadata().get("retry-after").is_some());
    let replay = client
        .create_payment(as_tenant("order-0102", "tenant-a"))
        .await
        .unwrap();
    assert!(replayed(replay.metadata()), "a replay is never refused");
    client
        .create_payment(as_tenant("order-0103", "tenant-b"))
        .await
        .unwrap();
    assert_eq!(guarded.runs.load(Ordering::SeqCst), 2);
}

// ---- the stores -------------------------------------------------------------------------

/// A store's backend, shared: a check serves it, or wraps it to fail.
type Backend = Arc<dyn IdempotencyStore>;

async fn memory() -> Option<(Backend, ())> {
    Some((Arc::new(MemoryStore::new()), ()))
}

async fn sqlite() -> Option<(Backend, ())> {
    let store = SqliteStore::connect("sqlite::memory:").await.unwrap();
    store.migrate().await.unwrap();
    Some((Arc::new(store), ()))
}

async fn postgres() -> Option<(Backend, idem_tests::pg::TestDb)> {
    let db = idem_tests::pg::database().await?;
    let store = db.store().await;
    Some((Arc::new(store), db))
}

macro_rules! grpc_behaviour_tests {
    ($store:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some((backend, _guard)) = $store().await else { return };
                crate::$case(backend).await;
            }
        )*
    };
}

macro_rules! on_every_store {
    ($($case:ident),* $(,)?) => {
        mod memory { grpc_behaviour_tests!(crate::memory; $($case),*); }
        mod sqlite { grpc_behaviour_tests!(crate::sqlite; $($case),*); }
        mod postgres { grpc_behaviour_tests!(crate::postgres; $($case),*); }
    };
}

on_every_store!(
    a_new_key_runs_once_and_its_answer_replays_with_its_metadata,
    a_missing_or_invalid_key_is_invalid_argument_and_nothing_runs,
    another_request_under_the_key_is_failed_precondition,
    a_call_in_progress_is_aborted_with_retry_after,
    a_status_a_retry_might_cure_releases_the_claim,
    a_panicking_method_is_internal_and_releases_the_claim,
    another_error_status_is_kept_and_replayed_whole,
    one_key_under_two_scopes_is_two_records,
    one_key_on_two_methods_is_two_records,
    a_cancelled_call_finishes_and_its_answer_is_stored,
    with_wait_a_duplicate_gets_the_owners_answer,
    a_store_outage_is_unavailable_and_nothing_runs,
);
