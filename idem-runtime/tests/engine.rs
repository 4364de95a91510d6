//! The contract of SPEC sections 2 and 3, one test per row, against the memory store and the
//! failing wrapper, driving the engine the way `#[idempotent]`'s expansion does.
//!
//! Time is tokio's paused clock: leases, expiry and backoff are exact, and no test sleeps on
//! the wall clock.

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum_core::response::IntoResponse;
use http::StatusCode;
use idem_runtime::{
    Acquired, Claim, ClaimOutcome, Config, FailingStore, IdempotencyStore, MemoryStore, Op,
    OwnerToken, Store,
};
use support::*;
use tokio::sync::Notify;

const CONFIG: Config = Config::new();

fn memory() -> Store {
    Store::new(MemoryStore::new())
}

fn failing() -> (Arc<FailingStore<MemoryStore>>, Store) {
    let failing = Arc::new(FailingStore::new(MemoryStore::new()));
    (failing.clone(), Store::new(failing).with_jitter_seed(7))
}

// ---- section 2, row by row ---------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn header_missing_not_optional_is_400_missing_key_and_nothing_runs() {
    let metrics = Metrics::install();
    let (store, counter) = (memory(), Counter::default());
    let reply = send(&store, &CONFIG, &Req::without_key(), counter.created()).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.problem_type(), "urn:idem:problem:missing-key");
    assert_eq!(counter.runs(), 0);
    assert_eq!(metrics.outcome("missing_key"), 1);
    assert_eq!(
        metrics.samples("idempotency_store_seconds", "claim"),
        0,
        "no store access"
    );
}

#[tokio::test(start_paused = true)]
async fn header_missing_with_optional_runs_the_handler_without_idempotency() {
    const OPTIONAL: Config = Config::new().optional(true);
    let (store, counter) = (memory(), Counter::default());
    for _ in 0..2 {
        let reply = send(&store, &OPTIONAL, &Req::without_key(), counter.created()).await;
        assert_eq!(reply.status, StatusCode::CREATED);
        assert!(!reply.replayed());
    }
    assert_eq!(counter.runs(), 2);
}

#[tokio::test(start_paused = true)]
async fn an_empty_header_counts_as_missing() {
    let (store, counter) = (memory(), Counter::default());
    let reply = send(&store, &CONFIG, &Req::new(""), counter.created()).await;
    assert_eq!(reply.problem_type(), "urn:idem:problem:missing-key");
}

#[tokio::test(start_paused = true)]
async fn key_invalid_is_400_invalid_key_never_echoing_the_key() {
    let metrics = Metrics::install();
    let (store, counter) = (memory(), Counter::default());
    let bad = [
        "short7!",
        "seven77",
        &"k".repeat(129),
        "has spaces in it",
        "\"half-quoted-key",
        "semi;colon;key",
        "'; DROP TABLE idempotency_keys; --",
    ];
    for key in bad {
        let reply = send(&store, &CONFIG, &Req::new(key), counter.created()).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{key:?}");
        assert_eq!(reply.problem_type(), "urn:idem:problem:invalid-key");
        assert!(
            !String::from_utf8_lossy(&reply.body).contains(key),
            "{key:?} echoed"
        );
    }
    assert_eq!(counter.runs(), 0);
    assert_eq!(metrics.outcome("invalid_key"), bad.len() as u64);
}

#[tokio::test(start_paused = true)]
async fn a_header_given_twice_is_invalid() {
    let (store, counter) = (memory(), Counter::default());
    let req = Req::new("order-0001-twice");
    let mut head_headers = http::HeaderMap::new();
    head_headers.append("idempotency-key", "order-0001-twice".parse().unwrap());
    head_headers.append("idempotency-key", "order-0001-twice".parse().unwrap());
    let head = idem_runtime::engine::RequestHead::new(head_headers, req.head().fingerprint());
    let response = idem_runtime::engine::run(
        store.clone(),
        &CONFIG,
        req.target(),
        head,
        counter.created(),
    )
    .await;
    let reply = Reply::read(response).await;
    assert_eq!(reply.problem_type(), "urn:idem:problem:invalid-key");
    assert_eq!(counter.runs(), 0);
}

