//! The reliability suite on Redis (README, "Guarantees"): the real `payments` binary with
//! `IDEM_STORE=redis://…` (plain mode, payments in the same Redis), each test on a throwaway
//! server (or cluster) of its own, attacked with duplicate storms, crashes of the app and of
//! Redis, and failing completions. Each test prints one summary line of its figures.

mod support;

use std::time::{Duration, Instant};

use idem_examples::client::Client;
use idem_runtime::{IdempotencyKey, InspectedState, Inspection, RecordId, RedisStore, Store};
use idem_tests::redis::{self as servers, Server};
use support::db::until;
use support::resp_proxy::RespProxy;
use support::{Service, outcome_count, storage_failures, storm};

const EUR: &str = r#"{"amount":1200,"currency":"EUR"}"#;
/// The handler under which `POST /payments` keeps its records in plain mode.
const HANDLER: &str = "idem_examples::app::create_payment";

/// What an operator sees of `key`'s record, read straight from the server.
async fn inspect(server: &Server, key: &str) -> Option<Inspection> {
    let store = Store::new(RedisStore::connect(&server.url()).await.expect("connect"));
    let key = IdempotencyKey::parse(key).expect("a valid key");
    store
        .inspect(&RecordId::new("", HANDLER, key))
        .await
        .expect("inspect")
}

