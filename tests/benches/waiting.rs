//! How soon a waiting duplicate gets the owner's answer (docs/contract.md, "Waiting for the
//! in-flight result"), and what a waiter costs the store.
//!
//! Each trial holds one owner's handler on a gate, lets `WAITERS` duplicates of its key start
//! waiting, then opens the gate. A waiter's delay is measured from the moment the owner's
//! handler returned to the moment the waiter had its answer: the owner's completion write,
//! the wake-up, and the waiter's one more claim. The owner's own delay over the same span (its
//! completion write) is shown beside it. Three set-ups, in one run:
//!
//! - `memory, in process`: one memory store handle;
//! - `postgres, in process`: one Postgres store handle, rung in process;
//! - `postgres, two instances`: the owner on one handle and the waiters on another, each with
//!   its own connections and waiters, as two processes would be: only `NOTIFY` wakes them.
//!
//! Claims per waiter count every claim the waiters' store saw, less the owners'.
//!
//! `cargo bench -p idem-tests --bench waiting` prints the table (needs the Postgres binaries
//! the tests use). Timings never fail anything.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::Request;
use axum::routing::post;
use http_body_util::BodyExt;
use idem_runtime::{Gate, Hooked, MemoryStore, Op, Store, StoreHook, idempotent};
use tokio::sync::Notify;
use tower::ServiceExt;

const WAITERS: usize = 8;

/// Counts claims.
#[derive(Default)]
struct Claims(AtomicU64);

impl StoreHook for Claims {
    fn before(&self, op: Op) -> Gate {
        if op == Op::Claim {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
        Gate::Pass
    }
}

#[derive(Clone)]
struct AppState {
    idem: Store,
    started: Arc<AtomicUsize>,
    gate: Arc<Notify>,
    /// When the owner's handler returned.
    returned: Arc<std::sync::Mutex<Option<Instant>>>,
}

#[idempotent(store = app.idem, wait = "30s")]
async fn pay(State(app): State<AppState>) -> String {
    if app.started.fetch_add(1, Ordering::SeqCst) == 0 {
        app.gate.notified().await;
        *app.returned.lock().unwrap() = Some(Instant::now());
    }
    "paid".into()
}

fn router(app: &AppState) -> Router {
    Router::new()
        .route("/pay", post(pay))
        .with_state(app.clone())
}

async fn send(router: Router, key: String) -> Instant {
    let request = Request::post("/pay")
        .header("idempotency-key", key)
        .body(Body::empty())
        .unwrap();
    let response = router.oneshot(request).await.unwrap();
    let _ = response.into_body().collect().await.unwrap();
    Instant::now()
}

/// Delays in microseconds: the owner's, and every waiter's; and claims per waiter.
struct Measured {
    owner: Vec<u64>,
    waiters: Vec<u64>,
    claims_per_waiter: f64,
}

async fn measure(
    name: &str,
    owner_store: Store,
    waiter_store: Store,
    claims: &Claims,
    trials: usize,
) -> Measured {
    let mut owner = Vec::new();
    let mut waiters = Vec::new();
    let before = claims.0.load(Ordering::Relaxed);
    for trial in 0..trials {
        let key = format!("wait-{name}-{trial:06}-{}", std::process::id());
        let a = AppState {
            idem: owner_store.clone(),
            started: Arc::default(),
            gate: Arc::default(),
            returned: Arc::default(),
        };
        let b = AppState {
            idem: waiter_store.clone(),
            ..a.clone()
        };
        let owner_task = tokio::spawn(send(router(&a), key.clone()));
        let since = Instant::now();
        while a.started.load(Ordering::SeqCst) == 0 {
            assert!(
                since.elapsed() < Duration::from_secs(30),
                "the owner never ran"
            );
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        let tasks: Vec<_> = (0..WAITERS)
            .map(|_| tokio::spawn(send(router(&b), key.clone())))
            .collect();
        let since = Instant::now();
        while waiter_store.waiting() < WAITERS {
            assert!(
                since.elapsed() < Duration::from_secs(30),
                "only {} of {WAITERS} waiters wait",
                waiter_store.waiting()
            );
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        // Past the first polls, so that only a wake-up (or the slowest poll) answers them.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        a.gate.notify_one();
        let owner_done = owner_task.await.unwrap();
        let returned = a.returned.lock().unwrap().expect("the owner returned");
        owner.push(owner_done.duration_since(returned).as_micros() as u64);
        for task in tasks {
            let done = task.await.unwrap();
            waiters.push(done.duration_since(returned).as_micros() as u64);
        }
    }
    let seen = claims.0.load(Ordering::Relaxed) - before;
    Measured {
        owner,
        waiters,
        claims_per_waiter: seen as f64 / (trials * WAITERS) as f64,
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at]
}

fn row(name: &str, mut m: Measured) {
    m.owner.sort_unstable();
    m.waiters.sort_unstable();
    println!(
        "| {name} | {} | {} | {} | {} | {:.2} |",
        percentile(&m.waiters, 0.5),
        percentile(&m.waiters, 0.99),
        percentile(&m.owner, 0.5),
        percentile(&m.owner, 0.99),
        m.claims_per_waiter,
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let trials = 20;
        println!(
            "| set-up ({WAITERS} waiters, {trials} trials) | waiter p50 µs | waiter p99 µs | owner p50 µs | owner p99 µs | claims per waiter |"
        );
        println!("|---|---|---|---|---|---|");

        let memory = Arc::new(Hooked::with(MemoryStore::new(), Claims::default()));
        let store = Store::new(memory.clone());
        let mut m = measure("memory", store.clone(), store, memory.hook(), trials).await;
        m.claims_per_waiter -= 1.0 / WAITERS as f64;
        row("memory, in process", m);

        let Some(db) = idem_tests::pg::database().await else {
            println!("(Postgres rows skipped: no server)");
            return;
        };
        let one = Arc::new(Hooked::with(db.own_store().await, Claims::default()));
        let store = Store::new(one.clone());
        let mut m = measure("pg-one", store.clone(), store, one.hook(), trials).await;
        m.claims_per_waiter -= 1.0 / WAITERS as f64;
        row("postgres, in process", m);

        let owner = Store::new(db.own_store().await);
        let other = Arc::new(Hooked::with(db.own_store().await, Claims::default()));
        let m = measure("pg-two", owner, Store::new(other.clone()), other.hook(), trials).await;
        row("postgres, two instances (NOTIFY)", m);
    });
}
