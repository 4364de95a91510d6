//! Black-box tests: the real `payments` binary over real HTTP, on each store
//! (docs/contract.md, "The example server").

mod support;

use idem_examples::client::Client;
use support::Service;

const EUR: &str = r#"{"amount":1200,"currency":"EUR"}"#;

/// Every route of the example server (docs/contract.md, "The example server"), and the
/// idempotency rows a user meets through them.
async fn every_route(client: Client) {
    let health = client.get("/healthz").await.unwrap();
    assert_eq!(health.status, 200);
    assert_eq!(client.payment_count().await.unwrap(), 0);

    let first = client.pay(Some("e2e-key-0001"), EUR).await.unwrap();
    assert_eq!(first.status, 201, "{}", first.text());
    let payment = first.json();
    assert_eq!(payment["amount"], 1200);
    assert_eq!(payment["currency"], "EUR");
    assert!(payment["id"].is_i64());
    assert!(!first.replayed());

    for _ in 0..10 {
        let again = client.pay(Some("e2e-key-0001"), EUR).await.unwrap();
        assert_eq!(again.status, 201);
        assert_eq!(again.body, first.body, "replayed byte for byte");
        assert_eq!(again.header("content-type"), first.header("content-type"));
        assert!(again.replayed());
    }
    let listed = client.get("/payments").await.unwrap();
    assert_eq!(listed.status, 200);
    assert_eq!(
        listed.json(),
        serde_json::json!([payment]),
        "one payment after ten retries"
    );

    let mismatch = client
        .pay(Some("e2e-key-0001"), r#"{"amount":1,"currency":"EUR"}"#)
        .await
        .unwrap();
    assert_eq!(mismatch.status, 422);
    assert_eq!(
        mismatch.header("content-type"),
        Some("application/problem+json")
    );

    let refused = client
        .pay(Some("e2e-key-0002"), r#"{"amount":0,"currency":"EUR"}"#)
        .await
        .unwrap();
    assert_eq!(refused.status, 422, "the handler's own 422");
    assert_eq!(refused.header("content-type"), Some("application/json"));
    let refused_again = client
        .pay(Some("e2e-key-0002"), r#"{"amount":0,"currency":"EUR"}"#)
        .await
        .unwrap();
    assert!(
        refused_again.replayed(),
        "a 4xx is stored like any response"
    );
    assert_eq!(refused_again.body, refused.body);

    let failed = client
        .pay(Some("e2e-key-0003"), r#"{"amount":5,"currency":"ERR"}"#)
        .await
        .unwrap();
    assert_eq!(failed.status, 500);
    let failed_again = client
        .pay(Some("e2e-key-0003"), r#"{"amount":5,"currency":"ERR"}"#)
        .await
        .unwrap();
    assert_eq!(failed_again.status, 500);
    assert!(
        !failed_again.replayed(),
        "a 500 is not stored: the retry ran the handler"
    );

    let missing = client.pay(None, EUR).await.unwrap();
    assert_eq!(missing.status, 400);
    assert_eq!(missing.json()["type"], "urn:idem:problem:missing-key");
    let invalid = client.pay(Some("bad key!"), EUR).await.unwrap();
    assert_eq!(invalid.status, 400);
    assert_eq!(invalid.json()["type"], "urn:idem:problem:invalid-key");

    assert_eq!(
        client.payment_count().await.unwrap(),
        1,
        "only the first payment was recorded"
    );

    let metrics = client.get("/metrics").await.unwrap();
    assert_eq!(metrics.status, 200);
    let text = metrics.text();
    for outcome in [
        "executed",
        "replayed",
        "mismatch",
        "missing_key",
        "invalid_key",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with("idempotency_requests_total")
                    && l.contains(&format!("outcome=\"{outcome}\""))),
            "no {outcome} counter in:\n{text}"
        );
    }
    assert!(!text.contains("e2e-key"), "metrics never carry keys");
}

/// Keys are per caller (docs/contract.md, "Scopes"): the service scopes them by the caller its
/// authentication middleware names, so two callers sending one key get two payments, each
/// replayed to its own caller only, and another body is a fresh run, not a 422.
#[tokio::test]
async fn two_callers_with_one_key_get_two_payments() {
    let service = Service::start(&[("IDEM_STORE", "memory")]).await;
    let client = service.client;
    let alice = client.pay_as("alice", "e2e-key-0100", EUR).await.unwrap();
    let bob = client.pay_as("bob", "e2e-key-0100", EUR).await.unwrap();
    assert_eq!((alice.status.as_u16(), bob.status.as_u16()), (201, 201));
    assert!(!bob.replayed(), "bob is not replayed alice's payment");
    assert_ne!(alice.json()["id"], bob.json()["id"]);
    let alice_again = client.pay_as("alice", "e2e-key-0100", EUR).await.unwrap();
    assert!(alice_again.replayed());
    assert_eq!(alice_again.body, alice.body);

    let usd = r#"{"amount":9900,"currency":"USD"}"#;
    let fresh = client.pay_as("bob", "e2e-key-0101", usd).await.unwrap();
    let other = client.pay_as("alice", "e2e-key-0101", EUR).await.unwrap();
    assert_eq!(
        (fresh.status.as_u16(), other.status.as_u16()),
        (201, 201),
        "{}",
        other.text()
    );
    assert_eq!(client.payment_count().await.unwrap(), 4);

    let forged = client
        .pay_as("not a caller!", "e2e-key-0102", EUR)
        .await
        .unwrap();
    assert_eq!(forged.status, 401);
    assert_eq!(client.payment_count().await.unwrap(), 4);
}

#[tokio::test]
async fn every_route_on_memory() {
    let service = Service::start(&[("IDEM_STORE", "memory")]).await;
    every_route(service.client).await;
}

#[tokio::test]
async fn every_route_on_sqlite_and_records_survive_a_restart() {
    let folder = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/payments.db", folder.path().display());
    let service = Service::start(&[("IDEM_STORE", &url)]).await;
    every_route(service.client).await;
    let first = service.client.pay(Some("e2e-key-0001"), EUR).await.unwrap();
    assert!(first.status.is_success(), "graceful shutdown after SIGTERM");
    assert!(service.terminate().await.success());

    let restarted = Service::start(&[("IDEM_STORE", &url)]).await;
    let replay = restarted
        .client
        .pay(Some("e2e-key-0001"), EUR)
        .await
        .unwrap();
    assert!(replay.replayed());
    assert_eq!(replay.body, first.body);
    assert_eq!(restarted.client.payment_count().await.unwrap(), 1);
}

#[tokio::test]
async fn the_default_store_is_a_sqlite_file_in_the_working_folder() {
    let folder = tempfile::tempdir().unwrap();
    let service = Service::start_in(Some(folder.path()), &[]).await;
    let reply = service.client.pay(Some("e2e-key-0009"), EUR).await.unwrap();
    assert_eq!(reply.status, 201);
    assert!(folder.path().join("payments.db").exists());
}

#[tokio::test]
async fn every_route_on_postgres() {
    let Some(db) = idem_tests::pg::database().await else {
        return;
    };
    let url = db.url();
    let service = Service::start(&[("IDEM_STORE", &url)]).await;
    every_route(service.client).await;
}

#[tokio::test]
async fn two_instances_sharing_postgres_are_one_service() {
    let Some(db) = idem_tests::pg::database().await else {
        return;
    };
    let url = db.url();
    let env = [("IDEM_STORE", url.as_str())];
    let (a, b) = tokio::join!(Service::start(&env), Service::start(&env));
    let first = a.client.pay(Some("e2e-shared-0001"), EUR).await.unwrap();
    assert_eq!(first.status, 201);
    let through_b = b.client.pay(Some("e2e-shared-0001"), EUR).await.unwrap();
    assert!(
        through_b.replayed(),
        "a key claimed through one instance replays through the other"
    );
    assert_eq!(through_b.body, first.body);
    let mismatch = b
        .client
        .pay(Some("e2e-shared-0001"), r#"{"amount":7,"currency":"EUR"}"#)
        .await
        .unwrap();
    assert_eq!(mismatch.status, 422);
    assert_eq!(a.client.payment_count().await.unwrap(), 1);
    assert_eq!(
        b.client.payment_count().await.unwrap(),
        1,
        "both list the one shared payment"
    );
}

#[tokio::test]
async fn the_tour_runs_to_the_end() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_tour"))
        .output()
        .await
        .expect("the tour starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the tour failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("The tour is over"));
    assert!(
        stdout.contains("idempotency_storage_failure_total"),
        "{stdout}"
    );
}
