//! The database under a `payments` process, Postgres or a SQLite file, as the black-box tests
//! see it: raw SQL, counts, and lease and lock probes.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use idem_runtime::OwnerToken;
use idem_tests::pg::TestDb;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
use sqlx::{AssertSqlSafe, Connection, SqliteConnection};

/// A trigger that fails the `UPDATE` storing a response while `refuse_control` is armed (as
/// it is made): a serialization failure on Postgres.
const REFUSE_RESPONSE_PG: &str = "
CREATE TABLE refuse_control (armed int NOT NULL);
INSERT INTO refuse_control VALUES (1);
CREATE FUNCTION refuse_response() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT armed FROM refuse_control) = 1 THEN
        RAISE EXCEPTION 'commit refused by the test' USING ERRCODE = '40001';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER refuse_response BEFORE UPDATE ON idempotency_keys FOR EACH ROW
    WHEN (NEW.response_status IS NOT NULL) EXECUTE FUNCTION refuse_response();";

/// The same on SQLite, where the trigger aborts the `UPDATE`.
const REFUSE_RESPONSE_SQLITE: &str = "
CREATE TABLE refuse_control (armed INTEGER NOT NULL);
INSERT INTO refuse_control VALUES (1);
CREATE TRIGGER refuse_response BEFORE UPDATE ON idempotency_keys
WHEN NEW.response_status IS NOT NULL AND (SELECT armed FROM refuse_control) = 1
BEGIN SELECT RAISE(ABORT, 'commit refused by the test'); END;";

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Postgres,
    Sqlite,
}

/// A database of its own for one test.
pub enum Db {
    Postgres(Box<TestDb>),
    /// A SQLite file in a folder deleted when dropped.
    Sqlite(Folder),
}

/// A folder of its own under the temp dir, deleted when dropped.
pub struct Folder(pub std::path::PathBuf);

impl Drop for Folder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Db {
    /// A fresh database; `None` when Postgres is unavailable (the harness said why).
    pub async fn open(kind: Kind) -> Option<Db> {
        match kind {
            Kind::Postgres => Some(Db::Postgres(Box::new(idem_tests::pg::database().await?))),
            Kind::Sqlite => {
                let name = format!("idem-pay-{}", OwnerToken::random().to_hex());
                let path = std::env::temp_dir().join(name);
                std::fs::create_dir(&path).expect("a temporary folder");
                Some(Db::Sqlite(Folder(path)))
            }
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            Db::Postgres(_) => Kind::Postgres,
            Db::Sqlite(_) => Kind::Sqlite,
        }
    }

    /// `IDEM_STORE` for the service.
    pub fn url(&self) -> String {
        match self {
            Db::Postgres(db) => db.url(),
            Db::Sqlite(folder) => format!("sqlite://{}/payments.db", folder.0.display()),
        }
    }

    async fn sqlite(folder: &Folder, busy: Duration) -> SqliteConnection {
        let options = SqliteConnectOptions::new()
            .filename(folder.0.join("payments.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(busy);
        SqliteConnection::connect_with(&options)
            .await
            .expect("open the SQLite file")
    }

    /// Runs `sql` (several statements allowed).
    pub async fn exec(&self, sql: &str) {
        let sql = AssertSqlSafe(sql.to_owned());
        let done = match self {
            Db::Postgres(db) => sqlx::raw_sql(sql)
                .execute(&mut db.connect().await)
                .await
                .map(drop),
            Db::Sqlite(folder) => {
                let mut conn = Self::sqlite(folder, Duration::from_secs(5)).await;
                sqlx::raw_sql(sql).execute(&mut conn).await.map(drop)
            }
        };
        done.unwrap_or_else(|e| panic!("{e}"));
    }

    /// The number a query answers (a `count(*)`, say).
    pub async fn number(&self, sql: &str) -> i64 {
        let sql = AssertSqlSafe(sql.to_owned());
        match self {
            Db::Postgres(db) => {
                sqlx::query_scalar(sql)
                    .fetch_one(&mut db.connect().await)
                    .await
            }
            Db::Sqlite(folder) => {
                let mut conn = Self::sqlite(folder, Duration::from_secs(5)).await;
                sqlx::query_scalar(sql).fetch_one(&mut conn).await
            }
        }
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// From now on, every response the service stores fails to be written, so a
    /// transactional run's commit fails.
    pub async fn refuse_answers(&self) {
        self.exec(match self.kind() {
            Kind::Postgres => REFUSE_RESPONSE_PG,
            Kind::Sqlite => REFUSE_RESPONSE_SQLITE,
        })
        .await;
    }

    /// Responses are stored again, after [`Db::refuse_answers`].
    pub async fn accept_answers(&self) {
        self.exec("UPDATE refuse_control SET armed = 0").await;
    }

    /// Payments in the table (what `GET /payments` lists, without a service).
    pub async fn payments(&self) -> i64 {
        self.number("SELECT count(*) FROM payments").await
    }

    /// Records in the idempotency table.
    pub async fn records(&self) -> i64 {
        self.number("SELECT count(*) FROM idempotency_keys").await
    }

    /// Whether `key` has an in-progress claim.
    pub async fn claimed(&self, key: &str) -> bool {
        let sql = format!(
            "SELECT count(*) FROM idempotency_keys
             WHERE idempotency_key = '{key}' AND response_status IS NULL"
        );
        self.number(&sql).await == 1
    }

    /// Whether `key`'s in-progress claim has run out of lease, by the database's clock.
    pub async fn lease_expired(&self, key: &str) -> bool {
        let now = match self.kind() {
            Kind::Postgres => "now()",
            Kind::Sqlite => "CAST(round(unixepoch('subsec') * 1000) AS INTEGER)",
        };
        let sql = format!(
            "SELECT count(*) FROM idempotency_keys
             WHERE idempotency_key = '{key}' AND response_status IS NULL AND locked_until <= {now}"
        );
        self.number(&sql).await == 1
    }

    /// How `key`'s claim was acquired (`new`, `abandoned`, `failed_storage`).
    pub async fn taken_over(&self, key: &str) -> bool {
        let sql = format!(
            "SELECT count(*) FROM idempotency_keys
             WHERE idempotency_key = '{key}' AND acquired = 'abandoned'"
        );
        self.number(&sql).await == 1
    }

    /// SQLite: whether a writer holds the file's write lock (a transaction that has written).
    pub async fn sqlite_write_locked(&self) -> bool {
        let Db::Sqlite(folder) = self else {
            panic!("a SQLite probe on Postgres");
        };
        let mut conn = Self::sqlite(folder, Duration::ZERO).await;
        match sqlx::raw_sql("BEGIN IMMEDIATE; ROLLBACK")
            .execute(&mut conn)
            .await
        {
            Ok(_) => false,
            Err(error) => {
                let busy = error
                    .as_database_error()
                    .and_then(|e| e.code())
                    .is_some_and(|code| code == "5" || code == "6");
                assert!(busy, "BEGIN IMMEDIATE failed otherwise: {error}");
                true
            }
        }
    }
}

/// Polls `check` every 20 ms until it holds, for at most `limit`.
pub async fn until<F: std::future::Future<Output = bool>>(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> F,
) {
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