#[tokio::test(start_paused = true)]
async fn an_rfc8941_quoted_key_is_the_same_key() {
    let (store, counter) = (memory(), Counter::default());
    let first = send(&store, &CONFIG, &Req::new("order-0002"), counter.created()).await;
    let again = send(
        &store,
        &CONFIG,
        &Req::new("\"order-0002\""),
        counter.created(),
    )
    .await;
    assert_eq!(counter.runs(), 1);
    assert_eq!(again.body, first.body);
    assert!(again.replayed());
}

#[tokio::test(start_paused = true)]
async fn new_key_runs_the_handler_once_and_completes() {
    let metrics = Metrics::install();
    let (store, counter) = (memory(), Counter::default());
    let req = Req::new("order-0003");
    let reply = send(&store, &CONFIG, &req, counter.created()).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(&reply.body[..], b"{\"run\":1}");
    assert!(!reply.replayed());
    assert_eq!(counter.runs(), 1);
    assert_eq!(state(&store, &req).await, Some("COMPLETED"));
    assert_eq!(metrics.outcome("executed"), 1);
    assert_eq!(metrics.samples("idempotency_store_seconds", "claim"), 1);
    assert_eq!(metrics.samples("idempotency_store_seconds", "complete"), 1);
}

#[tokio::test(start_paused = true)]
async fn same_key_same_request_completed_replays_status_headers_and_bytes() {
    let metrics = Metrics::install();
    let (store, counter) = (memory(), Counter::default());
    let req = Req::new("order-0004");
    let first = send(&store, &CONFIG, &req, counter.created()).await;
    for _ in 0..3 {
        let again = send(&store, &CONFIG, &req, counter.created()).await;
        assert_eq!(again.status, first.status);
        assert_eq!(again.body, first.body, "byte for byte");
        assert_eq!(again.headers["x-run"], "1");
        assert_eq!(again.headers["content-type"], first.headers["content-type"]);
        assert!(again.replayed());
    }
    assert_eq!(counter.runs(), 1);
    assert_eq!(metrics.outcome("replayed"), 3);
}

