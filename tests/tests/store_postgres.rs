//! The store conformance suite on [`PostgresStore`] (a database per test on a throwaway
//! server), and what only Postgres has: the round-trip budget, two application instances
//! racing, concurrent migrations, error classes.

use idem_tests::pg;

idem_tests::conformance_tests!(pg::fixture);

/// The conformance suite again, on a store with connections of its own
/// ([`PostgresStore::connect`]) instead of an application's pool.
mod own_connections {
    use idem_tests::pg;

    idem_tests::conformance_tests!(pg::own_fixture);
}

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use idem_runtime::OwnerToken;
use idem_runtime::{
    Acquired, ClaimOutcome, IdempotencyStore, Ownership, PostgresStore, RecordState, Store,
};
use idem_tests::conformance::{
    LONG, PAST_SHORT, SHORT, claim, fingerprint, fresh_id, previous_release_rows, response,
};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Every statement run in this database since the last reset, with its call count, leaving
/// out the statements that read and reset the statistics themselves.
async fn statements_since_reset(admin: &mut PgConnection) -> Vec<(String, i64)> {
    sqlx::query_as(
        "SELECT query, calls FROM pg_stat_statements
         WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND query NOT LIKE '%pg_stat_statements%'
         ORDER BY query",
    )
    .fetch_all(admin)
    .await
    .expect("read pg_stat_statements")
}

async fn reset_statements(admin: &mut PgConnection) {
    sqlx::query(
        "SELECT pg_stat_statements_reset(0, \
         (SELECT oid FROM pg_database WHERE datname = current_database()), 0)",
    )
    .execute(admin)
    .await
    .expect("reset pg_stat_statements");
}

fn one_statement(seen: &[(String, i64)], starting: &str) {
    let calls: i64 = seen.iter().map(|(_, calls)| calls).sum();
    assert_eq!(calls, 1, "expected exactly one statement, saw {seen:#?}");
    assert!(
        seen[0].0.trim_start().starts_with(starting),
        "expected {starting}…, saw {seen:#?}"
    );
}

/// One round trip per step (docs/contract.md, "Records"): a first call is one statement to
/// claim and one to complete; a replay is the single claim statement. Counted by the server
/// itself, in `pg_stat_statements`.
#[tokio::test]
async fn a_first_call_costs_two_statements_and_a_replay_one() {
    let Some(server) = pg::server().await else {
        return;
    };
    if !server.stat_statements {
        pg::skip("pg_stat_statements is not loaded on DATABASE_URL's server");
        return;
    }
    let db = server.create_database().await;
    let mut admin = db.connect().await;
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .execute(&mut admin)
        .await
        .expect("create the extension");
    let store = db.store().await;
    let id = fresh_id();
    // Warm the pool, so that only the steps themselves are counted.
    assert!(matches!(store.get(&id).await, Ok(None)));

    let first = claim(&id, "a", LONG, LONG);
    reset_statements(&mut admin).await;
    assert_eq!(
        store.claim(&first).await.ok(),
        Some(ClaimOutcome::Acquired(Acquired::New))
    );
    one_statement(
        &statements_since_reset(&mut admin).await,
        "WITH standing AS",
    );

    let stored = response(201, b"{\"id\":1}");
    reset_statements(&mut admin).await;
    assert!(matches!(
        store.complete(&first, &stored).await,
        Ok(Ownership::Held)
    ));
    one_statement(&statements_since_reset(&mut admin).await, "UPDATE");

    reset_statements(&mut admin).await;
    let replay = store.claim(&claim(&id, "a", LONG, LONG)).await;
    assert!(
        matches!(&replay, Ok(ClaimOutcome::Existing(r)) if r.state == RecordState::Completed(stored.clone())),
        "{replay:?}"
    );
    one_statement(
        &statements_since_reset(&mut admin).await,
        "WITH standing AS",
    );

    // The other steps are one statement each too, each on a claim of its own in progress.
    for (step, starting) in [
        ("renew", "UPDATE"),
        ("fail", "UPDATE"),
        ("release", "DELETE"),
    ] {
        let second = claim(&fresh_id(), "a", LONG, LONG);
        store.claim(&second).await.expect("claim");
        reset_statements(&mut admin).await;
        let done = match step {
            "renew" => store.renew(&second).await,
            "fail" => store.fail(&second).await,
            _ => store.release(&second).await,
        };
        assert!(matches!(done, Ok(Ownership::Held)), "{step}: {done:?}");
        one_statement(&statements_since_reset(&mut admin).await, starting);
    }
}

