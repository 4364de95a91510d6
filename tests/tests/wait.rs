//! Waiting for the in-flight result (docs/contract.md, "Waiting for the in-flight result"):
//! duplicates that meet a request in progress wait for its answer and replay it; when the
//! owner releases the key one waiter runs it; at the deadline, and beyond the bound on
//! waiters, a 409 with a short `Retry-After`; a caller that hangs up leaves no waiter behind.
//! Each check runs on memory, SQLite, Postgres (directly and behind PgBouncer) and Redis.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use idem_runtime::{MemoryStore, Store, idempotent};
use support::http::{Answer, Call, KEY, TEXT, send};
use tokio::sync::Notify;

#[derive(Clone)]
struct AppState {
    idem: Store,
    runs: Arc<AtomicUsize>,
    /// What the first run waits for before it answers.
    gate: Arc<Notify>,
    /// When set, the first run answers 500 (which releases the key).
    first_fails: Arc<AtomicBool>,
}

impl AppState {
    fn new(idem: Store) -> Self {
        AppState {
            idem,
            runs: Arc::default(),
            gate: Arc::default(),
            first_fails: Arc::default(),
        }
    }

    fn runs(&self) -> usize {
        self.runs.load(Ordering::SeqCst)
    }
}

/// The first run waits for the gate; every run answers its number.
#[idempotent(store = app.idem, wait = "10s")]
async fn pay(State(app): State<AppState>, body: String) -> (StatusCode, String) {
    let run = app.runs.fetch_add(1, Ordering::SeqCst) + 1;
    if run == 1 {
        app.gate.notified().await;
        if app.first_fails.load(Ordering::SeqCst) {
            return (StatusCode::INTERNAL_SERVER_ERROR, "run 1 failed".into());
        }
    }
    (StatusCode::CREATED, format!("run {run} paid {body}"))
}

/// The same, waiting only briefly.
#[idempotent(store = app.idem, wait = "300ms")]
async fn pay_briefly(State(app): State<AppState>) -> String {
    app.runs.fetch_add(1, Ordering::SeqCst);
    app.gate.notified().await;
    "paid".into()
}

/// No waiting, and a fixed `Retry-After`.
#[idempotent(store = app.idem, retry_after = "3s")]
async fn pay_later(State(app): State<AppState>) -> String {
    app.runs.fetch_add(1, Ordering::SeqCst);
    app.gate.notified().await;
    "paid".into()
}

fn router(state: &AppState) -> Router {
    Router::new()
        .route("/pay", post(pay))
        .route("/briefly", post(pay_briefly))
        .route("/later", post(pay_later))
        .with_state(state.clone())
}

/// Sends `n` copies of `call` at once, each in a task of its own.
fn spawn_many(router: &Router, call: &Call, n: usize) -> Vec<tokio::task::JoinHandle<Answer>> {
    (0..n)
        .map(|_| {
            let router = router.clone();
            let request = call.request(Some(KEY));
            tokio::spawn(async move { send(&router, request).await })
        })
        .collect()
}

/// Sends `call` and waits until its handler runs (and holds the key on the gate).
async fn hold(
    app: &AppState,
    router: &Router,
    call: &Call,
) -> Vec<tokio::task::JoinHandle<Answer>> {
    let owner = spawn_many(router, call, 1);
    until("the owner runs", || app.runs() == 1).await;
    owner
}

/// Sends `n` duplicates of `call` and waits until they all wait.
async fn duplicates(
    store: &Store,
    router: &Router,
    call: &Call,
    n: usize,
) -> Vec<tokio::task::JoinHandle<Answer>> {
    let waiters = spawn_many(router, call, n);
    until("the duplicates wait", || store.waiting() == n).await;
    waiters
}

/// Waits until `condition` holds: the runtime's own state has no signal to await here.
async fn until(what: &str, condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn answers(tasks: Vec<tokio::task::JoinHandle<Answer>>) -> Vec<Answer> {
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("a request completes"));
    }
    answers
}

fn retry_after(answer: &Answer) -> u64 {
    answer.headers["retry-after"]
        .to_str()
        .ok()
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds")
}

