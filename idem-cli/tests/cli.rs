//! The built `idem` binary against real stores: each case runs on a SQLite file
//! (`sqlite::…`), on a throwaway Postgres database (`postgres::…`) and on one behind a
//! throwaway PgBouncer in transaction mode, opened with `--behind-pooler` (`pgbouncer::…`),
//! with records made through the store's own claims. The cases without a store check the refusals that come
//! before one is opened.

mod support;

use std::path::Path;

use idem_runtime::{Acquired, ClaimOutcome, IdempotencyKey, RecordId, SqliteStore};
use idem_tests::conformance::{LONG, PAST_SHORT, SHORT, claim, fresh_key};
use serde_json::{Value, json};

use support::{
    BODY, Fixture, HANDLER, claimed, completed, failed_storage, idem, in_progress, inspect, ms, on,
};

async fn inspect_shows_a_completed_record_without_its_body(fixture: &Fixture) {
    let id = completed(&fixture.store, LONG).await;
    let (human, json) = inspect(fixture, &id).await;
    let key = id.key.as_str();
    assert!(
        human
            .stdout
            .contains(&format!("key {key} on handler {HANDLER}"))
    );
    assert!(
        human.stdout.contains("state     completed\n"),
        "{}",
        human.stdout
    );
    let sizes = format!("response  201, 1 header, {} bytes of body", BODY.len());
    assert!(human.stdout.contains(&sizes), "{}", human.stdout);
    let json = json.json();
    assert_eq!(json["command"], "inspect");
    assert_eq!(
        (&json["key"], &json["handler"], &json["scope"]),
        (&json!(key), &json!(HANDLER), &json!(""))
    );
    assert_eq!(json["state"], "completed");
    assert_eq!(json["response_status"], 201);
    assert_eq!(
        (&json["headers"], &json["body_bytes"]),
        (&json!(1), &json!(BODY.len()))
    );
    let expires = ms(&json["expires_in_ms"]);
    assert!(expires > 0 && expires <= 60_000, "{json}");
    assert!(ms(&json["age_ms"]) < 60_000, "{json}");
}

async fn inspect_shows_an_in_progress_record_with_its_lease(fixture: &Fixture) {
    let id = in_progress(&fixture.store).await;
    let (human, json) = inspect(fixture, &id).await;
    assert!(
        human.stdout.contains("state     in_progress (lease: "),
        "{}",
        human.stdout
    );
    assert!(
        human.stdout.contains("response  none stored"),
        "{}",
        human.stdout
    );
    let json = json.json();
    assert_eq!(json["state"], "in_progress");
    let lease = ms(&json["lease_remaining_ms"]);
    assert!(lease > 0 && lease <= 60_000, "{json}");
    assert_eq!(
        (&json["response_status"], &json["body_bytes"]),
        (&Value::Null, &json!(0))
    );
}

async fn inspect_shows_a_failed_storage_record(fixture: &Fixture) {
    let id = failed_storage(&fixture.store).await;
    let (human, json) = inspect(fixture, &id).await;
    assert!(
        human
            .stdout
            .contains("state     failed_storage (the next request"),
        "{}",
        human.stdout
    );
    let json = json.json();
    assert_eq!(json["state"], "failed_storage");
    assert_eq!(json["response_status"], Value::Null);
    assert!(
        json.get("lease_remaining_ms").is_none_or(Value::is_null),
        "{json}"
    );
}

async fn evict_frees_a_stuck_key_so_the_next_claim_acquires_at_once(fixture: &Fixture) {
    let id = in_progress(&fixture.store).await;
    let retry = claim(&id, "request", LONG, LONG);
    let blocked = fixture.store.backend().claim(&retry).await.expect("claim");
    assert!(matches!(blocked, ClaimOutcome::Existing(_)), "{blocked:?}");

    let run = on(fixture, &["evict", "--handler", HANDLER, id.key.as_str()]).await;
    let said = format!("evicted key {} on handler {HANDLER}", id.key.as_str());
    assert!(run.succeeded().stdout.contains(&said), "{}", run.stdout);
    let retry = claim(&id, "request", LONG, LONG);
    let freed = fixture.store.backend().claim(&retry).await.expect("claim");
    assert_eq!(freed, ClaimOutcome::Acquired(Acquired::New));

    let json = on(
        fixture,
        &["--json", "evict", "--handler", HANDLER, id.key.as_str()],
    )
    .await;
    assert_eq!(json.succeeded().json()["deleted"], true);
}

async fn a_key_in_another_scope_is_another_record(fixture: &Fixture) {
    let key = fresh_key();
    let id = RecordId::new("tenant-1", HANDLER, key.clone());
    claimed(&fixture.store, &id, LONG).await;
    let args = ["inspect", "--handler", HANDLER, key.as_str()];
    on(fixture, &args).await.failed_with(1, "no record for key");
    let scoped = on(
        fixture,
        &[&args[..], &["--scope", "tenant-1", "--json"]].concat(),
    )
    .await;
    assert_eq!(scoped.succeeded().json()["scope"], "tenant-1");
}

async fn stats_counts_records_by_state(fixture: &Fixture) {
    let store = &fixture.store;
    for _ in 0..3 {
        completed(store, SHORT).await;
    }
    tokio::time::sleep(PAST_SHORT).await;
    completed(store, LONG).await;
    completed(store, LONG).await;
    in_progress(store).await;
    failed_storage(store).await;

    let human = on(fixture, &["stats"]).await;
    let lines: Vec<Vec<&str>> = human
        .succeeded()
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let expected = [
        ["state", "records"],
        ["in_progress", "1"],
        ["completed", "2"],
        ["failed_storage", "1"],
        ["expired", "3"],
    ];
    assert_eq!(lines, expected, "{}", human.stdout);
    let json = on(fixture, &["stats", "--json"]).await;
    assert_eq!(
        json.succeeded().json(),
        json!({"command": "stats", "in_progress": 1, "completed": 2, "failed_storage": 1, "expired": 3})
    );
}