/// Two application instances (two stores, two pools) racing on the same keys, fresh and
/// abandoned: never two winners for one key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_never_both_win_a_claim() {
    let Some(db) = pg::database().await else {
        return;
    };
    let a = Store::new(db.store().await);
    let b = Store::new(db.store().await);
    for round in ["fresh", "abandoned"] {
        let ids: Vec<_> = (0..16).map(|_| fresh_id()).collect();
        if round == "abandoned" {
            // Every key in progress under a short lease that then lapses.
            for id in &ids {
                a.backend()
                    .claim(&claim(id, "a", SHORT, LONG))
                    .await
                    .expect("claim");
            }
            tokio::time::sleep(PAST_SHORT).await;
        }
        let mut tasks = Vec::new();
        for id in &ids {
            for n in 0..16 {
                let store = if n % 2 == 0 { a.clone() } else { b.clone() };
                let attempt = claim(id, "a", LONG, LONG);
                let key = id.key.as_str().to_owned();
                tasks.push(tokio::spawn(async move {
                    (key, store.backend().claim(&attempt).await)
                }));
            }
        }
        let mut winners: HashMap<String, Vec<Acquired>> = HashMap::new();
        for task in tasks {
            let (key, outcome) = task.await.expect("no claimer panics");
            match outcome.expect("every claim is answered") {
                ClaimOutcome::Acquired(how) => winners.entry(key).or_default().push(how),
                ClaimOutcome::Existing(record) => {
                    assert!(matches!(record.state, RecordState::InProgress { .. }));
                }
                ClaimOutcome::OverQuota { .. } => panic!("this store has no quota"),
            }
        }
        let expected = if round == "fresh" {
            Acquired::New
        } else {
            Acquired::Abandoned
        };
        assert_eq!(winners.len(), ids.len(), "{round}: a key had no winner");
        for (key, won) in winners {
            assert_eq!(
                won,
                [expected],
                "{round}: {key} was won {} times",
                won.len()
            );
        }
    }
}

/// Several instances starting at once all run the migrations; none fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_run_from_several_instances_at_once() {
    let Some(db) = pg::database().await else {
        return;
    };
    let mut stores = Vec::new();
    for _ in 0..6 {
        stores.push(PostgresStore::new(db.pool().await));
    }
    let runs: Vec<_> = stores
        .iter()
        .cloned()
        .map(|store| tokio::spawn(async move { store.migrate().await }))
        .collect();
    for run in runs {
        run.await
            .expect("no panic")
            .expect("every migration succeeds");
    }
    stores[0].migrate().await.expect("and again, later");
    let first = claim(&fresh_id(), "a", LONG, LONG);
    assert!(stores[1].claim(&first).await.is_ok());
}

/// Another table name gets a table of its own.
#[tokio::test]
async fn another_table_name_gets_its_own_table() {
    let Some(db) = pg::database().await else {
        return;
    };
    let store = PostgresStore::new(db.pool().await)
        .with_table("Payments_Idem")
        .expect("a plain identifier");
    store.migrate().await.expect("migrations run");
    store.migrate().await.expect("twice");
    let id = fresh_id();
    let first = claim(&id, "a", LONG, LONG);
    assert!(store.claim(&first).await.is_ok());
    let mut conn = db.connect().await;
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM \"Payments_Idem\"")
        .fetch_one(&mut conn)
        .await
        .expect("the table exists under its exact name");
    assert_eq!(count, 1);
    assert!(
        PostgresStore::new(db.pool().await)
            .with_table("a.b")
            .is_err()
    );
}

/// Schema missing: permanent. Server unreachable: transient.
#[tokio::test]
async fn errors_are_classified() {
    let Some(db) = pg::database().await else {
        return;
    };
    let unmigrated = PostgresStore::new(db.pool().await);
    let error = unmigrated
        .claim(&claim(&fresh_id(), "a", LONG, LONG))
        .await
        .expect_err("no table");
    assert!(!error.is_transient(), "{error}");

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let nowhere = PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(500))
        .connect_lazy(&format!("postgres://postgres@127.0.0.1:{port}/none"))
        .expect("a lazy pool");
    let error = PostgresStore::new(nowhere)
        .claim(&claim(&fresh_id(), "a", LONG, LONG))
        .await
        .expect_err("nothing listens there");
    assert!(error.is_transient(), "{error}");
}