pub async fn thirty_two_duplicates_get_one_run_and_its_bytes(store: Store) {
    let app = AppState::new(store.clone());
    let router = router(&app);
    let call = Call::new("/pay", TEXT, "12 EUR");
    let owner = hold(&app, &router, &call).await;
    let waiters = duplicates(&store, &router, &call, 31).await;
    app.gate.notify_one();
    let mut all = answers(owner).await;
    all.extend(answers(waiters).await);
    assert_eq!(app.runs(), 1, "the handler ran once");
    assert!(all.iter().all(|a| a.status == StatusCode::CREATED));
    assert!(all.iter().all(|a| a.body == all[0].body), "the same bytes");
    assert_eq!(all.iter().filter(|a| a.replayed()).count(), 31);
    assert_eq!(store.waiting(), 0);
}

pub async fn when_the_owner_fails_one_waiter_runs_and_the_rest_get_its_answer(store: Store) {
    let app = AppState::new(store.clone());
    app.first_fails.store(true, Ordering::SeqCst);
    let router = router(&app);
    let call = Call::new("/pay", TEXT, "12 EUR");
    let owner = hold(&app, &router, &call).await;
    let waiters = duplicates(&store, &router, &call, 31).await;
    app.gate.notify_one();
    let owner = answers(owner).await;
    assert_eq!(owner[0].status, StatusCode::INTERNAL_SERVER_ERROR);
    let waiters = answers(waiters).await;
    assert_eq!(app.runs(), 2, "exactly one waiter ran the handler again");
    assert!(waiters.iter().all(|a| a.status == StatusCode::CREATED));
    assert!(waiters.iter().all(|a| a.body == "run 2 paid 12 EUR"));
    assert_eq!(waiters.iter().filter(|a| a.replayed()).count(), 30);
}

pub async fn at_the_deadline_a_waiter_gets_409_and_a_mismatch_never_waits(store: Store) {
    let app = AppState::new(store.clone());
    let router = router(&app);
    let call = Call::new("/briefly", TEXT, "a");
    let owner = hold(&app, &router, &call).await;

    let started = tokio::time::Instant::now();
    let other = send(
        &router,
        Call::new("/briefly", TEXT, "another body").request(Some(KEY)),
    )
    .await;
    assert_eq!(other.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(started.elapsed() < Duration::from_millis(300), "no wait");

    let late = send(&router, call.request(Some(KEY))).await;
    assert!(started.elapsed() >= Duration::from_millis(300), "it waited");
    assert_eq!(late.status, StatusCode::CONFLICT);
    assert_eq!(late.problem_type(), "urn:idem:problem:request-in-progress");
    assert_eq!(retry_after(&late), 1, "a short hint, not the lease");
    app.gate.notify_one();
    assert_eq!(answers(owner).await[0].status, StatusCode::OK);
    assert_eq!(store.waiting(), 0);
}

pub async fn beyond_the_bound_a_duplicate_gets_409_at_once(store: Store) {
    let store = store.max_waiters(2);
    let app = AppState::new(store.clone());
    let router = router(&app);
    let call = Call::new("/pay", TEXT, "12 EUR");
    let owner = hold(&app, &router, &call).await;
    let waiters = duplicates(&store, &router, &call, 2).await;
    let third = send(&router, call.request(Some(KEY))).await;
    assert_eq!(third.status, StatusCode::CONFLICT);
    app.gate.notify_one();
    answers(owner).await;
    let waiters = answers(waiters).await;
    assert!(waiters.iter().all(|a| a.replayed()));
}

pub async fn a_caller_that_hangs_up_leaves_no_waiter(store: Store) {
    let app = AppState::new(store.clone());
    let router = router(&app);
    let call = Call::new("/pay", TEXT, "12 EUR");
    let owner = hold(&app, &router, &call).await;
    let waiters = duplicates(&store, &router, &call, 5).await;
    for waiter in waiters {
        waiter.abort();
    }
    until("the waiters are gone", || store.waiting() == 0).await;
    app.gate.notify_one();
    assert_eq!(answers(owner).await[0].status, StatusCode::CREATED);
    assert_eq!(app.runs(), 1);
}

pub async fn without_waiting_the_409_says_when_to_come_back(store: Store) {
    let app = AppState::new(store.clone());
    let router = router(&app);
    let call = Call::new("/later", TEXT, "a");
    let owner = hold(&app, &router, &call).await;
    let busy = send(&router, call.request(Some(KEY))).await;
    assert_eq!(busy.status, StatusCode::CONFLICT);
    assert_eq!(retry_after(&busy), 3, "the handler's own retry_after");
    app.gate.notify_one();
    answers(owner).await;
}

macro_rules! on_every_store {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(idem_runtime::Store::new(idem_runtime::MemoryStore::new())).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let store = idem_runtime::SqliteStore::connect("sqlite::memory:").await.unwrap();
                    store.migrate().await.unwrap();
                    super::$case(idem_runtime::Store::new(store)).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some((store, _db)) = idem_tests::pg::fixture().await else { return };
                    super::$case(store).await;
                }
            )*
        }
        mod behind_pgbouncer {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some((store, _db)) = idem_tests::bouncer::fixture().await else { return };
                    super::$case(store).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some((store, ())) = idem_tests::redis::fixture().await else { return };
                    super::$case(store).await;
                }
            )*
        }
    };
}

