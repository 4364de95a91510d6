//! What `#[idempotent]` costs in process: a trivial axum handler called
//! through a `Router` with `tower::ServiceExt::oneshot`, bare and under the attribute on the
//! memory store, for first calls (a new key each time) and replays, at 100 B, 1 KiB and
//! 64 KiB request bodies; and the memory store's claim at 1 thousand and 1 million records.
//!
//! First calls are measured twice. `first` sends every call to one store, which grows with
//! the run (to about a million records per body size): its time includes what a growing store
//! costs. `first_steady` starts a new store every `STEADY_KEYS` calls, outside the timing, so
//! the store holds between 0 and `STEADY_KEYS` records: the attribute's cost at a store size
//! that stays put. The memory store's own cost by size is the separate `memory_store` group.
//!
//! `cargo bench -p idem-tests --bench overhead` runs it and ends with a table of medians and
//! ratios, all from this one run. Timings never fail anything.
//!
//! What the instruction counts (`IDEM_BENCH_PROFILE`, the callgrind recipe in `bench/notes.md`)
//! guard in the library's shapes: a call's run is boxed once (`engine/detach.rs`), and only a
//! call that runs its handler boxes the executor's run as well (`engine/execute.rs`), so a
//! replay's box holds the claim and no more; with this benchmark's handler each box stays
//! within glibc's per-thread cache (1,032 bytes). For that, the executor's `execute`, `run` and
//! `settle`, and the HTTP adapter's `respond` and `capture`, are plain functions returning
//! `async` blocks (an `async fn` keeps its arguments twice in its future), and what the work
//! settled on is stored or released in `settle`, apart from the run, so that the run's future
//! does not keep the answer beside the work's. A replay reserves room in its header map for
//! the stored headers, `Idempotent-Replayed` and the `Content-Length` the server adds, so the
//! map is allocated once.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Json, State};
use axum::http::{Request, StatusCode};
use axum::routing::post;
use bytes::Bytes;
use criterion::{BenchmarkId, Criterion};
use http_body_util::BodyExt;
use idem_runtime::{
    Claim, Fingerprint, IdempotencyKey, IdempotencyStore, MemoryStore, OwnerToken, Ownership,
    Payload, RecordId, Reply, Store, StoreResult, idempotent,
};
use serde::Serialize;
use tower::ServiceExt;

#[derive(Clone)]
struct AppState {
    idem: Store,
}

#[derive(Serialize)]
struct Ack {
    received: usize,
}

async fn bare(State(_): State<AppState>, body: Bytes) -> (StatusCode, Json<Ack>) {
    (
        StatusCode::CREATED,
        Json(Ack {
            received: body.len(),
        }),
    )
}

#[idempotent(store = "app.idem")]
async fn idem(State(app): State<AppState>, body: Bytes) -> (StatusCode, Json<Ack>) {
    (
        StatusCode::CREATED,
        Json(Ack {
            received: body.len(),
        }),
    )
}

fn router() -> Router {
    // Room for every key a benchmark sends: a full store would answer 503.
    let store = Store::new(MemoryStore::with_capacity(1 << 26));
    Router::new()
        .route("/bare", post(bare))
        .route("/idem", post(idem))
        .with_state(AppState { idem: store })
}

fn request(path: &str, key: &str, body: &Bytes) -> Request<Body> {
    Request::post(path)
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .body(Body::from(body.clone()))
        .expect("a valid request")
}

/// Sends one request and reads the whole answer.
async fn call(router: &Router, request: Request<Body>) -> StatusCode {
    let response = router.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let body = response.into_body().collect().await.expect("a body");
    std::hint::black_box(body);
    status
}

/// How many first calls `first_steady` sends to one store before it starts a new one.
const STEADY_KEYS: u64 = 10_000;

const BODIES: [(&str, usize); 3] = [("100B", 100), ("1KiB", 1024), ("64KiB", 64 * 1024)];