/// `Store::purge_expired` empties expired records in batches and keeps a live FAILED_STORAGE one.
#[tokio::test]
async fn purge_deletes_in_bounded_batches_through_the_store_handle() {
    let Some((store, _db)) = pg::fixture().await else {
        return;
    };
    for _ in 0..7 {
        let short = claim(&fresh_id(), "a", LONG, SHORT);
        store.backend().claim(&short).await.expect("claim");
    }
    let kept = fresh_id();
    let long = claim(&kept, "a", LONG, LONG);
    store.backend().claim(&long).await.expect("claim");
    assert!(matches!(
        store.backend().fail(&long).await,
        Ok(Ownership::Held)
    ));
    tokio::time::sleep(PAST_SHORT).await;
    assert!(matches!(store.purge_expired(3).await, Ok(7)));
    let read = store.get(&kept).await.ok().flatten().map(|r| r.state);
    assert_eq!(read, Some(RecordState::FailedStorage));
}

/// Waits until some statement in this database waits on a lock.
async fn until_blocked(admin: &mut PgConnection) {
    for _ in 0..500 {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&mut *admin)
        .await
        .expect("read pg_stat_activity");
        if waiting > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the claim never blocked on the competing transaction");
}

/// READ COMMITTED corners, made to happen: a competing claim commits while ours waits on its
/// row lock, after our statement's snapshot was taken. Ours must come back with the record as
/// it now stands, having run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_that_loses_to_a_later_commit_returns_the_fresh_record() {
    let Some(db) = pg::database().await else {
        return;
    };
    let store = Store::new(db.store().await);
    for corner in ["inserted", "taken over"] {
        let id = fresh_id();
        if corner == "taken over" {
            let first = claim(&id, "a", SHORT, LONG);
            store.backend().claim(&first).await.expect("claim");
            tokio::time::sleep(PAST_SHORT).await;
        }
        let mut rival = db.connect().await;
        sqlx::query("BEGIN")
            .execute(&mut rival)
            .await
            .expect("begin");
        // The rival's claim: a fresh row, or the abandoned one taken over, live for a minute.
        sqlx::query(
            "INSERT INTO idempotency_keys (scope, handler, idempotency_key, request_fingerprint,
                 owner_token, locked_until, expires_at)
             VALUES ($1, $2, $3, $4, 'rival', now() + interval '1 minute', now() + interval '1 hour')
             ON CONFLICT (scope, handler, idempotency_key) DO UPDATE
             SET owner_token = 'rival', acquired = 'abandoned', locked_until = excluded.locked_until",
        )
        .bind(&id.scope)
        .bind(id.handler.as_ref())
        .bind(id.key.as_str())
        .bind(fingerprint("a").to_hex())
        .execute(&mut rival)
        .await
        .expect("the rival claims");

        let ours = claim(&id, "a", LONG, LONG);
        let racing = {
            let store = store.clone();
            tokio::spawn(async move { store.backend().claim(&ours).await })
        };
        let mut admin = db.connect().await;
        until_blocked(&mut admin).await;
        sqlx::query("COMMIT")
            .execute(&mut rival)
            .await
            .expect("commit");

        let outcome = racing.await.expect("no panic");
        match outcome {
            Ok(ClaimOutcome::Existing(record)) => {
                let RecordState::InProgress { lease_remaining } = record.state else {
                    panic!("{corner}: expected the rival's claim, got {record:?}");
                };
                assert!(lease_remaining > Duration::from_secs(30), "{corner}");
            }
            other => panic!("{corner}: expected the rival's live claim, got {other:?}"),
        }
    }
}

/// A TCP proxy in front of the test server that counts the round trips its clients make: the
/// `Sync` messages (the end of a statement's messages in the extended protocol, or a ping on
/// its own) and the `Query` messages (a statement in the simple protocol) they send.
struct SyncCounter {
    addr: SocketAddr,
    syncs: Arc<AtomicUsize>,
}

impl SyncCounter {
    async fn start(upstream: String) -> SyncCounter {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let syncs = Arc::new(AtomicUsize::new(0));
        let counted = syncs.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = tokio::net::TcpStream::connect(&upstream)
                    .await
                    .expect("the proxy reaches the test server");
                tokio::spawn(relay(client, server, counted.clone()));
            }
        });
        SyncCounter { addr, syncs }
    }

    fn syncs(&self) -> usize {
        self.syncs.load(Ordering::SeqCst)
    }
}

