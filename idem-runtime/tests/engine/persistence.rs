//! docs/contract.md, "Persisting the response": every failed write after a run (completing,
//! the FAILED_STORAGE mark, the release) is retried up to `retries` attempts in all, whatever
//! the error's kind, with the stated backoff; the claim never is.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::StatusCode;
use idem_runtime::{Config, FailingStore, Gate, Hooked, MemoryStore, Op, Store, StoreHook};
use tokio::time::Instant;

use crate::support::*;
use crate::{CONFIG, abandon, failing};

/// One way of failing the next calls of an operation: transiently or permanently.
type Plan = fn(&FailingStore<MemoryStore>, Op, u64) -> &FailingStore<MemoryStore>;

/// Both kinds of store error, named for the assertion messages.
const KINDS: [(&str, Plan); 2] = [
    ("transient", FailingStore::fail_next),
    ("permanent", FailingStore::fail_next_permanently),
];

#[tokio::test(start_paused = true)]
async fn a_completion_failing_transiently_is_retried_until_stored() {
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
async fn a_completion_failing_permanently_is_retried_like_a_transient_one() {
    let metrics = Metrics::install();
    let (failing, store) = failing();
    let counter = Counter::default();
    let req = Req::new("order-0024");
    failing.fail_next_permanently(Op::Complete, 2);
    let reply = send(&store, &CONFIG, &req, counter.created()).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(failing.calls(Op::Complete), 3, "retried despite the kind");
    assert_eq!(state(&store, &req).await, Some("COMPLETED"));
    assert_eq!(metrics.counter("idempotency_storage_retries_total", &[]), 2);
    assert_eq!(metrics.counter("idempotency_storage_failure_total", &[]), 0);
}

#[tokio::test(start_paused = true)]
async fn a_completion_failing_every_attempt_ends_failed_storage_counted_once() {
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
async fn a_completion_failing_permanently_every_attempt_ends_failed_storage() {
    let metrics = Metrics::install();
    let (failing, store) = failing();
    let counter = Counter::default();
    let req = Req::new("order-0032");
    failing.fail_next_permanently(Op::Complete, u64::MAX);
    let reply = send(&store, &CONFIG, &req, counter.created()).await;
    assert_eq!(&reply.body[..], b"{\"run\":1}");
    assert_eq!(
        failing.calls(Op::Complete),
        5,
        "retries = 5 attempts in all"
    );
    assert_eq!(state(&store, &req).await, Some("FAILED_STORAGE"));
    assert_eq!(metrics.counter("idempotency_storage_retries_total", &[]), 4);
    assert_eq!(metrics.counter("idempotency_storage_failure_total", &[]), 1);
}

#[tokio::test(start_paused = true)]
async fn the_failed_storage_mark_is_retried_whatever_the_error() {
    for (kind, fail_next) in KINDS {
        let (failing, store) = failing();
        let req = Req::new("order-0033");
        failing.fail_always(Op::Complete);
        fail_next(&failing, Op::Fail, 2);
        send(&store, &CONFIG, &req, Counter::default().created()).await;
        assert_eq!(failing.calls(Op::Fail), 3, "{kind}");
        assert_eq!(state(&store, &req).await, Some("FAILED_STORAGE"), "{kind}");
    }
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
async fn a_release_is_retried_whatever_the_error() {
    for (kind, fail_next) in KINDS {
        let (failing, store) = failing();
        let counter = Counter::default();
        let req = Req::new("order-0034");
        fail_next(&failing, Op::Release, 2);
        let reply = send(
            &store,
            &CONFIG,
            &req,
            counter.status(StatusCode::BAD_GATEWAY),
        )
        .await;
        assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{kind}");
        assert_eq!(failing.calls(Op::Release), 3, "{kind}");
        assert_eq!(state(&store, &req).await, None, "{kind}: released");
    }
}

#[tokio::test(start_paused = true)]
async fn the_claim_is_never_retried_whatever_the_error() {
    for (kind, fail_next) in KINDS {
        let metrics = Metrics::install();
        let (failing, store) = failing();
        let counter = Counter::default();
        fail_next(&failing, Op::Claim, 1);
        let reply = send(&store, &CONFIG, &Req::new("order-0035"), counter.created()).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{kind}");
        assert_eq!(failing.calls(Op::Claim), 1, "{kind}");
        assert_eq!(counter.runs(), 0, "{kind}");
        assert_eq!(metrics.counter("idempotency_storage_retries_total", &[]), 0);
    }
}

/// The memory store answers every operation at once, on its one path, and the failing wrapper
/// fails that path: a failed claim is a 503, and the client's retry runs.
#[tokio::test(start_paused = true)]
async fn a_failing_store_fails_the_memory_stores_only_path() {
    let (failing, store) = failing();
    let counter = Counter::default();
    let req = Req::new("order-0036");
    failing.fail_next(Op::Claim, 1);
    let refused = send(&store, &CONFIG, &req, counter.created()).await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(counter.runs(), 0);
    let retry = send(&store, &CONFIG, &req, counter.created()).await;
    assert_eq!(retry.status, StatusCode::CREATED);
    assert_eq!(failing.calls(Op::Claim), 2);
    assert_eq!(counter.runs(), 1);
}

/// A store that answers at once is retried with backoff like one that has to be waited for.
#[tokio::test(start_paused = true)]
async fn a_store_answering_at_once_is_retried_with_backoff_like_any_other() {
    for (failures, stored) in [(2, "COMPLETED"), (5, "FAILED_STORAGE")] {
        let metrics = Metrics::install();
        let (failing, store) = failing();
        let counter = Counter::default();
        let req = Req::new("order-0031");
        failing.fail_next(Op::Complete, failures);
        let started = Instant::now();
        let reply = send(&store, &CONFIG, &req, counter.created()).await;
        assert_eq!(reply.status, StatusCode::CREATED);
        assert_eq!(failing.calls(Op::Complete), failures.min(4) + 1);
        assert_eq!(state(&store, &req).await, Some(stored));
        assert_eq!(
            metrics.counter("idempotency_storage_retries_total", &[]),
            failures.min(4)
        );
        assert!(
            started.elapsed() > Duration::ZERO,
            "the retries waited their backoff"
        );
    }
}

/// Records when each completion was attempted.
#[derive(Default)]
struct CompletionTimes(Mutex<Vec<Instant>>);

impl StoreHook for CompletionTimes {
    fn before(&self, op: Op) -> Gate {
        if op == Op::Complete {
            self.0.lock().unwrap().push(Instant::now());
        }
        Gate::Pass
    }
}

#[tokio::test(start_paused = true)]
async fn backoff_delays_follow_the_formula_and_reach_the_cap() {
    const EIGHT: Config = Config::new().retries(8).lease(Duration::from_secs(600));
    let clocked = Arc::new(Hooked::with(
        FailingStore::new(MemoryStore::new()),
        CompletionTimes::default(),
    ));
    clocked.inner().fail_next(Op::Complete, 7);
    let store = Store::new(clocked.clone()).with_jitter_seed(99);
    let counter = Counter::default();
    let req = Req::new("order-0025");
    send(&store, &EIGHT, &req, counter.created()).await;
    assert_eq!(
        state(&store, &req).await,
        Some("COMPLETED"),
        "the 8th attempt succeeds"
    );

    let times = clocked.hook().0.lock().unwrap().clone();
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