fn body_of(size: usize) -> Bytes {
    let mut body = b"{\"p\":\"".to_vec();
    body.resize(size - 2, b'x');
    body.extend_from_slice(b"\"}");
    Bytes::from(body)
}

fn oneshot(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let mut group = c.benchmark_group("oneshot");
    for (name, size) in BODIES {
        let body = body_of(size);
        let router = router();
        let n = AtomicU64::new(0);
        group.bench_with_input(BenchmarkId::new("bare", name), &body, |b, body| {
            b.to_async(&rt).iter(|| async {
                let key = format!("bench-key-{:012}", n.fetch_add(1, Ordering::Relaxed));
                let status = call(&router, request("/bare", &key, body)).await;
                assert_eq!(status, StatusCode::CREATED);
            })
        });
        group.bench_with_input(BenchmarkId::new("first", name), &body, |b, body| {
            b.to_async(&rt).iter(|| async {
                let key = format!("bench-key-{:012}", n.fetch_add(1, Ordering::Relaxed));
                let status = call(&router, request("/idem", &key, body)).await;
                assert_eq!(status, StatusCode::CREATED);
            })
        });
        group.bench_with_input(BenchmarkId::new("first_steady", name), &body, |b, body| {
            b.to_async(&rt).iter_custom(|iters| async move {
                let mut timed = Duration::ZERO;
                let mut done = 0;
                while done < iters {
                    let batch = (iters - done).min(STEADY_KEYS);
                    // A new, empty store; the full one is dropped after the timing.
                    let router = self::router();
                    let started = Instant::now();
                    for n in 0..batch {
                        let key = format!("bench-key-{n:012}");
                        let status = call(&router, request("/idem", &key, body)).await;
                        assert_eq!(status, StatusCode::CREATED);
                    }
                    timed += started.elapsed();
                    done += batch;
                }
                timed
            })
        });
        let primed = rt.block_on(call(&router, request("/idem", "bench-replay-key", &body)));
        assert_eq!(primed, StatusCode::CREATED);
        group.bench_with_input(BenchmarkId::new("replay", name), &body, |b, body| {
            b.to_async(&rt).iter(|| async {
                let status = call(&router, request("/idem", "bench-replay-key", body)).await;
                assert_eq!(status, StatusCode::CREATED);
            })
        });
    }
    group.finish();
}

/// A reply that is ready at once (the memory store's are).
fn now<T>(reply: Reply<'_, T>) -> StoreResult<T> {
    match reply {
        Reply::Ready(result) => result,
        Reply::Pending(_) => panic!("the memory store answers at once"),
    }
}

fn claim_of(n: u64) -> Claim {
    let key = IdempotencyKey::parse(&format!("store-key-{n:012}")).expect("a valid key");
    Claim {
        id: RecordId::new("", "bench::handler", key),
        fingerprint: Fingerprint::from_bytes([7; 32]),
        token: OwnerToken::random(),
        lease: Duration::from_secs(30),
        ttl: Duration::from_secs(24 * 3600),
    }
}

/// How many replay probes `memory_store` copies ahead of each timed batch: few enough that
/// the copies stay in the first-level cache.
const PROBES: u64 = 64;

/// The same claim with its own copy of the key's text, as a request parses it.
fn fresh_copy(claim: &Claim) -> Claim {
    let key = IdempotencyKey::parse(claim.id.key.as_str()).expect("a valid key");
    Claim {
        id: RecordId::new(claim.id.scope.clone(), claim.id.handler.clone(), key),
        ..claim.clone()
    }
}

