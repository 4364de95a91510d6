//! The store conformance suite on [`SqliteStore`] (a WAL database file per test), and what
//! only SQLite has: in-memory databases, migrations run twice, errors classified.

use std::path::PathBuf;

use idem_runtime::{IdempotencyStore, OwnerToken, RecordState, SqliteStore, Store};
use idem_tests::conformance::{LONG, claim, fingerprint, fresh_id, previous_release_rows};

/// A database file in the temp dir, deleted (with its WAL) when the test ends.
struct TempDb(PathBuf);

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut path = self.0.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}

fn temp_db() -> TempDb {
    let name = format!(
        "idem-sqlite-{}-{}.db",
        std::process::id(),
        OwnerToken::random().to_hex()
    );
    TempDb(std::env::temp_dir().join(name))
}

async fn sqlite_store(db: &TempDb) -> SqliteStore {
    let url = format!("sqlite://{}", db.0.display());
    let store = SqliteStore::connect(&url).await.expect("open the database");
    store.migrate().await.expect("migrations run");
    store
}

async fn sqlite() -> Option<(Store, TempDb)> {
    let db = temp_db();
    let store = sqlite_store(&db).await;
    Some((Store::new(store), db))
}

idem_tests::conformance_tests!(sqlite);

#[tokio::test]
async fn migrations_run_twice_and_from_two_pools_at_once() {
    let db = temp_db();
    let url = format!("sqlite://{}", db.0.display());
    let a = SqliteStore::connect(&url).await.expect("open");
    let b = SqliteStore::connect(&url).await.expect("open");
    let (ra, rb) = tokio::join!(a.migrate(), b.migrate());
    ra.expect("first migration");
    rb.expect("concurrent migration");
    a.migrate().await.expect("a second run is harmless");
    let first = claim(&fresh_id(), "a", LONG, LONG);
    assert!(a.claim(&first).await.is_ok());
}

#[tokio::test]
async fn an_in_memory_database_keeps_its_records_across_calls() {
    let store = SqliteStore::connect("sqlite::memory:")
        .await
        .expect("open in memory");
    store.migrate().await.expect("migrations run");
    let id = fresh_id();
    let first = claim(&id, "a", LONG, LONG);
    assert!(store.claim(&first).await.is_ok());
    assert!(matches!(store.get(&id).await, Ok(Some(_))));
}

#[tokio::test]
async fn a_missing_table_is_a_permanent_error() {
    let db = temp_db();
    let url = format!("sqlite://{}", db.0.display());
    let store = SqliteStore::connect(&url).await.expect("open");
    let error = store
        .claim(&claim(&fresh_id(), "a", LONG, LONG))
        .await
        .expect_err("no table yet");
    assert!(!error.is_transient(), "{error}");
}

#[tokio::test]
async fn another_table_name_is_used_and_bad_names_are_refused() {
    let db = temp_db();
    let store = sqlite_store(&db)
        .await
        .with_table("payments_idempotency")
        .expect("a plain identifier");
    assert_eq!(store.table(), "payments_idempotency");
    store.migrate().await.expect("migrations run");
    assert!(
        store
            .claim(&claim(&fresh_id(), "a", LONG, LONG))
            .await
            .is_ok()
    );
    let bad = sqlite_store(&db).await.with_table("x; DROP TABLE y");
    assert!(bad.is_err());
}

/// Rows the previous release wrote (an HTTP response; a plain function's value, stored as a
/// JSON response) read back as the responses they were, byte for byte.
#[tokio::test]
async fn rows_written_by_the_previous_release_read_back_as_responses() {
    let db = temp_db();
    let store = sqlite_store(&db).await;
    for (status, headers, body, payload) in previous_release_rows() {
        let id = fresh_id();
        sqlx::query(
            "INSERT INTO idempotency_keys (scope, handler, idempotency_key, request_fingerprint,
                 response_status, response_headers, response_body, owner_token, acquired,
                 locked_until, created_at, updated_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'new',
                 CAST(round(unixepoch('subsec') * 1000) AS INTEGER),
                 CAST(round(unixepoch('subsec') * 1000) AS INTEGER),
                 CAST(round(unixepoch('subsec') * 1000) AS INTEGER),
                 CAST(round(unixepoch('subsec') * 1000) AS INTEGER) + 3600000)",
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