#[tokio::test(start_paused = true)]
async fn a_4xx_from_the_handler_is_stored_and_replayed() {
    let (store, counter) = (memory(), Counter::default());
    let req = Req::new("order-0005");
    let first = send(
        &store,
        &CONFIG,
        &req,
        counter.status(StatusCode::UNPROCESSABLE_ENTITY),
    )
    .await;
    let again = send(&store, &CONFIG, &req, counter.created()).await;
    assert_eq!(first.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(again.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(again.replayed());
    assert_eq!(counter.runs(), 1);
}

#[tokio::test(start_paused = true)]
async fn same_key_different_request_is_422_in_any_state() {
    let metrics = Metrics::install();
    let (store, counter) = (memory(), Counter::default());
    let req = Req::new("order-0006");
    send(&store, &CONFIG, &req, counter.created()).await;
    let other = req.clone().body(b"{\"amount\":99}");
    let reply = send(&store, &CONFIG, &other, counter.created()).await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.problem_type(), "urn:idem:problem:key-reused");
    assert_eq!(
        state(&store, &req).await,
        Some("COMPLETED"),
        "record unchanged"
    );

    // While in progress, too.
    let started = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let slow = Req::new("order-0007");
    let first = tokio::spawn({
        let (store, slow, started, release) = (
            store.clone(),
            slow.clone(),
            started.clone(),
            release.clone(),
        );
        async move {
            send(&store, &CONFIG, &slow, async move {
                started.notify_one();
                release.notified().await;
                StatusCode::CREATED
            })
            .await
        }
    });
    started.notified().await;
    let reply = send(
        &store,
        &CONFIG,
        &slow.clone().body(b"other"),
        counter.created(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    release.notify_one();
    assert_eq!(first.await.unwrap().status, StatusCode::CREATED);
    assert_eq!(counter.runs(), 1);
    assert_eq!(metrics.outcome("mismatch"), 2);
}

#[tokio::test(start_paused = true)]
async fn same_key_in_progress_with_a_live_lease_is_409_with_retry_after() {
    let metrics = Metrics::install();
    let (store, counter) = (memory(), Counter::default());
    let req = Req::new("order-0008");
    let started = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let first = tokio::spawn({
        let (store, req, started, release) =
            (store.clone(), req.clone(), started.clone(), release.clone());
        async move {
            send(&store, &CONFIG, &req, async move {
                started.notify_one();
                release.notified().await;
                (StatusCode::CREATED, "first")
            })
            .await
        }
    });
    started.notified().await;
    let reply = send(&store, &CONFIG, &req, counter.created()).await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(reply.problem_type(), "urn:idem:problem:request-in-progress");
    assert_eq!(
        reply.retry_after(),
        Some(30),
        "the whole default lease is left"
    );
    assert_eq!(state(&store, &req).await, Some("IN_PROGRESS"));
    release.notify_one();
    let first = first.await.unwrap();
    assert_eq!(&first.body[..], b"first");
    let replay = send(&store, &CONFIG, &req, counter.created()).await;
    assert_eq!(&replay.body[..], b"first");
    assert_eq!(counter.runs(), 0);
    assert_eq!(metrics.outcome("conflict"), 1);
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

#[tokio::test(start_paused = true)]
async fn same_key_with_an_expired_lease_is_taken_over_by_exactly_one_retry() {
    let metrics = Metrics::install();
    let (store, counter) = (memory(), Counter::default());
    let req = Req::new("order-0009");
    abandon(&store, &req, Duration::from_secs(30)).await;

    let early = send(&store, &CONFIG, &req, counter.created()).await;
    assert_eq!(
        early.status,
        StatusCode::CONFLICT,
        "the lease is still live"
    );

    tokio::time::advance(Duration::from_secs(31)).await;
    let racers: Vec<_> = (0..10)
        .map(|_| {
            let (store, req, counter) = (store.clone(), req.clone(), counter.clone());
            tokio::spawn(async move { send(&store, &CONFIG, &req, counter.created()).await })
        })
        .collect();
    let mut statuses = Vec::new();
    for racer in racers {
        statuses.push(racer.await.unwrap().status);
    }
    assert_eq!(counter.runs(), 1, "exactly one racer took the claim over");
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CREATED)
            .count(),
        10 - statuses
            .iter()
            .filter(|s| **s == StatusCode::CONFLICT)
            .count()
    );
    assert_eq!(state(&store, &req).await, Some("COMPLETED"));
    assert_eq!(metrics.outcome("recovered"), 1);
}

#[tokio::test(start_paused = true)]
async fn a_handler_three_times_longer_than_the_lease_is_never_taken_over() {
    const SHORT: Config = Config::new().lease(Duration::from_secs(3));
    let (store, counter) = (memory(), Counter::default());
    let req = Req::new("order-0010");
    let started = Arc::new(Notify::new());
    let first = tokio::spawn({
        let (store, req, started) = (store.clone(), req.clone(), started.clone());
        async move {
            send(&store, &SHORT, &req, async move {
                started.notify_one();
                tokio::time::sleep(Duration::from_secs(9)).await;
                (StatusCode::CREATED, "slow")
            })
            .await
        }
    });
    started.notified().await;
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let dup = send(&store, &SHORT, &req, counter.created()).await;
        assert_eq!(
            dup.status,
            StatusCode::CONFLICT,
            "the live owner renews its lease"
        );
    }
    assert_eq!(&first.await.unwrap().body[..], b"slow");
    assert_eq!(counter.runs(), 0);
}

#[tokio::test(start_paused = true)]
async fn same_key_failed_storage_is_taken_over_and_completed() {
    let metrics = Metrics::install();
    let (failing, store) = failing();
    let counter = Counter::default();
    let req = Req::new("order-0011");
    failing.fail_always(Op::Complete);
    let first = send(&store, &CONFIG, &req, counter.created()).await;
    assert_eq!(
        first.status,
        StatusCode::CREATED,
        "the client still gets the response"
    );
    assert_eq!(state(&store, &req).await, Some("FAILED_STORAGE"));

    failing.heal(Op::Complete);
    let retry = send(&store, &CONFIG, &req, counter.created()).await;
    assert_eq!(&retry.body[..], b"{\"run\":2}", "the handler ran again");
    assert!(!retry.replayed());
    assert_eq!(state(&store, &req).await, Some("COMPLETED"));
    let replay = send(&store, &CONFIG, &req, counter.created()).await;
    assert_eq!(replay.body, retry.body);
    assert_eq!(counter.runs(), 2);
    assert_eq!(metrics.outcome("recovered"), 1);
}

#[tokio::test(start_paused = true)]
async fn same_key_after_the_ttl_is_a_new_key() {
    const BRIEF: Config = Config::new()
        .ttl(Duration::from_secs(60))
        .lease(Duration::from_secs(5));
    let (store, counter) = (memory(), Counter::default());
    let req = Req::new("order-0012");
    send(&store, &BRIEF, &req, counter.created()).await;
    tokio::time::advance(Duration::from_secs(59)).await;
    assert!(
        send(&store, &BRIEF, &req, counter.created())
            .await
            .replayed()
    );
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(
        state(&store, &req).await,
        None,
        "expired records read as absent"
    );
    let fresh = send(
        &store,
        &BRIEF,
        &req.clone().body(b"a new request"),
        counter.created(),
    )
    .await;
    assert_eq!(fresh.status, StatusCode::CREATED);
    assert!(!fresh.replayed());
    assert_eq!(counter.runs(), 2);
}

#[tokio::test(start_paused = true)]
async fn store_unreachable_at_claim_is_503_with_retry_after_and_nothing_runs() {
    let metrics = Metrics::install();
    let (failing, store) = failing();
    let counter = Counter::default();
    failing.outage();
    let reply = send(&store, &CONFIG, &Req::new("order-0013"), counter.created()).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.problem_type(), "urn:idem:problem:store-unavailable");
    assert!(reply.retry_after().is_some());
    assert_eq!(counter.runs(), 0);
    assert_eq!(metrics.outcome("store_unavailable"), 1);
    assert_eq!(failing.calls(Op::Claim), 1, "the claim is not retried");
}

