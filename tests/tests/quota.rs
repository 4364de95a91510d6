//! Quotas (docs/contract.md, "Quotas"): a store may cap the live records one scope holds.
//! Beyond the cap a new key is 429 `quota-exceeded` with `Retry-After`, on every store, while
//! other scopes, replays and keys already held go on; on the memory store a scope that floods
//! keys fills its quota, not the store.

mod support;

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::{Request, StatusCode};
use axum::routing::post;
use idem_runtime::{Error, MemoryStore, PostgresStore, SqliteStore, Store, idempotent};
use support::http::{Answer, Caller, authenticate, send};
use support::metrics::Metrics;

/// The quota of every store here.
const QUOTA: u64 = 3;

#[idempotent(store = idem, ttl = "1h")]
async fn pay(State(idem): State<Store>, caller: Extension<Caller>, body: String) -> String {
    format!("paid {body} for {}", caller.0)
}

fn router(store: Store) -> Router {
    Router::new()
        .route("/pay", post(pay))
        .layer(axum::middleware::from_fn(authenticate))
        .with_state(store.scope_by_extension::<Caller>())
}

fn request(caller: &str, key: &str) -> Request<Body> {
    Request::post("/pay")
        .header("authorization", format!("Bearer {caller}"))
        .header("idempotency-key", key)
        .body(Body::from("12 EUR"))
        .expect("a valid request")
}

async fn pay_with(router: &Router, caller: &str, n: usize) -> Answer {
    send(router, request(caller, &format!("order-{n:04}"))).await
}

/// Fills alice's quota, meets it, and checks that bob, replays and held keys go on.
async fn beyond_the_quota(store: Store) {
    let router = router(store);
    for n in 0..QUOTA as usize {
        assert_eq!(pay_with(&router, "alice", n).await.status, StatusCode::OK);
    }
    let refused = pay_with(&router, "alice", 99).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.problem_type(), "urn:idem:problem:quota-exceeded");
    let retry_after: u64 = refused.headers["retry-after"]
        .to_str()
        .ok()
        .and_then(|s| s.parse().ok())
        .expect("Retry-After in seconds");
    assert!(
        (3000..=3600).contains(&retry_after),
        "room comes when the first record expires, within its 1 h ttl: {retry_after}"
    );

    let replay = pay_with(&router, "alice", 0).await;
    assert!(replay.replayed(), "a key already held is not refused");
    for n in 0..QUOTA as usize {
        let bob = pay_with(&router, "bob", n).await;
        assert_eq!(bob.status, StatusCode::OK, "another scope is unaffected");
        assert_eq!(bob.body, format!("paid 12 EUR for bob"));
    }
}

/// A migrated store on an in-memory SQLite database.
async fn sqlite() -> SqliteStore {
    let sqlite = SqliteStore::connect("sqlite::memory:")
        .await
        .expect("open an in-memory database");
    sqlite.migrate().await.expect("migrations run");
    sqlite
}

/// A migrated store on a fresh Postgres database, with the database's guard; `None` when
/// Postgres is unavailable (the harness said why).
async fn postgres() -> Option<(PostgresStore, idem_tests::pg::TestDb)> {
    let db = idem_tests::pg::database().await?;
    let postgres = PostgresStore::new(db.pool().await);
    postgres.migrate().await.expect("migrations run");
    Some((postgres, db))
}

#[tokio::test]
async fn memory_beyond_the_quota_is_429_and_other_scopes_go_on() {
    beyond_the_quota(Store::new(MemoryStore::new().scope_quota(QUOTA))).await;
}

#[tokio::test]
async fn sqlite_beyond_the_quota_is_429_and_other_scopes_go_on() {
    let sqlite = sqlite().await;
    beyond_the_quota(Store::new(sqlite.scope_quota(QUOTA))).await;
}

#[tokio::test]
async fn postgres_beyond_the_quota_is_429_and_other_scopes_go_on() {
    let Some((postgres, _db)) = postgres().await else {
        return;
    };
    beyond_the_quota(Store::new(postgres.scope_quota(QUOTA))).await;
}

/// The claim within a quota as text through PgBouncer in transaction mode.
#[tokio::test]
async fn postgres_behind_pgbouncer_beyond_the_quota_is_429_and_other_scopes_go_on() {
    let Some((_db, url)) = idem_tests::bouncer::database().await else {
        return;
    };
    let postgres = idem_tests::bouncer::store_at(&url).await;
    beyond_the_quota(Store::new(postgres.scope_quota(QUOTA))).await;
}

/// Alice floods 5,000 keys into a store of 3,200 records (100 in each of its 32 shards: with
/// 5,000 keys, a shard left with room is over 4 standard deviations from the mean of 156); then
/// bob makes his first call.
async fn flood_then_first_call(store: MemoryStore) -> (usize, StatusCode) {
    let router = router(Store::new(store));
    let mut accepted = 0;
    for n in 0..5000 {
        accepted += usize::from(pay_with(&router, "alice", n).await.status == StatusCode::OK);
    }
    (accepted, pay_with(&router, "bob", 0).await.status)
}

