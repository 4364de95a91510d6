//! The store conformance suite on [`PostgresStore`] (a database per test on a throwaway
//! server), and what only Postgres has: the round-trip budget, two application instances
//! racing, concurrent migrations, error classes.

use idem_tests::pg;

idem_tests::conformance_tests!(pg::fixture);

use std::collections::HashMap;
use std::time::Duration;

use idem_runtime::{Acquired, ClaimOutcome, IdempotencyStore, PostgresStore, RecordState, Store};
use idem_tests::conformance::{LONG, PAST_SHORT, SHORT, claim, fingerprint, fresh_id, response};
use sqlx::PgConnection;
use sqlx::postgres::PgPoolOptions;

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

/// SPEC section 4: a first call is one statement to claim and one to complete; a replay is
/// the single claim statement. Counted by the server itself, in `pg_stat_statements`.
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
    one_statement(&statements_since_reset(&mut admin).await, "WITH claimed AS");

    let stored = response(201, b"{\"id\":1}");
    reset_statements(&mut admin).await;
    assert!(matches!(store.complete(&first, &stored).await, Ok(true)));
    one_statement(&statements_since_reset(&mut admin).await, "UPDATE");

    reset_statements(&mut admin).await;
    let replay = store.claim(&claim(&id, "a", LONG, LONG)).await;
    assert!(
        matches!(&replay, Ok(ClaimOutcome::Existing(r)) if r.state == RecordState::Completed(stored.clone())),
        "{replay:?}"
    );
    one_statement(&statements_since_reset(&mut admin).await, "WITH claimed AS");

    // The other steps are one statement each too.
    let second = claim(&fresh_id(), "a", LONG, LONG);
    store.claim(&second).await.expect("claim");
    for (step, starting) in [
        ("renew", "UPDATE"),
        ("fail", "UPDATE"),
        ("release", "DELETE"),
    ] {
        reset_statements(&mut admin).await;
        let done = match step {
            "renew" => store.renew(&second).await,
            "fail" => store.fail(&second).await,
            _ => store.release(&second).await,
        };
        assert!(matches!(done, Ok(true)), "{step}: {done:?}");
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
    assert!(matches!(store.backend().fail(&long).await, Ok(true)));
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
