//! gRPC transactional mode on the real `grpc_payments` binary (docs/contract.md, "The gRPC
//! adapter"): a method whose commit fails answers `UNAVAILABLE` with `retry-after: 1`, none of
//! its writes happened and its key is free, on Postgres and on a SQLite file.

mod support;

use support::db::{Db, Kind};
use support::grpc::{Instance, pay, replayed};
use tonic::Code;

async fn failed_commit(kind: Kind) {
    let Some(db) = Db::open(kind).await else {
        return;
    };
    let url = db.url();
    let env = [("IDEM_STORE", url.as_str()), ("IDEM_MODE", "transactional")];
    let service = Instance::start(&env).await;
    let mut client = service.client.clone();
    db.refuse_answers().await;
    let refused = client
        .create_payment(pay(Some("refused-key-02"), 1200, "EUR"))
        .await
        .expect_err("the commit is refused");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert_eq!(refused.metadata().get("retry-after").unwrap(), "1");
    assert_eq!(db.payments().await, 0, "the payment rolled back");
    assert_eq!(db.records().await, 0, "the key is free");

    db.accept_answers().await;
    let stored = client
        .create_payment(pay(Some("refused-key-02"), 1200, "EUR"))
        .await
        .expect("the retry runs");
    assert!(!replayed(stored.metadata()));
    let replay = client
        .create_payment(pay(Some("refused-key-02"), 1200, "EUR"))
        .await
        .expect("the stored answer");
    assert!(replayed(replay.metadata()));
    assert_eq!(replay.into_inner(), stored.into_inner());
    assert_eq!(db.payments().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_failed_commit_is_unavailable_and_the_next_call_runs() {
    failed_commit(Kind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_failed_commit_is_unavailable_and_the_next_call_runs() {
    failed_commit(Kind::Sqlite).await;
}
