//! Duplicates of a payment in progress, against the real `payments` binary
//! (docs/contract.md, "Waiting for the in-flight result"): a standard retrying client that
//! honours `Retry-After` gets its answer soon after the payment is made; with `IDEM_WAIT`,
//! duplicates over two instances on Postgres wait and replay the one payment; and when the
//! owner is killed, a waiter takes the key over after its lease.

mod support;

use std::time::{Duration, Instant};

use idem_examples::client::{Client, Reply};
use support::db::{Db, Kind, until};
use support::{Service, outcome_count};

const EUR: &str = r#"{"amount":1200,"currency":"EUR"}"#;

/// Python's `requests` with urllib3's `Retry`, as a client library user would set it up:
/// read timeout 0.5 s, retries on read errors and on 409, honouring `Retry-After`. Prints the
/// final status, whether it was a replay, and the seconds it took.
const RETRYING_CLIENT: &str = r#"
import sys, time, requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

url, key = sys.argv[1], sys.argv[2]
retry = Retry(total=20, read=10, connect=3, status=10, backoff_factor=0,
              status_forcelist=[409], allowed_methods=None,
              respect_retry_after_header=True, raise_on_status=False)
session = requests.Session()
session.mount("http://", HTTPAdapter(max_retries=retry))
started = time.monotonic()
reply = session.post(url, data='{"amount":1200,"currency":"EUR"}', timeout=(2, 0.5),
                     headers={"Idempotency-Key": key, "Content-Type": "application/json"})
print(reply.status_code, reply.headers.get("Idempotent-Replayed"), round(time.monotonic() - started, 3))
"#;

/// Runs [`RETRYING_CLIENT`] once; `None` (after saying why) when Python's `requests` is
/// missing and this is not CI.
async fn retrying_client(url: &str, key: &str) -> Option<String> {
    let ran = tokio::process::Command::new("python3")
        .args(["-c", RETRYING_CLIENT, url, key])
        .output()
        .await;
    match ran {
        Ok(out) if out.status.success() => Some(String::from_utf8_lossy(&out.stdout).into()),
        other => {
            let why = format!("python3 with `requests` could not run the client: {other:?}");
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{why}");
            }
            eprintln!("SKIPPED: {why}");
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retrying_client_gets_its_answer_soon_after_a_slow_payment() {
    let db = Db::open(Kind::Sqlite).await.expect("a SQLite folder");
    let url = db.url();
    let service = Service::start(&[("IDEM_STORE", &url), ("PAYMENTS_LATENCY_MS", "2000")]).await;
    let target = format!("http://{}/payments", service.client.addr());
    let Some(printed) = retrying_client(&target, "retrying-client-0001").await else {
        return;
    };
    let fields: Vec<&str> = printed.split_whitespace().collect();
    let [status, replayed, seconds] = fields[..] else {
        panic!("the client printed {printed:?}");
    };
    let seconds: f64 = seconds.parse().expect("seconds");
    assert_eq!(status, "201", "{printed}");
    assert_eq!(
        replayed, "true",
        "the answer is the first request's, replayed"
    );
    assert!(
        seconds < 4.0,
        "a 2 s payment answered after {seconds} s: the 409's Retry-After is too long"
    );
    assert_eq!(db.payments().await, 1, "one payment");
    println!("retrying client: 201 after {seconds} s for a 2 s payment; one payment");
}

/// Sends `copies` of one payment over the clients in turn, all at once.
async fn storm(clients: &[Client], key: &'static str, copies: usize) -> Vec<Reply> {
    let tasks: Vec<_> = (0..copies)
        .map(|n| {
            let client = clients[n % clients.len()];
            tokio::spawn(async move { client.pay(Some(key), EUR).await })
        })
        .collect();
    let mut replies = Vec::new();
    for task in tasks {
        replies.push(task.await.unwrap().expect("an answer"));
    }
    replies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_duplicates_over_two_instances_wait_for_one_payment() {
    let Some(db) = Db::open(Kind::Postgres).await else {
        return;
    };
    let url = db.url();
    let env = [
        ("IDEM_STORE", url.as_str()),
        ("IDEM_WAIT", "10s"),
        ("PAYMENTS_LATENCY_MS", "500"),
    ];
    let (a, b) = tokio::join!(Service::start(&env), Service::start(&env));
    let clients = [a.client, b.client];
    let started = Instant::now();
    let replies = storm(&clients, "waited-storm-0001", 32).await;
    let took = started.elapsed();
    assert!(
        replies.iter().all(|r| r.status == 201),
        "no 409: {:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert!(
        replies.iter().all(|r| r.body == replies[0].body),
        "same bytes"
    );
    assert_eq!(replies.iter().filter(|r| r.replayed()).count(), 31);
    assert_eq!(db.payments().await, 1, "one payment");
    let waited = outcome_count(&clients[0], "replayed_after_wait").await
        + outcome_count(&clients[1], "replayed_after_wait").await;
    assert!(waited >= 1, "answers after waiting are counted");
    println!("waiting storm: 32 copies over 2 instances answered in {took:?}; one payment");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_take_over_from_a_killed_owner_after_its_lease() {
    let Some(db) = Db::open(Kind::Postgres).await else {
        return;
    };
    let url = db.url();
    let owner = Service::start(&[
        ("IDEM_STORE", &url),
        ("IDEM_LEASE", "2s"),
        ("IDEM_WAIT", "10s"),
        ("PAYMENTS_LATENCY_MS", "60000"),
    ])
    .await;
    let other = Service::start(&[
        ("IDEM_STORE", &url),
        ("IDEM_LEASE", "2s"),
        ("IDEM_WAIT", "10s"),
        ("PAYMENTS_LATENCY_MS", "100"),
    ])
    .await;
    let client = owner.client;
    let in_flight = tokio::spawn(async move { client.pay(Some("killed-owner-0001"), EUR).await });
    until(Duration::from_secs(10), "the owner claims", || async {
        db.claimed("killed-owner-0001").await
    })
    .await;
    let waiters = {
        let client = other.client;
        tokio::spawn(async move { storm(&[client], "killed-owner-0001", 5).await })
    };
    owner.kill().await;
    assert!(
        in_flight.await.unwrap().is_err(),
        "the killed owner never answered"
    );
    let replies = waiters.await.unwrap();
    assert!(
        replies.iter().all(|r| r.status == 201),
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert!(replies.iter().all(|r| r.body == replies[0].body));
    assert_eq!(replies.iter().filter(|r| r.replayed()).count(), 4);
    assert!(db.taken_over("killed-owner-0001").await);
    assert_eq!(db.payments().await, 1, "exactly one payment");
}