async fn purge_removes_expired_records_and_prints_the_total(fixture: &Fixture) {
    let store = &fixture.store;
    let mut expired = Vec::new();
    for _ in 0..5 {
        expired.push(completed(store, SHORT).await);
    }
    tokio::time::sleep(PAST_SHORT).await;
    let live = completed(store, LONG).await;

    let run = on(fixture, &["purge", "--batch", "2"]).await;
    assert_eq!(run.succeeded().stdout, "purged 5 expired records\n");
    assert_eq!(
        run.stderr, "",
        "no progress bar when stderr is not a terminal"
    );
    let stats = store.stats().await.expect("stats");
    assert_eq!((stats.expired, stats.completed), (0, 1));
    assert!(store.inspect(&live).await.expect("inspect").is_some());

    let again = on(fixture, &["--json", "purge"]).await;
    assert_eq!(
        again.succeeded().json(),
        json!({"command": "purge", "purged": 0, "batch": 1000})
    );
}

async fn a_missing_key_is_an_error_with_exit_code_1(fixture: &Fixture) {
    let key = fresh_key();
    for command in ["inspect", "evict"] {
        let args = [command, "--handler", HANDLER, key.as_str()];
        let said = format!("no record for key {} on handler {HANDLER}", key.as_str());
        let run = on(fixture, &args).await;
        assert_eq!(run.failed_with(1, &said).stdout, "");
        let json = on(fixture, &[&args[..], &["--json"]].concat()).await;
        let json = json.failed_with(1, &said).json();
        assert_eq!(
            (&json["command"], &json["error"]["kind"]),
            (&json!(command), &json!("not_found"))
        );
    }
}

async fn an_invalid_key_is_refused_with_the_runtimes_message(fixture: &Fixture) {
    let too_short = IdempotencyKey::parse("short").expect_err("a short key is invalid");
    let run = on(fixture, &["inspect", "--handler", HANDLER, "short"]).await;
    run.failed_with(2, &format!("invalid key: {too_short}"));
    let run = on(
        fixture,
        &["evict", "--handler", HANDLER, "has spaces in it"],
    )
    .await;
    run.failed_with(2, "invalid key: an idempotency key may only contain");
}

macro_rules! on_every_store {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    if let Some(fixture) = super::support::sqlite().await {
                        super::$case(&fixture).await;
                    }
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    if let Some(fixture) = super::support::postgres().await {
                        super::$case(&fixture).await;
                    }
                }
            )*
        }
        mod pgbouncer {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    if let Some(fixture) = super::support::pgbouncer().await {
                        super::$case(&fixture).await;
                    }
                }
            )*
        }
    };
}

on_every_store!(
    inspect_shows_a_completed_record_without_its_body,
    inspect_shows_an_in_progress_record_with_its_lease,
    inspect_shows_a_failed_storage_record,
    evict_frees_a_stuck_key_so_the_next_claim_acquires_at_once,
    a_key_in_another_scope_is_another_record,
    stats_counts_records_by_state,
    purge_removes_expired_records_and_prints_the_total,
    a_missing_key_is_an_error_with_exit_code_1,
    an_invalid_key_is_refused_with_the_runtimes_message,
);

#[tokio::test]
async fn a_bad_url_is_a_usage_error_that_does_not_repeat_it() {
    let run = idem(&["--store", "mysql://root:hunter2@db/app", "stats"]).await;
    run.failed_with(2, "--store must be sqlite://PATH or postgres://");
    assert!(!run.stderr.contains("hunter2"), "{}", run.stderr);
    idem(&["stats"])
        .await
        .failed_with(2, "--store URL is required");
    let json = idem(&["--store", "payments.db", "--json", "stats"]).await;
    assert_eq!(
        json.failed_with(2, "no scheme").json()["error"]["kind"],
        "usage"
    );
}

#[tokio::test]
async fn a_missing_sqlite_file_is_refused_and_not_created() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("payments.db");
    let url = format!("sqlite://{}", path.display());
    let run = idem(&["--store", &url, "stats"]).await;
    run.failed_with(2, &format!("no SQLite database at {}", path.display()));
    assert!(
        !Path::new(&path).exists(),
        "the tool created {}",
        path.display()
    );
}

#[tokio::test]
async fn a_database_without_the_records_table_is_a_store_error() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let url = format!("sqlite://{}", dir.path().join("other.db").display());
    drop(SqliteStore::connect(&url).await.expect("an empty database"));
    idem(&["--store", &url, "stats"])
        .await
        .failed_with(1, "has it run its migrations?");
}

#[tokio::test]
async fn an_unreachable_postgres_is_a_store_error() {
    // Port 1 on loopback: nothing listens, the connection is refused at once.
    let url = "postgres://postgres:hunter2@127.0.0.1:1/idem";
    let run = idem(&["--store", url, "stats"]).await;
    run.failed_with(1, "cannot connect to the Postgres store");
    assert!(!run.stderr.contains("hunter2"), "{}", run.stderr);
}

#[tokio::test]
async fn every_command_has_help_with_the_exit_codes() {
    for command in [
        &["--help"][..],
        &["inspect", "--help"],
        &["evict", "--help"],
        &["purge", "--help"],
        &["stats", "--help"],
    ] {
        let run = idem(command).await;
        assert!(
            run.succeeded().stdout.contains("Exit codes:"),
            "{command:?}: {}",
            run.stdout
        );
    }
}