/// Copies both ways, counting the client's `Sync`s and `Query`s before forwarding them (so a
/// statement's are counted by the time its answer arrives).
async fn relay(
    client: tokio::net::TcpStream,
    server: tokio::net::TcpStream,
    syncs: Arc<AtomicUsize>,
) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let back = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
    });
    let mut frontend = Frontend::default();
    let mut buf = vec![0; 16 * 1024];
    loop {
        let n = match client_read.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        syncs.fetch_add(frontend.syncs_in(&buf[..n]), Ordering::SeqCst);
        if server_write.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    back.abort();
}

/// Splits the frontend's byte stream into Postgres protocol messages: untyped ones first (an
/// SSL or GSS request, then the startup message), then a type byte and a length each.
#[derive(Default)]
struct Frontend {
    started: bool,
    pending: Vec<u8>,
}

impl Frontend {
    fn syncs_in(&mut self, bytes: &[u8]) -> usize {
        const SSL_REQUEST: u32 = 80_877_103;
        const GSS_REQUEST: u32 = 80_877_104;
        let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
        self.pending.extend_from_slice(bytes);
        let (mut at, mut syncs) = (0, 0);
        loop {
            let rest = &self.pending[at..];
            if !self.started {
                if rest.len() < 8 || rest.len() < be(rest) {
                    break;
                }
                let code = be(&rest[4..]) as u32;
                self.started = code != SSL_REQUEST && code != GSS_REQUEST;
                at += be(rest);
            } else {
                if rest.len() < 5 || rest.len() < 1 + be(&rest[1..]) {
                    break;
                }
                syncs += usize::from(rest[0] == b'S' || rest[0] == b'Q');
                at += 1 + be(&rest[1..]);
            }
        }
        self.pending.drain(..at);
        syncs
    }
}

/// One round trip per step (docs/contract.md, "Records"), counted on the wire: a store made by
/// `PostgresStore::connect` costs one round trip per step. (sqlx's pool pings each connection
/// as it comes back, from a task of its own: a second round trip per statement, which the
/// store's own connections skip.)
#[tokio::test]
async fn a_store_of_its_own_makes_one_round_trip_per_step() {
    one_round_trip_per_step(false).await;
}

/// The same with the statements as text, as behind a transaction-mode pooler.
#[tokio::test]
async fn behind_a_pooler_a_store_still_makes_one_round_trip_per_step() {
    one_round_trip_per_step(true).await;
}

