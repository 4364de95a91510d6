//! The reliability suite on Redis (README, "Guarantees"): the real `payments` binary with
//! `IDEM_STORE=redis://…` (plain mode, payments in the same Redis), each test on a throwaway
//! server (or cluster) of its own, attacked with duplicate storms, crashes of the app and of
//! Redis, and failing completions. Each test prints one summary line of its figures.

mod support;

use idem_examples::app::GUEST;
use idem_runtime::{
    FAILED_STORAGE_STATUS, IdempotencyKey, InspectedState, Inspection, RecordId, RedisStore, Store,
};
use idem_tests::redis::{self as servers, Server};
use support::crash::{self, Leases};
use support::failing_completion::{self, Completions};
use support::resp_proxy::RespProxy;
use support::{Service, storm};

/// The handler under which `POST /payments` keeps its records in plain mode.
const HANDLER: &str = "idem_examples::app::create_payment";

/// What an operator sees of `key`'s record, read straight from the server (the tests' requests
/// carry no credentials: their caller, the scope of their keys, is the example's guest).
async fn inspect(server: &Server, key: &str) -> Option<Inspection> {
    let store = Store::new(RedisStore::connect(&server.url()).await.expect("connect"));
    let key = IdempotencyKey::parse(key).expect("a valid key");
    store
        .inspect(&RecordId::new(GUEST, HANDLER, key))
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

/// A Redis server, read for the lease of a claim in progress.
struct Hashes<'a>(&'a Server);

impl Leases for Hashes<'_> {
    async fn lease_left(&self, key: &str) -> Option<f64> {
        match inspect(self.0, key).await?.state {
            InspectedState::InProgress { lease_remaining } => Some(lease_remaining.as_secs_f64()),
            _ => None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_left_by_a_killed_process_is_taken_over_once_after_its_lease() {
    let Some(server) = servers::own_server().await else {
        return;
    };
    crash::run(&server.url(), &Hashes(&server), "redis").await;
}

/// Redis behind a proxy that refuses completions, read straight from the server.
struct Refusing<'a> {
    proxy: RespProxy,
    server: &'a Server,
}

impl Completions for Refusing<'_> {
    async fn fail_next(&self, n: u64) {
        self.proxy.fail_next_completions(n);
    }

    async fn attempts(&self) -> u64 {
        self.proxy.completion_attempts()
    }

    async fn status(&self, key: &str) -> Option<i32> {
        let seen = inspect(self.server, key)
            .await
            .expect("the key has a record");
        match seen.state {
            InspectedState::InProgress { .. } => None,
            InspectedState::FailedStorage => Some(FAILED_STORAGE_STATUS),
            InspectedState::Completed => seen.response_status.map(i32::from),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_completion_is_retried_then_marked_failed_storage_and_recovered() {
    let Some(server) = servers::own_server().await else {
        return;
    };
    let upstream = format!("127.0.0.1:{}", server.ports[0]).parse().unwrap();
    let proxy = RespProxy::start(upstream).await;
    let service = Service::start(&[("IDEM_STORE", &proxy.url()), ("IDEM_RETRIES", "3")]).await;
    let refusing = Refusing {
        proxy,
        server: &server,
    };
    failing_completion::run(service.client, &refusing, "redis").await;
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