/// A store that never answers: the claim's timeout turns it into a 503.
struct Hanging;

impl IdempotencyStore for Hanging {
    fn claim<'a>(
        &'a self,
        _: &'a Claim,
    ) -> idem_runtime::store::BoxFuture<'a, idem_runtime::store::StoreResult<ClaimOutcome>> {
        Box::pin(std::future::pending())
    }
    fn renew<'a>(
        &'a self,
        _: &'a Claim,
    ) -> idem_runtime::store::BoxFuture<'a, idem_runtime::store::StoreResult<bool>> {
        Box::pin(std::future::pending())
    }
    fn complete<'a>(
        &'a self,
        _: &'a Claim,
        _: &'a idem_runtime::StoredResponse,
    ) -> idem_runtime::store::BoxFuture<'a, idem_runtime::store::StoreResult<bool>> {
        Box::pin(std::future::pending())
    }
    fn fail<'a>(
        &'a self,
        _: &'a Claim,
    ) -> idem_runtime::store::BoxFuture<'a, idem_runtime::store::StoreResult<bool>> {
        Box::pin(std::future::pending())
    }
    fn release<'a>(
        &'a self,
        _: &'a Claim,
    ) -> idem_runtime::store::BoxFuture<'a, idem_runtime::store::StoreResult<bool>> {
        Box::pin(std::future::pending())
    }
    fn get<'a>(
        &'a self,
        _: &'a idem_runtime::RecordId,
    ) -> idem_runtime::store::BoxFuture<
        'a,
        idem_runtime::store::StoreResult<Option<idem_runtime::Record>>,
    > {
        Box::pin(std::future::pending())
    }
    fn purge(
        &self,
        _: usize,
    ) -> idem_runtime::store::BoxFuture<'_, idem_runtime::store::StoreResult<u64>> {
        Box::pin(std::future::pending())
    }
}