async fn one_round_trip_per_step(behind_pooler: bool) {
    let Some(db) = pg::database().await else {
        return;
    };
    let host = db.options.get_host().to_owned();
    let proxy = SyncCounter::start(format!("{host}:{}", db.options.get_port())).await;
    let direct = format!("{host}:{}", db.options.get_port());
    let url = db.url();
    if !url.contains(&direct) {
        pg::skip("DATABASE_URL does not name its host and port as host:port");
        return;
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    let proxied = format!(
        "{}{sep}sslmode=disable",
        url.replacen(&direct, &proxy.addr.to_string(), 1)
    );
    let mut store = db.own_store_at(&proxied).await;
    if behind_pooler {
        store = store.behind_pooler();
    }

    // Every statement once, so that each is prepared on the connection before counting.
    let warm = claim(&fresh_id(), "a", LONG, LONG);
    store.claim(&warm).await.expect("claim");
    let warmed = store.complete(&warm, &response(201, b"{}")).await;
    assert!(matches!(warmed, Ok(Ownership::Held)), "{warmed:?}");
    store.claim(&warm).await.expect("replay");
    store.get(&fresh_id()).await.expect("get");
    let stored = response(201, b"{\"id\":1}");

    let id = fresh_id();
    let first = claim(&id, "a", LONG, LONG);
    let before = proxy.syncs();
    assert_eq!(
        store.claim(&first).await.ok(),
        Some(ClaimOutcome::Acquired(Acquired::New))
    );
    assert!(matches!(
        store.complete(&first, &stored).await,
        Ok(Ownership::Held)
    ));
    let replay = store.claim(&claim(&id, "a", LONG, LONG)).await;
    assert!(
        matches!(&replay, Ok(ClaimOutcome::Existing(r)) if r.state == RecordState::Completed(stored.clone())),
        "{replay:?}"
    );
    // A first call (claim, complete) and a replay (claim): three round trips. Read after a
    // further statement, so that a round trip made in the background after the third step
    // would have been counted too.
    assert!(matches!(store.get(&fresh_id()).await, Ok(None)));
    assert_eq!(
        proxy.syncs() - before,
        4,
        "round trips for claim, complete, replay, get"
    );
}

/// A statement interrupted mid-flight (its future dropped, as the engine's store timeout
/// does) leaves no half-read answer behind: its connection is closed, and the store's next
/// statements get answers of their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_statement_leaves_no_answer_for_the_next() {
    let Some(db) = pg::database().await else {
        return;
    };
    let store = db.own_store().await;
    let known = claim(&fresh_id(), "a", LONG, LONG);
    store.claim(&known).await.expect("claim");
    let stored = response(201, b"{\"id\":1}");
    assert!(matches!(
        store.complete(&known, &stored).await,
        Ok(Ownership::Held)
    ));

    // Another transaction has inserted the key and not committed, so a claim on it waits for
    // that transaction; the claim is dropped while it waits, with its answer still to come.
    let id = fresh_id();
    let mut holder = db.connect().await;
    let mut tx = holder.begin().await.expect("begin");
    sqlx::query(
        "INSERT INTO idempotency_keys (scope, handler, idempotency_key, request_fingerprint,
                                       owner_token, locked_until, expires_at)
         VALUES ($1, $2, $3, 'other', 'other', now() + interval '1 hour',
                 now() + interval '1 hour')",
    )
    .bind(id.scope.as_str())
    .bind(id.handler.as_ref())
    .bind(id.key.as_str())
    .execute(&mut *tx)
    .await
    .expect("insert the key");
    let mut watcher = db.connect().await;
    let waiting = claim(&id, "b", LONG, LONG);
    tokio::select! {
        done = store.claim(&waiting) => panic!("the claim should wait for the insert: {done:?}"),
        () = until_blocked(&mut watcher) => {}
    }
    tx.rollback().await.expect("rollback");

    // The next statements answer for themselves, not with the dropped claim's rows.
    assert_eq!(
        store.claim(&claim(&fresh_id(), "a", LONG, LONG)).await.ok(),
        Some(ClaimOutcome::Acquired(Acquired::New))
    );
    let read = store
        .get(&known.id)
        .await
        .expect("get")
        .expect("the known record");
    assert_eq!(read.state, RecordState::Completed(stored));
    assert_eq!(read.fingerprint, known.fingerprint);
}

