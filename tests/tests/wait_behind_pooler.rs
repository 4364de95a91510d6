//! Waiting for the in-flight result with the Postgres store behind PgBouncer in transaction
//! mode (README, "Behind a connection pooler"): a listener on a direct URL hears the
//! announcements sent through the pooler and wakes another instance's waiter at once; without
//! one, waiters poll, and the store says why, once.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use futures_util::StreamExt;
use idem_runtime::{
    Gate, Heard, Hooked, IdempotencyKey, IdempotencyStore, Op, PostgresStore, RecordId, Store,
    StoreHook, idempotent,
};
use idem_tests::bouncer;
use support::capture::Capture;
use support::http::{Answer, Call, KEY, TEXT, send};
use tokio::sync::Notify;
use tokio::time::Instant;

#[derive(Clone)]
struct App {
    idem: Store,
    runs: Arc<AtomicUsize>,
    /// What a run waits for before it answers.
    gate: Arc<Notify>,
}

#[idempotent(store = app.idem, wait = "10s")]
async fn pay(State(app): State<App>, body: String) -> (StatusCode, String) {
    let run = app.runs.fetch_add(1, Ordering::SeqCst) + 1;
    app.gate.notified().await;
    (StatusCode::CREATED, format!("run {run} paid {body}"))
}

/// The same service on another store handle, as another instance sees it.
fn instance(app: &App, idem: Store) -> Router {
    let app = App {
        idem,
        ..app.clone()
    };
    Router::new().route("/pay", post(pay)).with_state(app)
}

fn spawn_call(router: &Router) -> tokio::task::JoinHandle<Answer> {
    let (router, request) = (
        router.clone(),
        Call::new("/pay", TEXT, "12 EUR").request(Some(KEY)),
    );
    tokio::spawn(async move { send(&router, request).await })
}

/// Waits until `condition` holds: the runtime's own state has no signal to await here.
async fn until(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announcements_through_the_pooler_reach_a_listener_on_the_direct_url() {
    let Some((db, url)) = bouncer::database().await else {
        return;
    };
    let one = bouncer::store_at(&url).await;
    let other = bouncer::store_at(&url)
        .await
        .listen_url(&db.url())
        .expect("a valid URL");
    let mut heard = other
        .listen()
        .expect("listens on the direct URL")
        .await
        .expect("the listener connects");
    let id = RecordId::new("", "wait::pay", IdempotencyKey::parse(KEY).unwrap());
    one.announce(&id).await.expect("NOTIFY through pgbouncer");
    let next = tokio::time::timeout(Duration::from_secs(10), heard.next())
        .await
        .expect("heard in time");
    assert_eq!(next, Some(Heard::Ended(id.wake_key())));
}

/// When each claim of a store handle starts, announced as it happens.
#[derive(Clone, Default)]
struct Claims {
    at: Arc<Mutex<Vec<Instant>>>,
    made: Arc<Notify>,
}

impl StoreHook for Claims {
    fn before(&self, op: Op) -> Gate {
        if op == Op::Claim {
            self.at.lock().unwrap().push(Instant::now());
            self.made.notify_one();
        }
        Gate::Pass
    }
}

impl Claims {
    /// Waits for a claim that came a whole [`idem_runtime::LAST_POLL`] after the one before:
    /// the waiter polls as slowly as it does only while its listener hears.
    async fn until_a_slow_poll(&self) {
        let slow = idem_runtime::LAST_POLL.mul_f32(0.9);
        loop {
            tokio::time::timeout(Duration::from_secs(20), self.made.notified())
                .await
                .expect("the waiter polls");
            let at = self.at.lock().unwrap();
            if at.len() >= 2 && at[at.len() - 1] - at[at.len() - 2] >= slow {
                return;
            }
        }
    }
}

/// A waiter on a second instance, listening on the direct URL, answers as soon as the owner
/// on the first one finishes, well before its next poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_instances_waiter_is_woken_by_the_announcement() {
    let Some((db, url)) = bouncer::database().await else {
        return;
    };
    let owner = Store::new(bouncer::store_at(&url).await);
    let listening = bouncer::store_at(&url)
        .await
        .listen_url(&db.url())
        .expect("a valid URL");
    let claims = Claims::default();
    let waiter = Store::new(Hooked::with(listening, claims.clone()));
    let app = App {
        idem: owner.clone(),
        runs: Arc::default(),
        gate: Arc::default(),
    };
    let first = spawn_call(&instance(&app, owner));
    until("the owner runs", || app.runs.load(Ordering::SeqCst) == 1).await;
    let second = spawn_call(&instance(&app, waiter.clone()));
    claims.until_a_slow_poll().await;
    // The next poll is a second away: an answer before it was rung.
    let released = Instant::now();
    app.gate.notify_one();
    let second = second.await.expect("the waiter answers");
    let took = released.elapsed();
    let first = first.await.expect("the owner answers");
    assert_eq!(first.status, StatusCode::CREATED);
    assert!(
        second.replayed() && second.body == first.body,
        "{:?}",
        second.body
    );
    assert!(
        took < idem_runtime::LAST_POLL.mul_f32(0.9),
        "answered after {took:?}"
    );
    assert_eq!(app.runs.load(Ordering::SeqCst), 1);
}

/// Without a listen URL, waiters on two handles of one store poll and get the answer, and the
/// store logs once why it does not listen. One thread, so that the capture sees every task.
#[tokio::test(flavor = "current_thread")]
async fn without_a_listen_url_waiters_poll_and_the_store_says_why_once() {
    let Some((_db, url)) = bouncer::database().await else {
        return;
    };
    let capture = Capture::default();
    let _guard = capture.install();
    let store: PostgresStore = bouncer::store_at(&url).await;
    let (one, other) = (Store::new(store.clone()), Store::new(store));
    let app = App {
        idem: one.clone(),
        runs: Arc::default(),
        gate: Arc::default(),
    };
    let (here, there) = (instance(&app, one.clone()), instance(&app, other.clone()));
    let owner = spawn_call(&here);
    until("the owner runs", || app.runs.load(Ordering::SeqCst) == 1).await;
    let waiters = [spawn_call(&here), spawn_call(&there)];
    until("both wait", || one.waiting() == 1 && other.waiting() == 1).await;
    app.gate.notify_one();
    let first = owner.await.expect("the owner answers");
    for waiter in waiters {
        let answer = waiter.await.expect("the waiter answers");
        assert!(
            answer.replayed() && answer.body == first.body,
            "{:?}",
            answer.body
        );
    }
    let logs = capture.text();
    let why = "LISTEN cannot work through a transaction-mode pooler";
    assert_eq!(logs.matches(why).count(), 1, "{logs}");
    assert!(logs.contains("PostgresStore::listen_url"), "{logs}");
}