#[tokio::test(start_paused = true)]
async fn a_store_that_hangs_answers_503_within_the_store_timeout() {
    const QUICK: Config = Config::new().store_timeout(Duration::from_secs(2));
    let store = Store::new(Hanging);
    let counter = Counter::default();
    let started = tokio::time::Instant::now();
    let reply = send(&store, &QUICK, &Req::new("order-0014"), counter.created()).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    assert_eq!(counter.runs(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_5xx_from_the_handler_releases_the_claim_so_a_retry_runs_again() {
    let (store, counter) = (memory(), Counter::default());
    let req = Req::new("order-0015");
    let first = send(
        &store,
        &CONFIG,
        &req,
        counter.status(StatusCode::BAD_GATEWAY),
    )
    .await;
    assert_eq!(first.status, StatusCode::BAD_GATEWAY);
    assert_eq!(&first.body[..], b"handler says so");
    assert_eq!(state(&store, &req).await, None);
    let retry = send(&store, &CONFIG, &req, counter.created()).await;
    assert_eq!(retry.status, StatusCode::CREATED);
    assert_eq!(counter.runs(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_handler_answers_500_and_releases_the_claim() {
    let (store, counter) = (memory(), Counter::default());
    let req = Req::new("order-0016");
    let reply = send(&store, &CONFIG, &req, async {
        if true {
            panic!("the handler broke");
        }
        StatusCode::OK
    })
    .await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(reply.problem_type(), "urn:idem:problem:handler-panicked");
    assert_eq!(state(&store, &req).await, None);
    let retry = send(&store, &CONFIG, &req, counter.created()).await;
    assert_eq!(retry.status, StatusCode::CREATED);
}

#[tokio::test(start_paused = true)]
async fn a_body_over_the_storable_limit_is_sent_whole_and_the_claim_released() {
    const SMALL: Config = Config::new().max_stored_body(1024);
    let (store, counter) = (memory(), Counter::default());
    let req = Req::new("order-0017");
    let big = vec![b'x'; 4096];
    let runs = counter.0.clone();
    let reply = send(&store, &SMALL, &req, async move {
        runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        big
    })
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body.len(), 4096);
    assert_eq!(state(&store, &req).await, None);
    send(&store, &SMALL, &req, counter.created()).await;
    assert_eq!(counter.runs(), 2, "nothing was stored, so the retry ran");
}

#[tokio::test(start_paused = true)]
async fn a_client_that_hangs_up_does_not_stop_the_response_being_stored() {
    let (store, counter) = (memory(), Counter::default());
    let req = Req::new("order-0018");
    let started = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let request = tokio::spawn({
        let (store, req, started, release) =
            (store.clone(), req.clone(), started.clone(), release.clone());
        async move {
            send(&store, &CONFIG, &req, async move {
                started.notify_one();
                release.notified().await;
                (StatusCode::CREATED, "charged")
            })
            .await
        }
    });
    started.notified().await;
    request.abort(); // the connection is gone
    assert!(request.await.unwrap_err().is_cancelled());
    release.notify_one();
    // The handler's task finishes on its own; wait until its response is stored.
    while state(&store, &req).await != Some("COMPLETED") {
        tokio::task::yield_now().await;
    }
    let replay = send(&store, &CONFIG, &req, counter.created()).await;
    assert_eq!(&replay.body[..], b"charged");
    assert_eq!(counter.runs(), 0);
}

// ---- isolation and concurrency -------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn fifty_concurrent_duplicates_run_the_handler_once() {
    let (store, counter) = (memory(), Counter::default());
    let req = Req::new("order-0019");
    let gate = Arc::new(Notify::new());
    let runs = counter.0.clone();
    let first_gate = gate.clone();
    let handler = async move {
        runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        first_gate.notified().await;
        (StatusCode::CREATED, "once")
    };
    let mut tasks = vec![tokio::spawn({
        let (store, req) = (store.clone(), req.clone());
        async move { send(&store, &CONFIG, &req, handler).await }
    })];
    while counter.runs() == 0 {
        tokio::task::yield_now().await;
    }
    for _ in 0..49 {
        let (store, req, counter) = (store.clone(), req.clone(), counter.clone());
        tasks.push(tokio::spawn(async move {
            send(&store, &CONFIG, &req, counter.created()).await
        }));
    }
    // Let every duplicate meet the in-progress claim, then let the first finish.
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    gate.notify_one();
    let mut conflicts = 0;
    for task in tasks {
        let reply = task.await.unwrap();
        match reply.status {
            StatusCode::CREATED => assert_eq!(&reply.body[..], b"once"),
            StatusCode::CONFLICT => conflicts += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(counter.runs(), 1);
    assert_eq!(conflicts, 49);
}

#[tokio::test(start_paused = true)]
async fn two_keys_never_see_each_others_response() {
    let (store, counter) = (memory(), Counter::default());
    let a = Req::new("order-00a0");
    let b = Req::new("order-00b0");
    let ra = send(&store, &CONFIG, &a, counter.created()).await;
    let rb = send(&store, &CONFIG, &b, counter.created()).await;
    assert_ne!(ra.body, rb.body);
    assert_eq!(
        send(&store, &CONFIG, &a, counter.created()).await.body,
        ra.body
    );
    assert_eq!(
        send(&store, &CONFIG, &b, counter.created()).await.body,
        rb.body
    );
    assert_eq!(counter.runs(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_same_key_under_two_scopes_or_two_handlers_is_two_records() {
    let (store, counter) = (memory(), Counter::default());
    let base = Req::new("order-0020");
    let variants = [
        base.clone().scope("tenant-a"),
        base.clone().scope("tenant-b"),
        base.clone().handler("tests::refund_payment"),
    ];
    let mut bodies = Vec::new();
    for req in &variants {
        let reply = send(&store, &CONFIG, req, counter.created()).await;
        assert!(!reply.replayed());
        bodies.push(reply.body);
    }
    assert_eq!(counter.runs(), 3);
    for (req, body) in variants.iter().zip(&bodies) {
        assert_eq!(
            &send(&store, &CONFIG, req, counter.created()).await.body,
            body
        );
    }
}

// ---- section 3: persisting the response ----------------------------------------------------

#[tokio::test(start_paused = true)]
async fn complete_failing_2_of_5_attempts_ends_completed() {
    let metrics = Metrics::install();
    let (failing, store) = failing();
    let counter = Counter::default();
    let req = Req::new("order-0021");
    failing.fail_next(Op::Complete, 2);
    let reply = send(&store, &CONFIG, &req, counter.created()).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(failing.calls(Op::Complete), 3);
    assert_eq!(state(&store, &req).await, Some("COMPLETED"));
    assert_eq!(metrics.counter("idempotency_storage_retries_total", &[]), 2);
    assert_eq!(metrics.counter("idempotency_storage_failure_total", &[]), 0);
}

#[tokio::test(start_paused = true)]
async fn complete_failing_every_attempt_ends_failed_storage_counted_once() {
    let metrics = Metrics::install();
    let (failing, store) = failing();
    let counter = Counter::default();
    let req = Req::new("order-0022");
    failing.fail_always(Op::Complete);
    let reply = send(&store, &CONFIG, &req, counter.created()).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(
        &reply.body[..],
        b"{\"run\":1}",
        "the client got the handler's response"
    );
    assert_eq!(
        failing.calls(Op::Complete),
        5,
        "retries = 5 attempts in all"
    );
    assert_eq!(state(&store, &req).await, Some("FAILED_STORAGE"));
    assert_eq!(
        metrics.counter("idempotency_storage_failure_total", &[("handler", HANDLER)]),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn when_even_the_failed_storage_mark_fails_the_lease_makes_the_key_recoverable() {
    const SHORT: Config = Config::new().lease(Duration::from_secs(10)).retries(2);
    let (failing, store) = failing();
    let counter = Counter::default();
    let req = Req::new("order-0023");
    failing.fail_always(Op::Complete).fail_always(Op::Fail);
    send(&store, &SHORT, &req, counter.created()).await;
    assert_eq!(
        failing.calls(Op::Fail),
        2,
        "the mark is retried with the same budget"
    );
    assert_eq!(state(&store, &req).await, Some("IN_PROGRESS"));
    failing.heal_all();
    assert_eq!(
        send(&store, &SHORT, &req, counter.created()).await.status,
        StatusCode::CONFLICT
    );
    tokio::time::advance(Duration::from_secs(11)).await;
    let recovered = send(&store, &SHORT, &req, counter.created()).await;
    assert_eq!(recovered.status, StatusCode::CREATED);
    assert_eq!(state(&store, &req).await, Some("COMPLETED"));
    assert_eq!(counter.runs(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_permanent_store_error_is_not_retried() {
    let (failing, store) = failing();
    let counter = Counter::default();
    let req = Req::new("order-0024");
    failing.fail_next_permanently(Op::Complete, 1);
    send(&store, &CONFIG, &req, counter.created()).await;
    assert_eq!(failing.calls(Op::Complete), 1);
    assert_eq!(state(&store, &req).await, Some("FAILED_STORAGE"));
}

/// Records when each `complete` was attempted.
struct Clocked {
    inner: FailingStore<MemoryStore>,
    completes: std::sync::Mutex<Vec<tokio::time::Instant>>,
}

impl IdempotencyStore for Clocked {
    fn claim<'a>(
        &'a self,
        c: &'a Claim,
    ) -> idem_runtime::store::BoxFuture<'a, idem_runtime::store::StoreResult<ClaimOutcome>> {
        self.inner.claim(c)
    }
    fn renew<'a>(
        &'a self,
        c: &'a Claim,
    ) -> idem_runtime::store::BoxFuture<'a, idem_runtime::store::StoreResult<bool>> {
        self.inner.renew(c)
    }
    fn complete<'a>(
        &'a self,
        c: &'a Claim,
        r: &'a idem_runtime::StoredResponse,
    ) -> idem_runtime::store::BoxFuture<'a, idem_runtime::store::StoreResult<bool>> {
        self.completes
            .lock()
            .unwrap()
            .push(tokio::time::Instant::now());
        self.inner.complete(c, r)
    }
    fn fail<'a>(
        &'a self,
        c: &'a Claim,
    ) -> idem_runtime::store::BoxFuture<'a, idem_runtime::store::StoreResult<bool>> {
        self.inner.fail(c)
    }
    fn release<'a>(
        &'a self,
        c: &'a Claim,
    ) -> idem_runtime::store::BoxFuture<'a, idem_runtime::store::StoreResult<bool>> {
        self.inner.release(c)
    }
    fn get<'a>(
        &'a self,
        id: &'a idem_runtime::RecordId,
    ) -> idem_runtime::store::BoxFuture<
        'a,
        idem_runtime::store::StoreResult<Option<idem_runtime::Record>>,
    > {
        self.inner.get(id)
    }
    fn purge(
        &self,
        n: usize,
    ) -> idem_runtime::store::BoxFuture<'_, idem_runtime::store::StoreResult<u64>> {
        self.inner.purge(n)
    }
}

/// A memory store that answers at once (`claim_now`, `complete_now`), failing its first
/// `failures` completions there: the retries of a store that never has to be waited for.
struct AtOnce {
    inner: MemoryStore,
    failures: std::sync::atomic::AtomicU32,
    completes: std::sync::atomic::AtomicU32,
}

impl IdempotencyStore for AtOnce {
    fn claim<'a>(
        &'a self,
        c: &'a Claim,
    ) -> idem_runtime::store::BoxFuture<'a, idem_runtime::store::StoreResult<ClaimOutcome>> {
        self.inner.claim(c)
    }
    fn renew<'a>(
        &'a self,
        c: &'a Claim,
    ) -> idem_runtime::store::BoxFuture<'a, idem_runtime::store::StoreResult<bool>> {
        self.inner.renew(c)
    }
    fn complete<'a>(
        &'a self,
        _: &'a Claim,
        _: &'a idem_runtime::StoredResponse,
    ) -> idem_runtime::store::BoxFuture<'a, idem_runtime::store::StoreResult<bool>> {
        unreachable!("a store that answers at once is never waited for")
    }
    fn fail<'a>(
        &'a self,
        c: &'a Claim,
    ) -> idem_runtime::store::BoxFuture<'a, idem_runtime::store::StoreResult<bool>> {
        self.inner.fail(c)
    }
    fn release<'a>(
        &'a self,
        c: &'a Claim,
    ) -> idem_runtime::store::BoxFuture<'a, idem_runtime::store::StoreResult<bool>> {
        self.inner.release(c)
    }
    fn get<'a>(
        &'a self,
        id: &'a idem_runtime::RecordId,
    ) -> idem_runtime::store::BoxFuture<
        'a,
        idem_runtime::store::StoreResult<Option<idem_runtime::Record>>,
    > {
        self.inner.get(id)
    }
    fn purge(
        &self,
        n: usize,
    ) -> idem_runtime::store::BoxFuture<'_, idem_runtime::store::StoreResult<u64>> {
        self.inner.purge(n)
    }
    fn claim_now(&self, c: &Claim) -> Option<idem_runtime::store::StoreResult<ClaimOutcome>> {
        self.inner.claim_now(c)
    }
    fn complete_now(
        &self,
        c: &Claim,
        response: &Arc<idem_runtime::StoredResponse>,
    ) -> Option<idem_runtime::store::StoreResult<bool>> {
        use std::sync::atomic::Ordering::SeqCst;
        self.completes.fetch_add(1, SeqCst);
        let failing = self
            .failures
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Some(Err(idem_runtime::StoreError::transient("injected")));
        }
        self.inner.complete_now(c, response)
    }
}