/// A connection the server dropped while the store was not using it fails the one statement
/// that finds it, as a transient error, and is replaced: the next statement succeeds.
#[tokio::test]
async fn a_connection_dropped_by_the_server_is_replaced() {
    let Some(db) = pg::database().await else {
        return;
    };
    let store = db.own_store().await;
    assert!(matches!(store.get(&fresh_id()).await, Ok(None)));

    let mut admin = db.connect().await;
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .execute(&mut admin)
    .await
    .expect("terminate the store's connections");
    let mut gone = false;
    for _ in 0..500 {
        let left: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .fetch_one(&mut admin)
        .await
        .expect("read pg_stat_activity");
        if left == 0 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(gone, "the store's connections were not terminated");

    let error = store
        .get(&fresh_id())
        .await
        .expect_err("the dropped connection fails its statement");
    assert!(error.is_transient(), "{error}");
    assert!(matches!(store.get(&fresh_id()).await, Ok(None)));
    let first = claim(&fresh_id(), "a", LONG, LONG);
    assert_eq!(
        store.claim(&first).await.ok(),
        Some(ClaimOutcome::Acquired(Acquired::New))
    );
}

/// A claim that cannot take its key (a replay, a request in progress, another request's key)
/// writes nothing: no row lock, so no transaction id and no commit to flush. Read from the
/// row's system columns: a lock or an update would set `xmax` or change `xmin`.
#[tokio::test]
async fn a_claim_that_takes_nothing_writes_nothing() {
    let Some(db) = pg::database().await else {
        return;
    };
    let store = db.own_store().await;
    let db = &db;
    let versions = |key: String| async move {
        let mut conn = db.connect().await;
        let row: (String, String) = sqlx::query_as(
            "SELECT xmin::text, xmax::text FROM idempotency_keys WHERE idempotency_key = $1",
        )
        .bind(key)
        .fetch_one(&mut conn)
        .await
        .expect("the record's row");
        row
    };

    let done = fresh_id();
    let first = claim(&done, "a", LONG, LONG);
    store.claim(&first).await.expect("claim");
    let stored = response(201, b"{\"id\":1}");
    assert!(matches!(
        store.complete(&first, &stored).await,
        Ok(Ownership::Held)
    ));
    let live = fresh_id();
    store
        .claim(&claim(&live, "a", LONG, LONG))
        .await
        .expect("claim");
    let (done_before, live_before) = (
        versions(done.key.as_str().to_owned()).await,
        versions(live.key.as_str().to_owned()).await,
    );
    assert_eq!(done_before.1, "0", "a completed row carries no lock");

    let replay = store.claim(&claim(&done, "a", LONG, LONG)).await;
    assert!(
        matches!(&replay, Ok(ClaimOutcome::Existing(r)) if r.state == RecordState::Completed(stored.clone())),
        "{replay:?}"
    );
    let mismatch = store.claim(&claim(&done, "b", LONG, LONG)).await;
    assert!(
        matches!(&mismatch, Ok(ClaimOutcome::Existing(r)) if r.fingerprint == first.fingerprint),
        "{mismatch:?}"
    );
    let conflict = store.claim(&claim(&live, "a", LONG, LONG)).await;
    assert!(
        matches!(&conflict, Ok(ClaimOutcome::Existing(r)) if matches!(r.state, RecordState::InProgress { .. })),
        "{conflict:?}"
    );
    assert_eq!(versions(done.key.as_str().to_owned()).await, done_before);
    assert_eq!(versions(live.key.as_str().to_owned()).await, live_before);
}

/// Rows the previous release wrote (an HTTP response; a plain function's value, stored as a
/// JSON response) read back as the responses they were, byte for byte.
#[tokio::test]
async fn rows_written_by_the_previous_release_read_back_as_responses() {
    let Some(db) = pg::database().await else {
        return;
    };
    let store = PostgresStore::new(db.pool().await);
    store.migrate().await.expect("migrations run");
    for (status, headers, body, payload) in previous_release_rows() {
        let id = fresh_id();
        sqlx::query(
            "INSERT INTO idempotency_keys (scope, handler, idempotency_key, request_fingerprint,
                 response_status, response_headers, response_body, owner_token, acquired,
                 locked_until, created_at, updated_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'new', now(), now(), now(),
                 now() + interval '1 hour')",
        )
        .bind(&id.scope)
        .bind(id.handler.as_ref())
        .bind(id.key.as_str())
        .bind(fingerprint("a").to_hex())
        .bind(status)
        .bind(headers)
        .bind(body)
        .bind(OwnerToken::random().to_hex())
        .execute(store.pool())
        .await
        .expect("the row is written");
        let read = store.get(&id).await.expect("the row is read");
        assert_eq!(
            read.map(|r| r.state),
            Some(RecordState::Completed(payload.into()))
        );
    }
}

/// Two instances purging one table at once remove each expired record once: what they
/// report adds up to the number expired (the purge skips rows another purge has locked),
/// and live records stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_purgers_remove_each_expired_record_once() {
    const EXPIRED: u64 = 2000;
    let Some(db) = pg::database().await else {
        return;
    };
    let a = Store::new(db.store().await);
    let b = Store::new(db.own_store().await);
    let kept = fresh_id();
    let long = claim(&kept, "a", LONG, LONG);
    a.backend().claim(&long).await.expect("claim");
    sqlx::query(
        "INSERT INTO idempotency_keys (scope, handler, idempotency_key, request_fingerprint,
             owner_token, locked_until, expires_at)
         SELECT '', 'purge::race', 'expired-' || n, 'fp', 'token', now(),
                now() - interval '1 second'
         FROM generate_series(1, $1::bigint) AS n",
    )
    .bind(EXPIRED as i64)
    .execute(&db.pool().await)
    .await
    .expect("expired rows are written");
    assert_eq!(a.stats().await.ok().map(|s| s.expired), Some(EXPIRED));

    let purgers: Vec<_> = [a.clone(), b.clone()]
        .into_iter()
        .map(|store| tokio::spawn(async move { store.purge_expired(25).await }))
        .collect();
    let mut reported = Vec::new();
    for purger in purgers {
        reported.push(purger.await.expect("no panic").expect("the purge succeeds"));
    }
    assert_eq!(reported.iter().sum::<u64>(), EXPIRED, "{reported:?}");
    let left = b.stats().await.expect("stats");
    assert_eq!((left.expired, left.in_progress), (0, 1));
    assert!(matches!(a.inspect(&kept).await, Ok(Some(_))));
}
