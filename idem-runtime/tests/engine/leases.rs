//! docs/contract.md, "What a request meets", on leases: a live claim blocks its duplicates, an
//! abandoned one is taken over by exactly one retry, a live process keeps its claim however
//! long or however blocking its handler, and a claim found lost is counted and logged.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::StatusCode;
use idem_runtime::{Config, Op};
use tokio::sync::Notify;

use crate::support::*;
use crate::{CONFIG, abandon, failing, memory};

#[tokio::test(start_paused = true)]
async fn same_key_in_progress_with_a_live_lease_is_409_with_a_short_retry_after() {
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
        Some(1),
        "no run has completed yet: a second, not the 30 s left on the lease"
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

/// A duplicate of a slow request is answered 409 at once, told to come back after the
/// request's usual run time, and within the lease.
async fn conflict_hint(config: &'static Config, run: Duration, key: &str) -> Option<u64> {
    let store = memory();
    let took = Req::new(&format!("{key}-before"));
    send(&store, config, &took, async move {
        tokio::time::sleep(run).await;
        (StatusCode::CREATED, "done")
    })
    .await;
    let req = Req::new(key);
    let (started, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let first = tokio::spawn({
        let (store, req, started, release) =
            (store.clone(), req.clone(), started.clone(), release.clone());
        async move {
            send(&store, config, &req, async move {
                started.notify_one();
                release.notified().await;
                (StatusCode::CREATED, "first")
            })
            .await
        }
    });
    started.notified().await;
    let reply = send(&store, config, &req, Counter::default().created()).await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    release.notify_one();
    first.await.unwrap();
    reply.retry_after()
}

#[tokio::test(start_paused = true)]
async fn the_409_hint_is_the_usual_run_time_within_the_lease() {
    assert_eq!(
        conflict_hint(&CONFIG, Duration::from_millis(4200), "order-hint-1").await,
        Some(5),
        "a 4.2 s run: come back in 5 s"
    );
    static SHORT_LEASE: Config = CONFIG.lease(Duration::from_secs(3));
    assert_eq!(
        conflict_hint(&SHORT_LEASE, Duration::from_secs(8), "order-hint-2").await,
        Some(3),
        "never more than the lease has left"
    );
    static FIXED: Config = CONFIG.retry_after(Duration::from_secs(2));
    assert_eq!(
        conflict_hint(&FIXED, Duration::from_secs(8), "order-hint-3").await,
        Some(2),
        "the handler's own retry_after"
    );
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

/// Renewals run in the store's lease keeper, apart from the handler's poll: a handler that
/// blocks its worker thread (a synchronous call) for three leases still holds its claim.
/// Real threads and real time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_blocks_its_thread_keeps_its_lease() {
    const ONE_SECOND: Config = Config::new().lease(Duration::from_secs(1));
    let (store, counter) = (memory(), Counter::default());
    let req = Req::new("order-0029");
    let (started_tx, started) = tokio::sync::oneshot::channel();
    let runs = counter.0.clone();
    let first = tokio::spawn({
        let (store, req) = (store.clone(), req.clone());
        async move {
            send(&store, &ONE_SECOND, &req, async move {
                runs.fetch_add(1, Ordering::SeqCst);
                started_tx.send(()).unwrap();
                std::thread::sleep(Duration::from_secs(3));
                (StatusCode::CREATED, "first")
            })
            .await
        }
    });
    started.await.unwrap();
    let duplicate = tokio::spawn({
        let (store, req, counter) = (store.clone(), req.clone(), counter.clone());
        async move {
            // Past the first lease, well before the handler returns.
            tokio::time::sleep(Duration::from_millis(1600)).await;
            send(&store, &ONE_SECOND, &req, counter.created()).await
        }
    });
    let duplicate = duplicate.await.unwrap();
    assert_eq!(
        duplicate.status,
        StatusCode::CONFLICT,
        "the blocked handler's lease was renewed"
    );
    assert_eq!(&first.await.unwrap().body[..], b"first");
    let replay = send(&store, &ONE_SECOND, &req, counter.created()).await;
    assert!(replay.replayed());
    assert_eq!(&replay.body[..], b"first");
    assert_eq!(counter.runs(), 1);
}

/// A claim whose renewals failed until its lease ran out is taken over; the next renewal of
/// the first run finds it lost, which is counted and logged, and the first run's result is
/// not stored over the taker's.
#[tokio::test(start_paused = true)]
async fn a_lease_found_lost_is_counted_and_logged_and_its_result_not_stored() {
    const SHORT: Config = Config::new().lease(Duration::from_secs(3));
    let (metrics, logs) = (Metrics::install(), Logs::install());
    let (failing, store) = failing();
    let counter = Counter::default();
    let req = Req::new("order-0030");
    let started = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    failing.fail_always(Op::Renew);
    let first = tokio::spawn({
        let (store, req, started, release) =
            (store.clone(), req.clone(), started.clone(), release.clone());
        async move {
            send(&store, &SHORT, &req, async move {
                started.notify_one();
                release.notified().await;
                (StatusCode::CREATED, "first")
            })
            .await
        }
    });
    started.notified().await;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let taker = send(&store, &SHORT, &req, counter.created()).await;
    assert_eq!(taker.status, StatusCode::CREATED, "the lease ran out");
    assert_eq!(metrics.outcome("recovered"), 1);

    failing.heal(Op::Renew);
    tokio::time::sleep(Duration::from_secs(1)).await; // the first run's next renewal
    assert_eq!(
        metrics.counter("idempotency_lease_lost_total", &[("handler", HANDLER)]),
        1
    );
    assert_eq!(logs.warnings("lease was lost"), 1);

    release.notify_one();
    let first = first.await.unwrap();
    assert_eq!(
        &first.body[..],
        b"first",
        "its client still gets its response"
    );
    let replay = send(&store, &SHORT, &req, counter.created()).await;
    assert!(replay.replayed());
    assert_eq!(replay.body, taker.body, "the taker's result stands");
    assert_eq!(counter.runs(), 1);
    assert_eq!(
        metrics.counter("idempotency_lease_lost_total", &[]),
        1,
        "a lost claim is not renewed again"
    );
}

#[tokio::test]
async fn the_lease_keeper_does_not_keep_a_dropped_store_alive() {
    let backend = Arc::new(idem_runtime::MemoryStore::new());
    let store = idem_runtime::Store::new(backend.clone());
    let counter = Counter::default();
    let reply = send(&store, &CONFIG, &Req::new("order-0100"), counter.created()).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    drop(store);
    // The keeper started for that run is still alive (it retires when idle), yet the store's
    // records are freed with its last handle.
    assert_eq!(Arc::strong_count(&backend), 1);
}