on_every_store!(
    thirty_two_duplicates_get_one_run_and_its_bytes,
    when_the_owner_fails_one_waiter_runs_and_the_rest_get_its_answer,
    at_the_deadline_a_waiter_gets_409_and_a_mismatch_never_waits,
    beyond_the_bound_a_duplicate_gets_409_at_once,
    a_caller_that_hangs_up_leaves_no_waiter,
    without_waiting_the_409_says_when_to_come_back,
);

/// The default hint is the handler's usual run time in this process, not the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_hint_learns_the_usual_run_time() {
    #[idempotent(store = app.idem)]
    async fn slow(State(app): State<AppState>) -> String {
        let run = app.runs.fetch_add(1, Ordering::SeqCst) + 1;
        if run == 1 {
            tokio::time::sleep(Duration::from_millis(2100)).await;
        } else {
            app.gate.notified().await;
        }
        format!("run {run}")
    }
    let store = Store::new(MemoryStore::new());
    let app = AppState::new(store.clone());
    let router = Router::new()
        .route("/slow", post(slow))
        .with_state(app.clone());
    let call = |key: &str| {
        let mut request = Call::new("/slow", TEXT, "a").request(None);
        request
            .headers_mut()
            .insert("idempotency-key", key.parse().unwrap());
        request
    };
    // Unknown at first: a second.
    let first = tokio::spawn({
        let router = router.clone();
        let request = call("key-first-run-0001");
        async move { send(&router, request).await }
    });
    until("the first run starts", || app.runs() == 1).await;
    let busy = send(&router, call("key-first-run-0001")).await;
    assert_eq!(retry_after(&busy), 1);
    assert_eq!(first.await.unwrap().status, StatusCode::OK);
    // Learnt: the first run took 2.1 s, so come back in 3 s, well under the 30 s lease.
    let second = tokio::spawn({
        let router = router.clone();
        let request = call("key-second-run-001");
        async move { send(&router, request).await }
    });
    until("the second run starts", || app.runs() == 2).await;
    let busy = send(&router, call("key-second-run-001")).await;
    assert_eq!(retry_after(&busy), 3);
    app.gate.notify_one();
    assert_eq!(second.await.unwrap().status, StatusCode::OK);
}

/// Across processes on Postgres: a waiter on one store handle (its own listener, as in
/// another instance) is woken by the owner's announcement through `NOTIFY`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_announcements_reach_another_instances_listener() {
    use futures_util::StreamExt;
    use idem_runtime::{Heard, IdempotencyKey, IdempotencyStore, RecordId};
    let Some(db) = idem_tests::pg::database().await else {
        return;
    };
    let one = db.own_store().await;
    let other = db.own_store().await;
    let mut heard = other
        .listen()
        .expect("Postgres listens")
        .await
        .expect("the listener connects");
    let id = RecordId::new(
        "",
        "wait::pay",
        IdempotencyKey::parse("key-announced-001").unwrap(),
    );
    one.announce(&id).await.expect("NOTIFY");
    let next = tokio::time::timeout(Duration::from_secs(10), heard.next())
        .await
        .expect("heard in time");
    assert_eq!(next, Some(Heard::Ended(id.wake_key())));
}

