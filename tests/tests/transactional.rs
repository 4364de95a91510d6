//! Transactional mode at the store (docs/contract.md, "Transactional mode"): a transaction
//! opened on the store's own database, the work's writes through it, and the stored result,
//! commit together or not at all. Every case runs on Postgres, on Postgres behind PgBouncer in
//! transaction mode, and on a SQLite file.
//!
//! Cases that need writes go through `function::run_transactional`, the one public way to hold
//! a `Tx`; the others call `IdempotencyStore::begin` and `StoreTransaction::commit` directly.

use std::sync::Arc;
use std::time::Duration;

use idem_runtime::function::{self, Arguments};
use idem_runtime::{
    Acquired, Claim, ClaimOutcome, Config, FailingStore, Fingerprint, IdempotencyKey, Isolation,
    Op, OwnerToken, Ownership, RecordId, RecordState, Scope, Store, Target,
};
use idem_tests::conformance::{LONG, PAST_SHORT, SHORT, response};
use tokio::sync::oneshot;

const HANDLER: &str = "transactional::record";

/// What the work returns when it declines: its own error, which rolls the transaction back.
#[derive(Debug)]
enum Failure {
    Declined,
    Idem(idem_runtime::Error),
}

impl From<idem_runtime::Error> for Failure {
    fn from(error: idem_runtime::Error) -> Self {
        Failure::Idem(error)
    }
}

fn key(text: &str) -> IdempotencyKey {
    IdempotencyKey::parse(text).expect("a valid test key")
}

fn target() -> Target {
    Target {
        handler: HANDLER.into(),
        scope: Scope::None,
    }
}

/// The fingerprint `function::run_transactional` computes for a call with `note`.
fn fingerprint_of(note: &str) -> Fingerprint {
    Arguments::new()
        .arg(note)
        .fingerprint()
        .expect("a string serializes")
}

/// A claim on `text` for a call with `note`, as another caller would make it.
fn claim_for(text: &str, note: &str, lease: Duration) -> Claim {
    Claim {
        id: RecordId::new("", HANDLER, key(text)),
        fingerprint: fingerprint_of(note),
        token: OwnerToken::random(),
        lease,
        ttl: LONG,
    }
}

async fn state(store: &Store, text: &str) -> Option<RecordState> {
    let id = RecordId::new("", HANDLER, key(text));
    store
        .get(&id)
        .await
        .expect("the store answers")
        .map(|r| r.state)
}