#[tokio::test(start_paused = true)]
async fn a_store_answering_at_once_is_retried_with_backoff_like_any_other() {
    use std::sync::atomic::Ordering::SeqCst;
    for (failures, stored) in [(2, "COMPLETED"), (5, "FAILED_STORAGE")] {
        let metrics = Metrics::install();
        let at_once = Arc::new(AtOnce {
            inner: MemoryStore::new(),
            failures: failures.into(),
            completes: 0.into(),
        });
        let store = Store::new(at_once.clone()).with_jitter_seed(7);
        let counter = Counter::default();
        let req = Req::new("order-0031");
        let started = tokio::time::Instant::now();
        let reply = send(&store, &CONFIG, &req, counter.created()).await;
        assert_eq!(reply.status, StatusCode::CREATED);
        assert_eq!(
            at_once.completes.load(SeqCst),
            failures.min(5) + u32::from(failures < 5)
        );
        assert_eq!(state(&store, &req).await, Some(stored));
        let retries = u64::from(failures.min(4));
        assert_eq!(
            metrics.counter("idempotency_storage_retries_total", &[]),
            retries
        );
        assert!(
            started.elapsed() > Duration::ZERO,
            "the retries waited their backoff"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn backoff_delays_follow_the_formula_and_reach_the_cap() {
    const EIGHT: Config = Config::new().retries(8).lease(Duration::from_secs(600));
    let clocked = Arc::new(Clocked {
        inner: FailingStore::new(MemoryStore::new()),
        completes: Default::default(),
    });
    clocked.inner.fail_next(Op::Complete, 7);
    let store = Store::new(clocked.clone()).with_jitter_seed(99);
    let counter = Counter::default();
    let req = Req::new("order-0025");
    send(&store, &EIGHT, &req, counter.created()).await;
    assert_eq!(
        state(&store, &req).await,
        Some("COMPLETED"),
        "the 8th attempt succeeds"
    );

    let times = clocked.completes.lock().unwrap().clone();
    assert_eq!(times.len(), 8);
    let backoff = EIGHT.backoff_value();
    let jitter = idem_runtime::Jitter::seeded(99);
    for (n, pair) in times.windows(2).enumerate() {
        let observed = pair[1] - pair[0];
        let (low, high) = backoff.bounds(n as u32);
        let expected = backoff.delay(n as u32, &jitter);
        assert!(
            observed >= low && observed <= high + Duration::from_millis(1),
            "attempt {n}: {observed:?}"
        );
        // tokio timers have millisecond resolution.
        assert!(
            observed.abs_diff(expected) <= Duration::from_millis(1),
            "attempt {n}: {observed:?} vs {expected:?}"
        );
    }
    assert_eq!(
        times[1] - times[0],
        Duration::from_millis(100),
        "the first delay is `first`"
    );
    assert_eq!(
        backoff.bounds(5).1,
        Duration::from_secs(2),
        "the cap is reached at attempt 5"
    );
    assert!(
        times[7] - times[6] >= Duration::from_secs(1),
        "capped delays stay in [cap/2, cap]"
    );
}

#[tokio::test(start_paused = true)]
async fn the_store_handle_overrides_lease_and_retries_for_the_whole_process() {
    let failing = Arc::new(FailingStore::new(MemoryStore::new()));
    let store = Store::new(failing.clone())
        .override_retries(2)
        .override_lease(Duration::from_secs(2));
    let counter = Counter::default();
    failing.fail_always(Op::Complete);
    send(&store, &CONFIG, &Req::new("order-0026"), counter.created()).await;
    assert_eq!(failing.calls(Op::Complete), 2);
    let req = Req::new("order-0027");
    abandon(&store, &req, Duration::from_secs(2)).await;
    tokio::time::advance(Duration::from_secs(3)).await;
    failing.heal_all();
    assert_eq!(
        send(&store, &CONFIG, &req, counter.created()).await.status,
        StatusCode::CREATED
    );
}

#[tokio::test(start_paused = true)]
async fn the_handler_output_may_be_any_into_response() {
    let store = memory();
    let req = Req::new("order-0028");
    let result: Result<(StatusCode, &str), (StatusCode, String)> = Ok((StatusCode::ACCEPTED, "ok"));
    let reply = send(&store, &CONFIG, &req, async move {
        result.map(IntoResponse::into_response)
    })
    .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
}