/// Fifty waiters on a Postgres pool of two connections: none holds a connection while it
/// waits, so the owner still completes and every waiter gets the replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_waiters_on_a_pool_of_two_connections() {
    let Some(db) = idem_tests::pg::database().await else {
        return;
    };
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect_with(db.options.clone())
        .await
        .expect("a pool of two");
    let postgres = idem_runtime::PostgresStore::new(pool);
    postgres.migrate().await.expect("migrations run");
    let store = Store::new(postgres);
    let app = AppState::new(store.clone());
    let router = router(&app);
    let call = Call::new("/pay", TEXT, "12 EUR");
    let owner = hold(&app, &router, &call).await;
    let waiters = duplicates(&store, &router, &call, 50).await;
    app.gate.notify_one();
    assert_eq!(answers(owner).await[0].status, StatusCode::CREATED);
    let waiters = answers(waiters).await;
    assert!(
        waiters
            .iter()
            .all(|a| a.replayed() && a.status == StatusCode::CREATED)
    );
    assert_eq!(app.runs(), 1);
}

/// The tower layer waits the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_layer_waits_for_the_in_flight_result() {
    use idem_runtime::IdempotencyLayer;
    let store = Store::new(MemoryStore::new());
    let app = AppState::new(store.clone());
    let router = Router::new()
        .route(
            "/pay",
            post(|State(app): State<AppState>| async move {
                let run = app.runs.fetch_add(1, Ordering::SeqCst) + 1;
                app.gate.notified().await;
                (StatusCode::CREATED, format!("run {run}"))
            }),
        )
        .route_layer(IdempotencyLayer::new(store.clone()).wait(Duration::from_secs(10)))
        .with_state(app.clone());
    let call = Call::new("/pay", TEXT, "12 EUR");
    let owner = hold(&app, &router, &call).await;
    let waiters = duplicates(&store, &router, &call, 8).await;
    app.gate.notify_one();
    let mut all = answers(owner).await;
    all.extend(answers(waiters).await);
    assert!(
        all.iter()
            .all(|a| a.status == StatusCode::CREATED && a.body == "run 1")
    );
    assert_eq!(all.iter().filter(|a| a.replayed()).count(), 8);
    assert_eq!(app.runs(), 1);
}

/// A plain function waits the same way: a redelivered message gets the first delivery's value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_function_waits_for_the_in_flight_result() {
    #[derive(Debug)]
    struct Failed(#[allow(dead_code)] idem_runtime::Error);
    impl From<idem_runtime::Error> for Failed {
        fn from(error: idem_runtime::Error) -> Self {
            Failed(error)
        }
    }
    #[idempotent(store = app.idem, key = order, wait = "10s")]
    async fn charge(#[idem(skip)] app: &AppState, order: &str) -> Result<usize, Failed> {
        let run = app.runs.fetch_add(1, Ordering::SeqCst) + 1;
        app.gate.notified().await;
        Ok(run)
    }
    let store = Store::new(MemoryStore::new());
    let app = AppState::new(store.clone());
    let first = tokio::spawn({
        let app = app.clone();
        async move { charge(&app, "order-0000-0001").await }
    });
    until("the first delivery runs", || app.runs() == 1).await;
    let again = tokio::spawn({
        let app = app.clone();
        async move { charge(&app, "order-0000-0001").await }
    });
    until("the redelivery waits", || store.waiting() == 1).await;
    app.gate.notify_one();
    assert_eq!(first.await.unwrap().unwrap(), 1);
    assert_eq!(
        again.await.unwrap().unwrap(),
        1,
        "the first delivery's value"
    );
    assert_eq!(app.runs(), 1);
}

/// A waiter that no announcement reaches (another handle on the same store, as another process
/// on SQLite) still gets the answer, from its polls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_never_rung_finds_the_answer_by_polling() {
    let shared = Arc::new(MemoryStore::new());
    let (one, other) = (Store::new(shared.clone()), Store::new(shared));
    let owner_app = AppState::new(one);
    let waiter_app = AppState {
        idem: other.clone(),
        ..owner_app.clone()
    };
    let call = Call::new("/pay", TEXT, "12 EUR");
    let owner = hold(&owner_app, &router(&owner_app), &call).await;
    let waiter = duplicates(&other, &router(&waiter_app), &call, 1).await;
    owner_app.gate.notify_one();
    let owner = answers(owner).await;
    let waiter = answers(waiter).await;
    assert_eq!(owner[0].status, StatusCode::CREATED);
    assert!(waiter[0].replayed() && waiter[0].body == owner[0].body);
    assert_eq!(owner_app.runs(), 1);
}
