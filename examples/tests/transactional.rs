//! Transactional mode on the real `payments` binary (docs/contract.md, "Transactional mode"):
//! killed at any instant, fenced, refused a commit or failing, a key ends with exactly one
//! payment, or none and a free key, on Postgres and on a SQLite file. Each test prints one
//! summary line (run with `--nocapture` to see them).

mod support;

use std::time::{Duration, Instant};

use idem_examples::client::Client;
use support::db::{Db, Kind, until};
use support::{Service, storm};

const EUR: &str = r#"{"amount":1200,"currency":"EUR"}"#;
const PROBLEM: &str = "application/problem+json";

/// The service's environment on `db` in transactional mode, plus `extra`.
fn env<'a>(url: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![("IDEM_STORE", url), ("IDEM_MODE", "transactional")];
    env.extend_from_slice(extra);
    env
}

/// `idempotency_storage_failure_total` summed over its labels, from `/metrics`.
async fn storage_failures(client: &Client) -> u64 {
    let text = client.get("/metrics").await.unwrap().text();
    text.lines()
        .filter(|l| l.starts_with("idempotency_storage_failure_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// A key left claimed by a killed process: 409 while its lease is live, then one run, then
/// replays; the key ends with exactly one payment.
async fn recovers_once(db: &Db, key: &str) -> Duration {
    let url = db.url();
    let service = Service::start(&env(&url, &[("IDEM_LEASE", "2s")])).await;
    let client = service.client;
    assert_eq!(db.payments().await, 0, "the killed run left no payment");
    let started = Instant::now();
    until(
        Duration::from_secs(15),
        "the dead claim's lease expires",
        || db.lease_expired(key),
    )
    .await;
    let recovered = client.pay(Some(key), EUR).await.unwrap();
    assert_eq!(recovered.status, 201, "{}", recovered.text());
    assert!(!recovered.replayed());
    for _ in 0..3 {
        let again = client.pay(Some(key), EUR).await.unwrap();
        assert!(again.replayed(), "{} {}", again.status, again.text());
        assert_eq!(again.body, recovered.body);
    }
    assert_eq!(client.payment_count().await.unwrap(), 1, "one payment");
    started.elapsed()
}

// ---- killed during the handler, before its write ------------------------------------------

async fn killed_before_the_write(kind: Kind) {
    let Some(db) = Db::open(kind).await else {
        return;
    };
    let url = db.url();
    let slow = env(
        &url,
        &[("IDEM_LEASE", "2s"), ("PAYMENTS_LATENCY_MS", "60000")],
    );
    let doomed = Service::start(&slow).await;
    let client = doomed.client;
    let in_flight = tokio::spawn(async move { client.pay(Some("kill-before-01"), EUR).await });
    until(
        Duration::from_secs(10),
        "the request claims its key",
        || db.claimed("kill-before-01"),
    )
    .await;
    doomed.kill().await;
    assert!(
        in_flight.await.unwrap().is_err(),
        "the killed process never answered"
    );
    let took = recovers_once(&db, "kill-before-01").await;
    println!("{kind:?}: killed before the write; recovered in {took:?}; payments 1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_killed_during_the_handler_before_its_write_pays_once() {
    killed_before_the_write(Kind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_killed_during_the_handler_before_its_write_pays_once() {
    killed_before_the_write(Kind::Sqlite).await;
}

// ---- killed after its write, before the commit --------------------------------------------

/// Postgres: the stored-response `UPDATE` sleeps a minute while armed; the server checks every
/// 100 ms whether the client is gone, as a server configured to notice dead clients would.
const SLOW_RESPONSE_PG: &str = "
CREATE TABLE slow_control (armed int NOT NULL);
INSERT INTO slow_control VALUES (1);
CREATE FUNCTION slow_response() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT armed FROM slow_control) = 1 THEN PERFORM pg_sleep(60); END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER slow_response BEFORE UPDATE ON idempotency_keys FOR EACH ROW
    WHEN (NEW.response_status IS NOT NULL) EXECUTE FUNCTION slow_response();";

/// SQLite has no sleep: while armed, the stored-response `UPDATE` counts a three-way join of
/// 3,000 rows (27 billion rows, hours of work), holding the write lock the payment took.
const SLOW_RESPONSE_SQLITE: &str = "
CREATE TABLE slow_control (armed INTEGER NOT NULL);
INSERT INTO slow_control VALUES (1);
CREATE TABLE spin (n INTEGER NOT NULL);
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3000)
INSERT INTO spin SELECT x FROM c;
CREATE TRIGGER slow_response BEFORE UPDATE ON idempotency_keys
WHEN NEW.response_status IS NOT NULL AND (SELECT armed FROM slow_control) = 1
BEGIN SELECT count(*) FROM spin a, spin b, spin c WHERE a.n + b.n + c.n < 0; END;";

/// Whether the owner is inside its stored-response `UPDATE`, after its payment's `INSERT`.
async fn waiting_in_the_commit(db: &Db) -> bool {
    match db {
        Db::Postgres(_) => {
            db.number(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event = 'PgSleep'",
            )
            .await
                > 0
        }
        // The payment's INSERT took the write lock; held twice in a row, it is not a renewal's.
        Db::Sqlite(_) => {
            db.sqlite_write_locked().await && {
                tokio::time::sleep(Duration::from_millis(50)).await;
                db.sqlite_write_locked().await
            }
        }
    }
}

async fn killed_after_the_write(kind: Kind) {
    let Some(db) = Db::open(kind).await else {
        return;
    };
    let url = db.url();
    if let Db::Postgres(test_db) = &db {
        let check = format!(
            "ALTER DATABASE {} SET client_connection_check_interval = '100ms'",
            test_db.name
        );
        db.exec(&check).await;
    }
    let doomed = Service::start(&env(&url, &[("IDEM_LEASE", "2s")])).await;
    db.exec(match kind {
        Kind::Postgres => SLOW_RESPONSE_PG,
        Kind::Sqlite => SLOW_RESPONSE_SQLITE,
    })
    .await;
    let client = doomed.client;
    let in_flight = tokio::spawn(async move { client.pay(Some("kill-after-001"), EUR).await });
    until(
        Duration::from_secs(20),
        "the owner waits in its commit",
        || waiting_in_the_commit(&db),
    )
    .await;
    doomed.kill().await;
    assert!(
        in_flight.await.unwrap().is_err(),
        "the killed process never answered"
    );
    if kind == Kind::Postgres {
        until(
            Duration::from_secs(10),
            "the server ends the dead session",
            || async { !waiting_in_the_commit(&db).await },
        )
        .await;
    }
    db.exec("UPDATE slow_control SET armed = 0").await;
    let took = recovers_once(&db, "kill-after-001").await;
    println!(
        "{kind:?}: killed after the write, before the commit; recovered in {took:?}; payments 1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_killed_after_its_write_before_the_commit_pays_once() {
    killed_after_the_write(Kind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_killed_after_its_write_before_the_commit_pays_once() {
    killed_after_the_write(Kind::Sqlite).await;
}

// ---- fencing: an owner taken over commits nothing -----------------------------------------

/// Renewals (an `UPDATE` that keeps the owner and the in-progress state) fail, so a live
/// owner's lease runs out while its handler runs; takeovers and completions pass.
const STALL_RENEWALS_PG: &str = "
CREATE FUNCTION stall_renewal() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'renewal refused by the test'; END $$;
CREATE TRIGGER stall_renewal BEFORE UPDATE ON idempotency_keys FOR EACH ROW
    WHEN (NEW.owner_token = OLD.owner_token AND NEW.response_status IS NULL
          AND OLD.response_status IS NULL)
    EXECUTE FUNCTION stall_renewal();";

const STALL_RENEWALS_SQLITE: &str = "
CREATE TRIGGER stall_renewal BEFORE UPDATE ON idempotency_keys
WHEN NEW.owner_token = OLD.owner_token AND NEW.response_status IS NULL
     AND OLD.response_status IS NULL
BEGIN SELECT RAISE(ABORT, 'renewal refused by the test'); END;";

async fn fenced_owner(kind: Kind) {
    let Some(db) = Db::open(kind).await else {
        return;
    };
    let url = db.url();
    let env = env(
        &url,
        &[("IDEM_LEASE", "1s"), ("PAYMENTS_LATENCY_MS", "6000")],
    );
    let (owner, taker) = tokio::join!(Service::start(&env), Service::start(&env));
    db.exec(match kind {
        Kind::Postgres => STALL_RENEWALS_PG,
        Kind::Sqlite => STALL_RENEWALS_SQLITE,
    })
    .await;
    let client = owner.client;
    let first = tokio::spawn(async move { client.pay(Some("fenced-key-01"), EUR).await });
    until(
        Duration::from_secs(10),
        "the owner's lease runs out",
        || db.lease_expired("fenced-key-01"),
    )
    .await;
    let client = taker.client;
    let second = tokio::spawn(async move { client.pay(Some("fenced-key-01"), EUR).await });
    until(
        Duration::from_secs(10),
        "the second request takes over",
        || db.taken_over("fenced-key-01"),
    )
    .await;
    assert!(!first.is_finished(), "taken over while the owner still ran");

    let fenced = first.await.unwrap().unwrap();
    assert_eq!(fenced.status, 503, "{}", fenced.text());
    assert_eq!(fenced.json()["type"], "urn:idem:problem:commit-failed");
    assert!(fenced.header("retry-after").is_some());
    let won = second.await.unwrap().unwrap();
    assert_eq!(won.status, 201, "{}", won.text());
    assert!(!won.replayed());
    let listed = taker.client.get("/payments").await.unwrap().json();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(
        listed[0],
        won.json(),
        "the taker's payment is the one in the database"
    );
    let retried = owner.client.pay(Some("fenced-key-01"), EUR).await.unwrap();
    assert!(retried.replayed());
    assert_eq!(
        retried.body, won.body,
        "the owner's retry gets the taker's answer"
    );
    println!("{kind:?}: fenced owner answered 503 commit-failed; taker 201; payments 1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_an_owner_taken_over_while_running_commits_nothing() {
    fenced_owner(Kind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_an_owner_taken_over_while_running_commits_nothing() {
    fenced_owner(Kind::Sqlite).await;
}

// ---- a commit that fails ------------------------------------------------------------------

async fn failed_commit(kind: Kind) {
    let Some(db) = Db::open(kind).await else {
        return;
    };
    let url = db.url();
    let service = Service::start(&env(&url, &[])).await;
    let client = service.client;
    db.refuse_answers().await;
    let refused = client.pay(Some("refused-key-01"), EUR).await.unwrap();
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert_eq!(refused.header("content-type"), Some(PROBLEM));
    assert_eq!(refused.json()["type"], "urn:idem:problem:commit-failed");
    assert!(refused.header("retry-after").is_some());
    assert_eq!(db.payments().await, 0, "the payment rolled back");
    assert_eq!(db.records().await, 0, "the key is free");
    assert_eq!(storage_failures(&client).await, 1);

    db.accept_answers().await;
    let stored = client.pay(Some("refused-key-01"), EUR).await.unwrap();
    assert_eq!(stored.status, 201, "{}", stored.text());
    assert!(!stored.replayed());
    let replay = client.pay(Some("refused-key-01"), EUR).await.unwrap();
    assert!(replay.replayed());
    assert_eq!(replay.body, stored.body);
    assert_eq!(client.payment_count().await.unwrap(), 1);
    println!("{kind:?}: failed commit answered 503 commit-failed; the retry ran; payments 1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_failed_commit_is_503_and_the_next_request_runs() {
    failed_commit(Kind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_failed_commit_is_503_and_the_next_request_runs() {
    failed_commit(Kind::Sqlite).await;
}

// ---- a 5xx --------------------------------------------------------------------------------

async fn server_error(kind: Kind) {
    let Some(db) = Db::open(kind).await else {
        return;
    };
    let url = db.url();
    let service = Service::start(&env(&url, &[])).await;
    let client = service.client;
    let failed = client
        .pay(
            Some("error-key-0001"),
            r#"{"amount":1200,"currency":"ERR"}"#,
        )
        .await
        .unwrap();
    assert_eq!(failed.status, 500, "{}", failed.text());
    assert_eq!(db.payments().await, 0);
    assert_eq!(db.records().await, 0);
    println!("{kind:?}: 5xx left no payment and no record");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_5xx_leaves_neither_a_payment_nor_a_record() {
    server_error(Kind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_5xx_leaves_neither_a_payment_nor_a_record() {
    server_error(Kind::Sqlite).await;
}

// ---- a storm over two instances -----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_transactional_storm_over_two_instances_pays_each_key_once() {
    let Some(db) = Db::open(Kind::Postgres).await else {
        return;
    };
    let url = db.url();
    let env = env(&url, &[("PAYMENTS_LATENCY_MS", "50")]);
    let (a, b) = tokio::join!(Service::start(&env), Service::start(&env));
    let clients = [a.client, b.client];
    let (sent, took) = storm::send(clients, "tx-storm").await;
    let statuses = storm::check(&sent, clients).await;
    let payments = clients[0].payment_count().await.unwrap();
    assert_eq!(payments, storm::KEYS, "one payment per key");
    println!(
        "transactional storm: {} keys x {} copies over 2 instances in {took:?}; statuses \
         {statuses:?}; payments {payments}",
        storm::KEYS,
        storm::COPIES,
    );
}

// ---- duplicates hold no connection --------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_duplicates_of_a_running_request_get_409_on_a_pool_of_two() {
    const DUPLICATES: usize = 50;
    let Some(db) = Db::open(Kind::Postgres).await else {
        return;
    };
    // The service's connections carry a name of their own, to be counted apart from the test's.
    let url = db.url();
    let glue = if url.contains('?') { '&' } else { '?' };
    let url = format!("{url}{glue}application_name=payments-pool-test");
    let extra = [("IDEM_PG_POOL", "2"), ("PAYMENTS_LATENCY_MS", "5000")];
    let service = Service::start(&env(&url, &extra)).await;
    let client = service.client;
    let owner = tokio::spawn(async move {
        let reply = client.pay(Some("pool-key-00001"), EUR).await.unwrap();
        (reply, Instant::now())
    });
    until(Duration::from_secs(10), "the owner claims its key", || {
        db.claimed("pool-key-00001")
    })
    .await;
    let mut duplicates = tokio::task::JoinSet::new();
    for _ in 0..DUPLICATES {
        duplicates.spawn(async move {
            let reply = client.pay(Some("pool-key-00001"), EUR).await.unwrap();
            (reply, Instant::now())
        });
    }
    let duplicates = duplicates.join_all().await;
    let connections = db
        .number(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND application_name = 'payments-pool-test'",
        )
        .await;
    let (first, finished) = owner.await.unwrap();
    assert_eq!(first.status, 201, "{}", first.text());
    for (reply, answered) in &duplicates {
        assert_eq!(reply.status, 409, "{}", reply.text());
        assert!(reply.header("retry-after").is_some());
        assert!(*answered < finished, "answered before the owner finished");
    }
    assert!(
        connections <= 2,
        "the service used {connections} connections"
    );
    assert_eq!(client.payment_count().await.unwrap(), 1);
    println!(
        "pool of 2: {DUPLICATES} duplicates answered 409 while the owner ran; the service held \
         {connections} connections; then the owner's 201; payments 1"
    );
}