/// A memory store holding `records` completed records, and claims for each of them. The
/// records keep keys of their own, so that reading a claim never brings a record's key into
/// the cache.
fn filled_store(records: u64) -> (MemoryStore, Vec<Claim>) {
    let response = Arc::new(Payload::Response {
        status: 201,
        headers: vec![(
            "content-type".into(),
            Bytes::from_static(b"application/json"),
        )],
        body: Bytes::from_static(b"{\"received\":1024}"),
    });
    let store = MemoryStore::with_capacity(4_000_000);
    let claims: Vec<Claim> = (0..records).map(claim_of).collect();
    for claim in &claims {
        let own = fresh_copy(claim);
        now(store.claim(&own)).expect("room");
        assert_eq!(
            now(store.complete(&own, &response)).expect("completes"),
            Ownership::Held
        );
    }
    (store, claims)
}

/// The next `count` replay probes: a stride through every record, so that a large store is
/// not read from cache; each a fresh copy, as a request's claim is.
fn replay_probes(existing: &[Claim], at: &mut usize, count: u64) -> Vec<Claim> {
    (0..count)
        .map(|_| {
            *at = (*at + 7919) % existing.len();
            fresh_copy(&existing[*at])
        })
        .collect()
}

/// The memory store's claim at 1 thousand and 1 million records. It guards the store's layout:
/// each record boxed behind a 16-byte bucket (its hash and the box), so that at a million
/// records a probe meets fewer cache and TLB misses and a new record writes one cache line of
/// the table rather than four. Keeping records in the table itself, with their identity as one
/// allocation, saved half a simulated cache miss of the 5.4 that a completed-key claim meets
/// at 1M, and cost a first call about 680 instructions, in the allocator and the table's
/// growth (bench/notes.md, "Changes made for the goals").
fn memory_store(c: &mut Criterion) {
    let mut group = c.benchmark_group("memory_store");
    for (name, records) in [("1k", 1_000u64), ("1M", 1_000_000)] {
        let (store, existing) = filled_store(records);
        // A new key: claimed, then released, so the store keeps its size.
        let fresh = AtomicU64::new(records);
        group.bench_function(BenchmarkId::new("claim_new", name), |b| {
            b.iter_batched(
                || claim_of(fresh.fetch_add(1, Ordering::Relaxed)),
                |claim| {
                    now(store.claim(&claim)).expect("room");
                    let released = now(store.release(&claim)).expect("released");
                    assert_eq!(released, Ownership::Held);
                },
                criterion::BatchSize::SmallInput,
            )
        });
        // A completed key, any of the store's (a replay's one store call). Probes are made a
        // batch at a time outside the timing, so that neither the copying nor the clock is
        // charged to a claim.
        let mut at = 0usize;
        group.bench_function(BenchmarkId::new("claim_replay", name), |b| {
            b.iter_custom(|iterations| {
                let mut spent = Duration::ZERO;
                let mut done = 0;
                while done < iterations {
                    let probes = replay_probes(&existing, &mut at, PROBES.min(iterations - done));
                    let start = Instant::now();
                    for probe in &probes {
                        std::hint::black_box(now(store.claim(probe)).expect("answers"));
                    }
                    spent += start.elapsed();
                    done += probes.len() as u64;
                }
                spent
            })
        });
        drop(store);
    }
    group.finish();
}

/// Where criterion writes its estimates: `CRITERION_HOME`, else `<target>/criterion`.
fn output_directory() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(target).join("criterion");
    }
    // target/<profile>/deps/<this binary>
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.join("criterion")))
        .unwrap_or_else(|| PathBuf::from("target/criterion"))
}

/// The median of one benchmark of this run, in nanoseconds.
fn median(dir: &std::path::Path, id: &str) -> Option<f64> {
    let text = std::fs::read_to_string(dir.join(id).join("new/estimates.json")).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    value["median"]["point_estimate"].as_f64()
}

