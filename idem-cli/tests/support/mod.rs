//! What the `idem` binary's tests share: a migrated store on SQLite, on Postgres, or on
//! Postgres behind PgBouncer, a runner for the built binary, and records made through the
//! store's own claims.

use std::time::Duration;

use idem_runtime::{Acquired, Claim, ClaimOutcome, Ownership, RecordId, SqliteStore, Store};
use idem_tests::conformance::{LONG, claim, fresh_key, response};
use idem_tests::pg::TestDb;
use serde_json::Value;

/// The handler every record is stored under.
pub const HANDLER: &str = "payments::create_payment";
/// A stored body the tool must never print.
pub const BODY: &[u8] = b"{\"card\":\"4242-secret\"}";

/// A migrated store, the URL the binary opens it by, and what keeps it alive.
pub struct Fixture {
    pub store: Store,
    pub url: String,
    /// Flags the binary needs for this store beside `--store`.
    pub flags: &'static [&'static str],
    _db: Option<TestDb>,
    _dir: Option<tempfile::TempDir>,
}

pub async fn sqlite() -> Option<Fixture> {
    let dir = tempfile::tempdir().expect("a temp dir");
    let url = format!("sqlite://{}", dir.path().join("idem.db").display());
    let sqlite = SqliteStore::connect(&url).await.expect("open the database");
    sqlite.migrate().await.expect("migrations run");
    Some(Fixture {
        store: Store::new(sqlite),
        url,
        flags: &[],
        _db: None,
        _dir: Some(dir),
    })
}

pub async fn postgres() -> Option<Fixture> {
    let db = idem_tests::pg::database().await?;
    Some(Fixture {
        store: Store::new(db.own_store().await),
        url: db.url(),
        flags: &[],
        _db: Some(db),
        _dir: None,
    })
}

/// A Postgres database reached through a throwaway PgBouncer in transaction mode, which the
/// binary opens with `--behind-pooler` (without it, its named statements fail there).
pub async fn pgbouncer() -> Option<Fixture> {
    let (db, url) = idem_tests::bouncer::database().await?;
    Some(Fixture {
        store: Store::new(idem_tests::bouncer::store_at(&url).await),
        url,
        flags: &["--behind-pooler"],
        _db: Some(db),
        _dir: None,
    })
}

/// What one run of the binary left.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is one JSON object ({e}): {}", self.stdout))
    }

    pub fn succeeded(&self) -> &Self {
        assert_eq!(
            self.code,
            Some(0),
            "stdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        self
    }

    pub fn failed_with(&self, code: i32, message: &str) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "stdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        assert!(self.stderr.contains(message), "stderr: {}", self.stderr);
        self
    }
}

pub async fn idem(args: &[&str]) -> Run {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_idem"))
        .args(args)
        .output()
        .await
        .expect("run the idem binary");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `idem --store URL ARGS…` on the fixture's store.
pub async fn on(fixture: &Fixture, args: &[&str]) -> Run {
    let mut all = vec!["--store", &fixture.url];
    all.extend_from_slice(fixture.flags);
    all.extend_from_slice(args);
    idem(&all).await
}

pub fn fresh_id() -> RecordId {
    RecordId::new("", HANDLER, fresh_key())
}

pub async fn claimed(store: &Store, id: &RecordId, ttl: Duration) -> Claim {
    let claim = claim(id, "request", LONG, ttl);
    let outcome = store.backend().claim(&claim).await.expect("claim");
    assert_eq!(outcome, ClaimOutcome::Acquired(Acquired::New));
    claim
}

/// A COMPLETED record with a 201, one header and [`BODY`], living `ttl`.
pub async fn completed(store: &Store, ttl: Duration) -> RecordId {
    let id = fresh_id();
    let claim = claimed(store, &id, ttl).await;
    let done = store.backend().complete(&claim, &response(201, BODY)).await;
    assert!(matches!(done, Ok(Ownership::Held)), "{done:?}");
    id
}

/// An IN_PROGRESS record whose owner holds a long lease (a stuck key once the owner is gone).
pub async fn in_progress(store: &Store) -> RecordId {
    let id = fresh_id();
    claimed(store, &id, LONG).await;
    id
}

/// A FAILED_STORAGE record.
pub async fn failed_storage(store: &Store) -> RecordId {
    let id = fresh_id();
    let claim = claimed(store, &id, LONG).await;
    let failed = store.backend().fail(&claim).await;
    assert!(matches!(failed, Ok(Ownership::Held)), "{failed:?}");
    id
}

/// `inspect --handler H KEY`, and the same with `--json`.
pub async fn inspect(fixture: &Fixture, id: &RecordId) -> (Run, Run) {
    let args = ["inspect", "--handler", HANDLER, id.key.as_str()];
    let human = on(fixture, &args).await;
    let json = on(fixture, &[&args[..], &["--json"]].concat()).await;
    for run in [&human, &json] {
        run.succeeded();
        assert!(!run.stdout.contains("4242-secret"), "{}", run.stdout);
        assert!(!run.stdout.contains("application/json"), "{}", run.stdout);
    }
    (human, json)
}

pub fn ms(value: &Value) -> u64 {
    value
        .as_u64()
        .unwrap_or_else(|| panic!("milliseconds, not {value}"))
}
