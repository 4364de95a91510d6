//! docs/contract.md, "What a request meets": one test per row of the table.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use idem_runtime::{Config, Gate, Hooked, MemoryStore, Op, RequestHead, Store, StoreHook};
use tokio::sync::Notify;

use crate::support::*;
use crate::{CONFIG, failing, memory};

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
    let head = RequestHead::new(head_headers, req.head().fingerprint());
    let response = idem_runtime::__private::run(
        store.clone(),
        &CONFIG,
        req.target(),
        head,
        counter.created(),
    )
    .await;
    let reply = Answer::read(response).await;
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

/// A store that never answers.
struct Hang;

impl StoreHook for Hang {
    fn before(&self, _: Op) -> Gate {
        Gate::Hang
    }
}

#[tokio::test(start_paused = true)]
async fn a_store_that_hangs_answers_503_within_the_store_timeout() {
    const QUICK: Config = Config::new().store_timeout(Duration::from_secs(2));
    let store = Store::new(Hooked::with(MemoryStore::new(), Hang));
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