fn summary(dir: &std::path::Path) {
    let us = |ns: f64| format!("{:.2} µs", ns / 1000.0);
    println!("\n## In-process overhead (medians of this run)\n");
    println!(
        "`first` sends every call to one store, which grows with the run; `first, steady` \
         starts a new store every {STEADY_KEYS} calls (outside the timing), so the store holds \
         between 0 and {STEADY_KEYS} records.\n"
    );
    println!(
        "| body | bare | first call | first, steady | replay | first − bare | first, steady − bare | replay − bare | first / bare | first, steady / bare | replay / bare |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (name, _) in BODIES {
        let get = |f: &str| median(dir, &format!("oneshot/{f}/{name}"));
        if let (Some(bare), Some(first), Some(steady), Some(replay)) = (
            get("bare"),
            get("first"),
            get("first_steady"),
            get("replay"),
        ) {
            println!(
                "| {name} | {} | {} | {} | {} | {} | {} | {} | {:.2}× | {:.2}× | {:.2}× |",
                us(bare),
                us(first),
                us(steady),
                us(replay),
                us(first - bare),
                us(steady - bare),
                us(replay - bare),
                first / bare,
                steady / bare,
                replay / bare
            );
        }
    }
    println!("\n## Memory store claim (medians of this run)\n");
    println!("| operation | 1k records | 1M records | 1M / 1k |");
    println!("|---|---|---|---|");
    for op in ["claim_new", "claim_replay"] {
        let get = |n: &str| median(dir, &format!("memory_store/{op}/{n}"));
        if let (Some(small), Some(large)) = (get("1k"), get("1M")) {
            let label = if op == "claim_new" {
                "claim a new key (+ release)"
            } else {
                "claim a completed key"
            };
            println!(
                "| {label} | {:.0} ns | {:.0} ns | {:.2}× |",
                small,
                large,
                large / small
            );
        }
    }
}

/// `IDEM_BENCH_PROFILE=bare|first|replay [IDEM_BENCH_ITERS=N]`: runs N calls of one case at
/// 1 KiB and nothing else, for `valgrind --tool=callgrind` (instruction counts per call).
fn profile(case: &str, iterations: u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let router = router();
    let body = body_of(1024);
    let path = if case == "bare" { "/bare" } else { "/idem" };
    rt.block_on(async {
        for n in 0..iterations {
            let key = match case {
                "replay" => "bench-replay-key".to_owned(),
                _ => format!("bench-key-{n:012}"),
            };
            assert_eq!(
                call(&router, request(path, &key, &body)).await,
                StatusCode::CREATED
            );
        }
    });
}

/// `IDEM_BENCH_PROFILE=store_replay IDEM_BENCH_RECORDS=R [IDEM_BENCH_ITERS=N]`: fills a
/// memory store with R completed records, then claims N of them as `memory_store` does, for
/// `valgrind --tool=cachegrind --cache-sim=yes`: simulated cache misses per claim, which this
/// VM's missing hardware counters cannot give.
fn store_profile(records: u64, iterations: u64) {
    let (store, existing) = filled_store(records);
    let mut at = 0usize;
    for _ in 0..iterations.div_ceil(PROBES) {
        for probe in &replay_probes(&existing, &mut at, PROBES) {
            std::hint::black_box(now(store.claim(probe)).expect("answers"));
        }
    }
}

fn main() {
    if let Ok(case) = std::env::var("IDEM_BENCH_PROFILE") {
        let number = |name: &str, default: u64| {
            std::env::var(name)
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(default)
        };
        let iterations = number("IDEM_BENCH_ITERS", 100_000);
        if case == "store_replay" {
            return store_profile(number("IDEM_BENCH_RECORDS", 1_000_000), iterations);
        }
        return profile(&case, iterations);
    }
    let dir = output_directory();
    let mut c = Criterion::default()
        .output_directory(&dir)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50)
        .configure_from_args();
    oneshot(&mut c);
    memory_store(&mut c);
    c.final_summary();
    // `cargo bench` passes `--bench`; `cargo test --benches` runs each case once, without it.
    if std::env::args().any(|arg| arg == "--bench") {
        summary(&dir);
    }
}