async fn storm_on(server: &Server, what: &str) {
    let url = server.url();
    let env = [("IDEM_STORE", url.as_str()), ("PAYMENTS_LATENCY_MS", "50")];
    let (a, b) = tokio::join!(Service::start(&env), Service::start(&env));
    let clients = [a.client, b.client];
    let (sent, took) = storm::send(clients, "storm-key").await;
    let statuses = storm::check(&sent, clients).await;
    let count = clients[0].payment_count().await.unwrap();
    assert_eq!(count, storm::KEYS, "one payment per key");
    assert_eq!(clients[1].payment_count().await.unwrap(), storm::KEYS);
    println!(
        "duplicate storm on {what}: {} keys x {} copies over 2 instances in {took:?}; \
         payments created {count}; statuses {statuses:?}",
        storm::KEYS,
        storm::COPIES,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_storm_across_two_instances_on_redis_runs_each_key_once() {
    let Some(server) = servers::own_server().await else {
        return;
    };
    storm_on(&server, "Redis").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_storm_across_two_instances_on_a_redis_cluster_runs_each_key_once() {
    let Some(cluster) = servers::own_cluster().await else {
        return;
    };
    storm_on(&cluster, "a 3-master Redis Cluster").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_is_503_and_the_service_recovers_on_its_own() {
    let Some(server) = servers::own_server().await else {
        return;
    };
    let url = server.url();
    // Redis refuses connections at once while it is down, so a completion in flight when it
    // dies fails fast: 20 attempts (backoff capped at 2 s, about 30 s in all) carry it through
    // the outage, so that every 201 a client saw is stored. New requests meet 503 meanwhile.
    let service = Service::start(&[
        ("IDEM_STORE", &url),
        ("PAYMENTS_LATENCY_MS", "20"),
        ("IDEM_RETRIES", "20"),
    ])
    .await;
    support::outage::run(service.client, "redis", server.kill(), server.restart()).await;
}

/// Whether `key` is claimed and its lease has run out, by the server's clock.
async fn abandoned(server: &Server, key: &str) -> bool {
    matches!(
        inspect(server, key).await.map(|seen| seen.state),
        Some(InspectedState::InProgress { lease_remaining }) if lease_remaining.is_zero()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_left_by_a_killed_process_is_taken_over_once_after_its_lease() {
    let Some(server) = servers::own_server().await else {
        return;
    };
    let url = server.url();
    let slow = [
        ("IDEM_STORE", url.as_str()),
        ("IDEM_LEASE", "3s"),
        ("PAYMENTS_LATENCY_MS", "60000"),
    ];
    let doomed = Service::start(&slow).await;
    let client = doomed.client;
    let in_flight = tokio::spawn(async move { client.pay(Some("crash-key-0001"), EUR).await });
    until(
        Duration::from_secs(10),
        "the slow request claims its key",
        || {
            let server = &server;
            async move { inspect(server, "crash-key-0001").await.is_some() }
        },
    )
    .await;
    let started = Instant::now();
    doomed.kill().await;
    assert!(
        in_flight.await.unwrap().is_err(),
        "the killed process never answered"
    );

    let restarted = Service::start(&[("IDEM_STORE", &url), ("IDEM_LEASE", "3s")]).await;
    let client = restarted.client;
    let early = client.pay(Some("crash-key-0001"), EUR).await.unwrap();
    assert_eq!(
        early.status,
        409,
        "before the lease expires: {}",
        early.text()
    );
    assert!(early.header("retry-after").is_some());
    assert_eq!(client.payment_count().await.unwrap(), 0);

    // Waiting on the server's clock is the point of the test.
    until(
        Duration::from_secs(10),
        "the dead claim's lease expires",
        || {
            let server = &server;
            async move { abandoned(server, "crash-key-0001").await }
        },
    )
    .await;
    // Eight retries at once: one takes the claim over and runs, the others wait their turn.
    let retries = futures_join(client, 8).await;
    let ran: Vec<_> = retries
        .iter()
        .filter(|r| r.status == 201 && !r.replayed())
        .collect();
    assert_eq!(ran.len(), 1, "exactly one retry took the claim over");
    for other in &retries {
        assert!(
            other.status == 409 || (other.status == 201 && other.body == ran[0].body),
            "{} {}",
            other.status,
            other.text()
        );
    }
    let replay = client.pay(Some("crash-key-0001"), EUR).await.unwrap();
    assert!(replay.replayed());
    assert_eq!(replay.body, ran[0].body);
    let payments = client.payment_count().await.unwrap();
    assert_eq!(payments, 1, "the handler ran once after the crash");
    assert_eq!(outcome_count(&client, "recovered").await, 1);
    println!(
        "crash on redis: 11 requests (1 killed in flight); 409 x1 before the lease, then 8 at \
         once (1 ran); payments created {payments}; recovered {:?} after the kill (lease 3s)",
        started.elapsed()
    );
}

/// `n` copies of the crash key's request, sent at once.
async fn futures_join(client: Client, n: usize) -> Vec<idem_examples::client::Reply> {
    let mut copies = tokio::task::JoinSet::new();
    for _ in 0..n {
        copies.spawn(async move { client.pay(Some("crash-key-0001"), EUR).await.unwrap() });
    }
    copies.join_all().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_completion_is_retried_then_marked_failed_storage_and_recovered() {
    let Some(server) = servers::own_server().await else {
        return;
    };
    let upstream = format!("127.0.0.1:{}", server.ports[0]).parse().unwrap();
    let proxy = RespProxy::start(upstream).await;
    let service = Service::start(&[("IDEM_STORE", &proxy.url()), ("IDEM_RETRIES", "3")]).await;
    let client = service.client;
    let status = |key: &'static str| {
        let server = &server;
        async move {
            inspect(server, key)
                .await
                .map(|s| (s.state, s.response_status))
        }
    };

    // A first payment loads the scripts, so that each attempt below is one EVALSHA.
    let warm = client.pay(Some("storage-warm-0001"), EUR).await.unwrap();
    assert_eq!(warm.status, 201);

    // Fewer failures than attempts: the third attempt stores the response.
    proxy.fail_next_completions(2);
    let stored = client.pay(Some("storage-key-0001"), EUR).await.unwrap();
    assert_eq!(stored.status, 201, "{}", stored.text());
    assert_eq!(
        proxy.completion_attempts(),
        3,
        "two failed, the third stored"
    );
    let completed = Some((InspectedState::Completed, Some(201)));
    assert_eq!(status("storage-key-0001").await, completed);
    let replay = client.pay(Some("storage-key-0001"), EUR).await.unwrap();
    assert!(replay.replayed());
    assert_eq!(replay.body, stored.body);
    assert_eq!(storage_failures(&client).await, 0);

    // More failures than attempts: FAILED_STORAGE, counted, and the client still has its 201.
    proxy.fail_next_completions(1_000);
    let lost = client.pay(Some("storage-key-0002"), EUR).await.unwrap();
    assert_eq!(
        lost.status, 201,
        "the handler's response reaches the client"
    );
    assert!(!lost.replayed());
    assert_eq!(
        proxy.completion_attempts(),
        3,
        "retries = 3 attempts in all"
    );
    let failed = Some((InspectedState::FailedStorage, None));
    assert_eq!(status("storage-key-0002").await, failed);
    assert_eq!(storage_failures(&client).await, 1);
    assert_eq!(client.payment_count().await.unwrap(), 3);

    // Redis takes completions again: the next request runs the handler again and is stored.
    proxy.fail_next_completions(0);
    let rerun = client.pay(Some("storage-key-0002"), EUR).await.unwrap();
    assert_eq!(rerun.status, 201);
    assert!(!rerun.replayed(), "FAILED_STORAGE runs the handler again");
    assert_ne!(rerun.json()["id"], lost.json()["id"]);
    assert_eq!(status("storage-key-0002").await, completed);
    let replay = client.pay(Some("storage-key-0002"), EUR).await.unwrap();
    assert!(replay.replayed());
    assert_eq!(replay.body, rerun.body);
    let payments = client.payment_count().await.unwrap();
    assert_eq!(payments, 4);
    assert_eq!(outcome_count(&client, "recovered").await, 1);
    println!(
        "storage failure on redis: 8 requests; completion attempts 3 (2 failed) then 3 (all \
         failed); storage failures counted 1; payments created {payments}; statuses 201 x8 \
         (3 replays)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactional_mode_on_redis_is_a_clear_startup_error() {
    let Some(server) = servers::server().await else {
        return;
    };
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_payments"))
        .env("IDEM_STORE", server.url())
        .env("IDEM_MODE", "transactional")
        .env("BIND", "127.0.0.1:0")
        .output()
        .await
        .expect("run payments");
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("redis store has no transaction"), "{said}");
}