/// One case per behaviour, for one backend: `$tx` is its `Tx`, `$fixture` an `async fn()`
/// answering `Option<(Arc<FailingStore<_>>, pool, guard)>` with a `ledger (note TEXT)` table.
macro_rules! transactional_cases {
    ($db:ident, $tx:ty, $fixture:path) => {
        mod $db {
            use super::*;

            /// A transactional call that writes `note` to the ledger, after `gate` opens (if
            /// given), and returns `Ok(1)` or, when `decline`, its own error.
            async fn call(
                store: &Store,
                config: &Config,
                text: &str,
                note: &str,
                gate: Option<(oneshot::Sender<()>, oneshot::Receiver<()>)>,
                decline: bool,
            ) -> Result<u32, Failure> {
                let written = note.to_owned();
                function::run_transactional(
                    store.clone(),
                    config,
                    target(),
                    function::key(text),
                    Arguments::new().arg(note),
                    move |mut tx: $tx| async move {
                        if let Some((started, go)) = gate {
                            let _ = started.send(());
                            let _ = go.await;
                        }
                        // Unnamed, so that it runs through a transaction-mode pooler too.
                        sqlx::query("INSERT INTO ledger (note) VALUES ($1)")
                            .persistent(false)
                            .bind(written)
                            .execute(&mut *tx)
                            .await
                            .map_err(|_| Failure::Declined)?;
                        if decline {
                            return Err(Failure::Declined);
                        }
                        Ok(1)
                    },
                )
                .await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_commit_stores_the_result_and_the_writes_together() {
                let Some((failing, pool, _guard)) = $fixture().await else {
                    return;
                };
                let store = Store::new(failing.clone());
                let config = Config::new().transactional(Isolation::Default);
                let first = call(&store, &config, "tx-commit-0001", "paid", None, false).await;
                assert!(matches!(first, Ok(1)), "{first:?}");
                assert!(matches!(
                    state(&store, "tx-commit-0001").await,
                    Some(RecordState::Completed(_))
                ));
                assert_eq!(ledger(&pool).await, vec!["paid".to_owned()]);
                let again = call(&store, &config, "tx-commit-0001", "paid", None, false).await;
                assert!(matches!(again, Ok(1)), "replayed: {again:?}");
                assert_eq!(ledger(&pool).await.len(), 1, "the replay wrote nothing");
                assert_eq!(
                    failing.calls(Op::Complete),
                    0,
                    "completed in the transaction"
                );
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_commit_after_a_takeover_is_lost_and_leaves_none_of_the_writes() {
                let Some((failing, pool, _guard)) = $fixture().await else {
                    return;
                };
                // Renewals stalled: the running call's lease runs out while it waits.
                failing.fail_always(Op::Renew);
                let store = Store::new(failing.clone());
                let config = Config::new().transactional(Isolation::Default).lease(SHORT);
                let (started, running) = oneshot::channel();
                let (go, gate) = oneshot::channel();
                let owner = {
                    let store = store.clone();
                    tokio::spawn(async move {
                        let gate = Some((started, gate));
                        call(&store, &config, "tx-fence-0001", "first", gate, false).await
                    })
                };
                running.await.expect("the call runs");
                tokio::time::sleep(PAST_SHORT).await; // the lease passes on the store's clock
                let taker = claim_for("tx-fence-0001", "first", LONG);
                let took = store.backend().claim(&taker).await.expect("claims");
                assert!(
                    matches!(took, ClaimOutcome::Acquired(Acquired::Abandoned)),
                    "{took:?}"
                );
                go.send(()).expect("the call waits");
                let lost = owner.await.expect("no panic");
                assert!(
                    matches!(lost, Err(Failure::Idem(idem_runtime::Error::CommitFailed))),
                    "{lost:?}"
                );
                assert!(
                    ledger(&pool).await.is_empty(),
                    "the fenced writes rolled back"
                );
                assert!(
                    matches!(
                        state(&store, "tx-fence-0001").await,
                        Some(RecordState::InProgress { .. })
                    ),
                    "the taker's claim stands"
                );
                let done = store
                    .backend()
                    .complete(&taker, &response(201, b"{}"))
                    .await;
                assert!(matches!(done, Ok(Ownership::Held)), "{done:?}");
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_commit_by_a_claim_taken_over_answers_lost() {
                let Some((failing, _pool, _guard)) = $fixture().await else {
                    return;
                };
                let store = Store::new(failing);
                let owner = claim_for("tx-lost-00001", "n", SHORT);
                let claimed = store.backend().claim(&owner).await.expect("claims");
                assert!(matches!(claimed, ClaimOutcome::Acquired(Acquired::New)));
                let transaction = store
                    .backend()
                    .begin(Isolation::Default)
                    .expect("a SQL store opens transactions")
                    .await
                    .expect("begins");
                tokio::time::sleep(PAST_SHORT).await; // the lease passes on the store's clock
                let taker = claim_for("tx-lost-00001", "n", LONG);
                let took = store.backend().claim(&taker).await.expect("claims");
                assert!(matches!(took, ClaimOutcome::Acquired(Acquired::Abandoned)));
                let committed = transaction.commit(&owner, &response(201, b"{}")).await;
                assert!(matches!(committed, Ok(Ownership::Lost)), "{committed:?}");
                assert!(matches!(
                    state(&store, "tx-lost-00001").await,
                    Some(RecordState::InProgress { .. })
                ));
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_rollback_leaves_neither_writes_nor_a_record() {
                let Some((failing, pool, _guard)) = $fixture().await else {
                    return;
                };
                let store = Store::new(failing);
                let config = Config::new().transactional(Isolation::Default);
                let declined = call(&store, &config, "tx-undo-00001", "no", None, true).await;
                assert!(matches!(declined, Err(Failure::Declined)), "{declined:?}");
                assert!(ledger(&pool).await.is_empty(), "rolled back");
                assert!(state(&store, "tx-undo-00001").await.is_none(), "released");
                let retried = call(&store, &config, "tx-undo-00001", "no", None, false).await;
                assert!(matches!(retried, Ok(1)), "the key runs again: {retried:?}");
                assert_eq!(ledger(&pool).await, vec!["no".to_owned()]);
            }

            /// Writes to the ledger, then panics.
            async fn write_then_panic(mut tx: $tx) -> Result<u32, Failure> {
                sqlx::query("INSERT INTO ledger (note) VALUES ('boom')")
                    .execute(&mut *tx)
                    .await
                    .map_err(|_| Failure::Declined)?;
                panic!("the function panics after its write");
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_panic_leaves_neither_writes_nor_a_record() {
                let Some((failing, pool, _guard)) = $fixture().await else {
                    return;
                };
                let store = Store::new(failing);
                let run = tokio::spawn({
                    let store = store.clone();
                    async move {
                        let config = Config::new().transactional(Isolation::Default);
                        function::run_transactional(
                            store,
                            &config,
                            target(),
                            function::key("tx-panic-0001"),
                            Arguments::new().arg("boom"),
                            write_then_panic,
                        )
                        .await
                    }
                });
                let ended = run.await.expect_err("the panic resumes in the caller");
                assert!(ended.is_panic());
                assert!(ledger(&pool).await.is_empty(), "rolled back");
                assert!(state(&store, "tx-panic-0001").await.is_none(), "released");
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn release_does_not_delete_a_record_completed_in_a_transaction() {
                let Some((failing, _pool, _guard)) = $fixture().await else {
                    return;
                };
                let store = Store::new(failing);
                let owner = claim_for("tx-kept-00001", "n", LONG);
                let claimed = store.backend().claim(&owner).await.expect("claims");
                assert!(matches!(claimed, ClaimOutcome::Acquired(Acquired::New)));
                let transaction = store
                    .backend()
                    .begin(Isolation::Default)
                    .expect("a SQL store opens transactions")
                    .await
                    .expect("begins");
                let committed = transaction.commit(&owner, &response(201, b"{}")).await;
                assert!(matches!(committed, Ok(Ownership::Held)), "{committed:?}");
                let released = store.backend().release(&owner).await;
                assert!(matches!(released, Ok(Ownership::Lost)), "{released:?}");
                assert!(matches!(
                    state(&store, "tx-kept-00001").await,
                    Some(RecordState::Completed(_))
                ));
            }
        }
    };
}

/// The ledger's notes, in order.
async fn ledger<'c, DB>(pool: &'c sqlx::Pool<DB>) -> Vec<String>
where
    DB: sqlx::Database,
    &'c sqlx::Pool<DB>: sqlx::Executor<'c, Database = DB>,
    <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
    (String,): for<'r> sqlx::FromRow<'r, DB::Row>,
{
    sqlx::query_scalar("SELECT note FROM ledger ORDER BY note")
        .fetch_all(pool)
        .await
        .expect("the ledger reads")
}

/// A migrated Postgres store on a fresh database with a ledger table.
async fn postgres() -> Option<(
    Arc<FailingStore<idem_runtime::PostgresStore>>,
    sqlx::PgPool,
    idem_tests::pg::TestDb,
)> {
    let db = idem_tests::pg::database().await?;
    let store = db.own_store().await;
    let pool = store.pool().clone();
    sqlx::query("CREATE TABLE ledger (note TEXT NOT NULL)")
        .execute(&pool)
        .await
        .expect("create the ledger");
    Some((Arc::new(FailingStore::new(store)), pool, db))
}

/// The same behind PgBouncer in transaction mode: the store through the pooler, the ledger
/// read directly.
async fn postgres_behind_pgbouncer() -> Option<(
    Arc<FailingStore<idem_runtime::PostgresStore>>,
    sqlx::PgPool,
    idem_tests::pg::TestDb,
)> {
    let (db, url) = idem_tests::bouncer::database().await?;
    let store = idem_tests::bouncer::store_at(&url).await;
    let pool = db.pool().await;
    sqlx::query("CREATE TABLE ledger (note TEXT NOT NULL)")
        .execute(&pool)
        .await
        .expect("create the ledger");
    Some((Arc::new(FailingStore::new(store)), pool, db))
}

/// A folder of its own under the temp dir, deleted when dropped.
struct Folder(std::path::PathBuf);

impl Folder {
    fn new() -> Self {
        let name = format!("idem-tx-{}", OwnerToken::random().to_hex());
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir(&path).expect("a temporary folder");
        Folder(path)
    }
}

impl Drop for Folder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A migrated SQLite store in a file of its own with a ledger table.
async fn sqlite() -> Option<(
    Arc<FailingStore<idem_runtime::SqliteStore>>,
    sqlx::SqlitePool,
    Folder,
)> {
    let folder = Folder::new();
    let url = format!("sqlite://{}/tx.db", folder.0.display());
    let store = idem_runtime::SqliteStore::connect(&url)
        .await
        .expect("opens");
    store.migrate().await.expect("migrates");
    let pool = store.pool().clone();
    sqlx::query("CREATE TABLE ledger (note TEXT NOT NULL)")
        .execute(&pool)
        .await
        .expect("create the ledger");
    Some((Arc::new(FailingStore::new(store)), pool, folder))
}

transactional_cases!(on_postgres, idem_runtime::PgTx, postgres);
transactional_cases!(on_sqlite, idem_runtime::SqliteTx, sqlite);
transactional_cases!(
    behind_pgbouncer,
    idem_runtime::PgTx,
    postgres_behind_pgbouncer
);

/// What `SHOW transaction_isolation` answers inside a transactional call at `isolation`.
async fn isolation_seen(store: &Store, text: &str, isolation: Isolation) -> String {
    let config = Config::new().transactional(isolation);
    let seen: Result<String, Failure> = function::run_transactional(
        store.clone(),
        &config,
        target(),
        function::key(text),
        Arguments::new().arg("isolation"),
        |mut tx: idem_runtime::PgTx| async move {
            sqlx::query_scalar("SHOW transaction_isolation")
                .fetch_one(&mut *tx)
                .await
                .map_err(|_| Failure::Declined)
        },
    )
    .await;
    seen.expect("the call runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serializable_isolation_opens_a_serializable_transaction_on_postgres() {
    let Some((failing, _pool, _db)) = postgres().await else {
        return;
    };
    let store = Store::new(failing);
    let default = isolation_seen(&store, "tx-iso-default", Isolation::Default).await;
    assert_eq!(default, "read committed");
    let serializable = isolation_seen(&store, "tx-iso-serial1", Isolation::Serializable).await;
    assert_eq!(serializable, "serializable");
    let repeatable = isolation_seen(&store, "tx-iso-repeat1", Isolation::RepeatableRead).await;
    assert_eq!(repeatable, "repeatable read");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tx_for_another_database_runs_nothing_and_frees_the_key() {
    let Some((failing, pool, _folder)) = sqlite().await else {
        return;
    };
    let store = Store::new(failing);
    let config = Config::new().transactional(Isolation::Default);
    let refused: Result<u32, Failure> = function::run_transactional(
        store.clone(),
        &config,
        target(),
        function::key("tx-wrong-0001"),
        Arguments::new().arg("wrong"),
        |_tx: idem_runtime::PgTx| async move { Ok(1) },
    )
    .await;
    assert!(
        matches!(
            refused,
            Err(Failure::Idem(idem_runtime::Error::StoreUnavailable(_)))
        ),
        "{refused:?}"
    );
    assert!(ledger(&pool).await.is_empty());
    assert!(state(&store, "tx-wrong-0001").await.is_none(), "released");
}
