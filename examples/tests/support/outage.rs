//! The store outage both stores are judged by: fresh keys flow through a `payments` process
//! every 25 ms while its store is killed, stays down for [`OUTAGE`] and comes back; then what
//! every answer must have been, and what a retry of each key meets.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use idem_examples::client::{Client, Reply};

use super::db::until;

const EUR: &str = r#"{"amount":1200,"currency":"EUR"}"#;
const PROBLEM: &str = "application/problem+json";

/// How long the store stays down.
pub const OUTAGE: Duration = Duration::from_secs(7);

/// One request of the outage run.
struct Sent {
    key: String,
    body: String,
    started: Instant,
    answered: Instant,
    reply: Reply,
}

/// How the outage run classifies an answer.
fn kind(reply: &Reply) -> &'static str {
    match (reply.status.as_u16(), reply.header("content-type")) {
        (201, _) => "201",
        (503, Some(PROBLEM)) if reply.header("retry-after").is_some() => "503",
        // The handler's own answer when recording the payment fails (not the library's).
        (500, Some("application/json")) => "500 from the handler",
        _ => "other",
    }
}

/// Runs the outage against the service behind `client`: `kill` kills the store (as a crash
/// would), `restart` brings it back; `name` heads the summary line.
pub async fn run(
    client: Client,
    name: &str,
    kill: impl Future<Output = ()>,
    restart: impl Future<Output = ()>,
) {
    // Requests keep flowing whatever the answers: a fresh key every 25 ms.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flow = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut requests = tokio::task::JoinSet::new();
            let mut ticks = tokio::time::interval(Duration::from_millis(25));
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                ticks.tick().await;
                n += 1;
                requests.spawn(async move {
                    let key = format!("outage-key-{n:05}");
                    let body = format!(r#"{{"amount":{n},"currency":"EUR"}}"#);
                    let started = Instant::now();
                    let reply = tokio::time::timeout(
                        Duration::from_secs(60),
                        client.pay(Some(&key), &body),
                    )
                    .await
                    .unwrap_or_else(|_| panic!("{key}: no answer within 60 s"))
                    .unwrap_or_else(|e| panic!("{key}: {e}"));
                    let answered = Instant::now();
                    Sent {
                        key,
                        body,
                        started,
                        answered,
                        reply,
                    }
                });
            }
            requests.join_all().await
        }
    });

    until(
        Duration::from_secs(30),
        "payments are made before the outage",
        || async { client.payment_count().await.unwrap() >= 20 },
    )
    .await;
    let stopped = Instant::now();
    kill.await;
    tokio::time::sleep(OUTAGE).await; // the outage itself: its length is the scenario
    let restarting = Instant::now();
    restart.await;
    let restarted = Instant::now();
    // The service recovers by itself: fresh keys succeed again.
    until(
        Duration::from_secs(30),
        "fresh keys succeed after the restart",
        || async {
            client
                .pay(
                    Some(&format!(
                        "outage-probe-{:?}",
                        Instant::now().elapsed().as_nanos()
                    )),
                    EUR,
                )
                .await
                .is_ok_and(|r| r.status == 201)
        },
    )
    .await;
    let recovered = restarted.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent: Vec<Sent> = flow.await.unwrap();

    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    let mut max_during = Duration::ZERO;
    let mut during = 0;
    for s in &sent {
        let kind = kind(&s.reply);
        assert_ne!(
            kind,
            "other",
            "{}: {} {}",
            s.key,
            s.reply.status,
            s.reply.text()
        );
        *seen.entry(kind).or_insert(0) += 1;
        if s.answered > stopped && s.started < restarted {
            during += 1;
            max_during = max_during.max(s.answered - s.started);
        }
        if s.started > stopped + Duration::from_millis(200) && s.answered < restarting {
            assert_eq!(
                kind, "503",
                "{}: asked and answered during the outage",
                s.key
            );
        }
    }
    assert!(
        seen.get("503").is_some_and(|&n| n > 0),
        "the outage was seen: {seen:?}"
    );
    assert!(
        max_during < OUTAGE + Duration::from_secs(15),
        "an answer took {max_during:?}"
    );

    // Every key whose 201 reached a client replays it; the others may run now (or meet a claim
    // whose answer the outage lost: 409 until its lease expires).
    let mut after: BTreeMap<&str, usize> = BTreeMap::new();
    for s in &sent {
        let again = client.pay(Some(&s.key), &s.body).await.unwrap();
        if s.reply.status == 201 {
            assert!(
                again.replayed(),
                "{}: its 201 replays, got {} {} (first answered {:?} after the stop)",
                s.key,
                again.status,
                again.text(),
                s.answered.checked_duration_since(stopped)
            );
            assert_eq!(again.body, s.reply.body, "{}", s.key);
        } else {
            assert!(
                matches!(again.status.as_u16(), 201 | 409),
                "{}: {}",
                s.key,
                again.status
            );
        }
        let label = match (again.status.as_u16(), again.replayed()) {
            (201, true) => "replayed",
            (201, false) => "executed",
            _ => "409",
        };
        *after.entry(label).or_insert(0) += 1;
    }

    // No completed key ran twice: its amount is recorded once, under the id it answered.
    let payments = client.get("/payments").await.unwrap().json();
    let payments = payments.as_array().unwrap();
    let mut by_amount: HashMap<i64, Vec<i64>> = HashMap::new();
    for p in payments {
        by_amount
            .entry(p["amount"].as_i64().unwrap())
            .or_default()
            .push(p["id"].as_i64().unwrap());
    }
    for s in sent.iter().filter(|s| s.reply.status == 201) {
        let json = s.reply.json();
        let ids = &by_amount[&json["amount"].as_i64().unwrap()];
        assert_eq!(ids, &[json["id"].as_i64().unwrap()], "{} ran once", s.key);
    }
    println!(
        "{name} outage: {} requests ({during} during a {OUTAGE:?} outage); statuses {seen:?}; \
         max latency during the outage {max_during:?}; recovered {recovered:?} after the \
         restart; retries afterwards {after:?}; payments created {}",
        sent.len(),
        payments.len()
    );
}