#[tokio::test]
async fn on_the_memory_store_one_scope_flooding_keys_does_not_fail_another_scopes_first_call() {
    // 160 records spread over 32 shards fill none of them (each holds 100).
    let (accepted, bob) =
        flood_then_first_call(MemoryStore::with_capacity(3200).scope_quota(160)).await;
    assert_eq!(accepted, 160, "alice filled her quota, not the store");
    assert_eq!(bob, StatusCode::OK);

    // Without a quota the same flood fills the store, and bob's first call fails.
    let (accepted, bob) = flood_then_first_call(MemoryStore::with_capacity(3200)).await;
    assert_eq!(accepted, 3200, "the store took records until it was full");
    assert_eq!(bob, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn on_the_memory_store_expired_records_make_room_again() {
    let metrics = Metrics::install();
    let store = Store::new(MemoryStore::new().scope_quota(QUOTA));
    let router = router(store);
    for n in 0..QUOTA as usize {
        assert_eq!(pay_with(&router, "alice", n).await.status, StatusCode::OK);
    }
    assert_eq!(
        pay_with(&router, "alice", 10).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(metrics.outcome("quota_exceeded"), 1);
    // The records expire (1 h ttl): the next refusal sweeps them, and the key is taken.
    tokio::time::advance(Duration::from_secs(3601)).await;
    assert_eq!(pay_with(&router, "alice", 11).await.status, StatusCode::OK);
}

#[derive(Debug)]
struct JobError(Error);

impl From<Error> for JobError {
    fn from(error: Error) -> Self {
        JobError(error)
    }
}

#[idempotent(store = idem, key = id, scope = tenant)]
async fn charge(#[idem(skip)] idem: &Store, tenant: &str, id: String) -> Result<u32, JobError> {
    Ok(id.len() as u32)
}

#[tokio::test]
async fn a_plain_function_beyond_the_quota_gets_quota_exceeded() {
    let store = Store::new(MemoryStore::new().scope_quota(1));
    assert_eq!(charge(&store, "acme", "job-0001".into()).await.unwrap(), 8);
    let refused = charge(&store, "acme", "job-0002".into()).await.unwrap_err();
    assert!(
        matches!(refused.0, Error::QuotaExceeded { .. }),
        "{refused:?}"
    );
    assert!(
        refused.0.retry_after().is_some(),
        "a quota refusal can pass"
    );
    assert_eq!(
        charge(&store, "globex", "job-0002".into()).await.unwrap(),
        8
    );
}

/// The SQL stores count live records only, and a takeover of a key already held needs no room.
async fn expired_records_leave_room_and_takeovers_need_none(store: Store) {
    use idem_runtime::{Acquired, ClaimOutcome, IdempotencyKey, RecordId};
    use idem_tests::conformance::{LONG, PAST_SHORT, SHORT, claim};
    let id =
        |key: &str| RecordId::new("acme", "quota::claims", IdempotencyKey::parse(key).unwrap());
    let backend = store.backend();
    let brief = claim(&id("brief-0001"), "a", LONG, SHORT);
    let abandoned = claim(&id("stuck-0001"), "a", SHORT, LONG);
    let third = claim(&id("third-0001"), "a", LONG, LONG);
    for first in [&brief, &abandoned] {
        assert_eq!(
            backend.claim(first).await.unwrap(),
            ClaimOutcome::Acquired(Acquired::New)
        );
    }
    assert!(matches!(
        backend.claim(&third).await.unwrap(),
        ClaimOutcome::OverQuota { .. }
    ));
    tokio::time::sleep(PAST_SHORT).await; // the store's clock passes the ttl and the lease
    let mut retry = abandoned.clone();
    retry.token = idem_runtime::OwnerToken::random();
    assert_eq!(
        backend.claim(&retry).await.unwrap(),
        ClaimOutcome::Acquired(Acquired::Abandoned),
        "a key the scope holds already is taken over at its quota"
    );
    assert_eq!(
        backend.claim(&third).await.unwrap(),
        ClaimOutcome::Acquired(Acquired::New),
        "the expired record no longer counts"
    );
}

#[tokio::test]
async fn sqlite_counts_live_records_only() {
    let sqlite = sqlite().await;
    expired_records_leave_room_and_takeovers_need_none(Store::new(sqlite.scope_quota(2))).await;
}

#[tokio::test]
async fn postgres_counts_live_records_only() {
    let Some((postgres, _db)) = postgres().await else {
        return;
    };
    expired_records_leave_room_and_takeovers_need_none(Store::new(postgres.scope_quota(2))).await;
}

/// The largest quota a store takes, past what the database's 64-bit count (or, for memory, the
/// address space) holds, saturates: every new key is admitted, none refused as if the quota
/// were negative or zero.
async fn the_largest_quota_admits_every_key(store: Store) {
    let router = router(store);
    for n in 0..QUOTA as usize + 1 {
        assert_eq!(pay_with(&router, "alice", n).await.status, StatusCode::OK);
    }
}

#[tokio::test]
async fn memory_takes_the_largest_quota() {
    the_largest_quota_admits_every_key(Store::new(MemoryStore::new().scope_quota(u64::MAX))).await;
}

#[tokio::test]
async fn sqlite_takes_the_largest_quota() {
    let sqlite = sqlite().await;
    the_largest_quota_admits_every_key(Store::new(sqlite.scope_quota(u64::MAX))).await;
}

#[tokio::test]
async fn postgres_takes_the_largest_quota() {
    let Some((postgres, _db)) = postgres().await else {
        return;
    };
    the_largest_quota_admits_every_key(Store::new(postgres.scope_quota(u64::MAX))).await;
}
