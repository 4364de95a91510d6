//! A guided tour: starts the payments service in-process on a free port, on a SQLite file
//! in a temporary folder, and walks through what a request meets, one table row a step. The
//! steps run in plain mode; the last ones run the story of a response the store fails to save
//! again in transactional mode (`IDEM_MODE=transactional`, a second service on the same
//! file), where the payment and the stored response commit together: one payment for the key
//! instead of two. Keys are per caller (`Authorization: Bearer <caller>`; without it the
//! example's caller is `guest`): two callers sending one key get two records.
//!
//! ```text
//! cargo run -p idem-examples --bin tour
//! ```

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use idem_examples::app::{self, AppState, Error, GUEST};
use idem_examples::client::{Client, Reply};
use idem_examples::payments::Payments;
use idem_examples::settings::{Mode, Settings, StoreUrl};
use idem_runtime::{FailingStore, IdempotencyKey, Op, RecordId, RecordState, Store};
use metrics_exporter_prometheus::PrometheusBuilder;
use tokio::net::TcpListener;

/// Makes SQLite refuse to store responses while armed: the transactional steps' store
/// failure, inside the transaction that also holds the payment.
const REFUSE_RESPONSES: &str = "
CREATE TABLE tour_refuse_responses (armed INTEGER NOT NULL);
INSERT INTO tour_refuse_responses VALUES (0);
CREATE TRIGGER tour_refuse_response BEFORE UPDATE ON idempotency_keys
WHEN NEW.response_status IS NOT NULL AND (SELECT armed FROM tour_refuse_responses) = 1
BEGIN SELECT RAISE(ABORT, 'the tour refuses to store this response'); END;";

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match tour().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("tour failed: {error}");
            ExitCode::FAILURE
        }
    }
}

struct Tour {
    client: Client,
    store: Store,
    /// The handler name of the mode the current steps run in.
    handler: &'static str,
    step: usize,
}

impl Tour {
    async fn row(&mut self, request: &str, reply: &Reply, happened: &str) -> Result<(), Error> {
        self.step += 1;
        let payments = self.client.payment_count().await?;
        let mut status = reply.status.as_u16().to_string();
        if reply.replayed() {
            status.push_str(" (replayed)");
        }
        if let Some(after) = reply.header("retry-after") {
            status.push_str(&format!(" retry in {after}s"));
        }
        println!(
            "{:>2}  {:<44} {:<20} {:<52} {:>3}",
            self.step, request, status, happened, payments
        );
        Ok(())
    }

    /// The state of the guest caller's record of `key`.
    async fn state(&self, key: &str) -> Result<&'static str, Error> {
        self.state_of(GUEST, key).await
    }

    /// The state of `caller`'s record of `key`: keys are scoped by caller.
    async fn state_of(&self, caller: &str, key: &str) -> Result<&'static str, Error> {
        let id = RecordId::new(caller, self.handler, IdempotencyKey::parse(key)?);
        Ok(match self.store.get(&id).await?.map(|r| r.state) {
            None => "none",
            Some(RecordState::InProgress { .. }) => "IN_PROGRESS",
            Some(RecordState::FailedStorage) => "FAILED_STORAGE",
            Some(RecordState::Completed(_)) => "COMPLETED",
        })
    }
}

fn expect(reply: &Reply, status: u16) -> Result<(), Error> {
    if reply.status.as_u16() == status {
        Ok(())
    } else {
        Err(format!("expected {status}, got {}: {}", reply.status, reply.text()).into())
    }
}

async fn tour() -> Result<(), Error> {
    let folder = tempfile::tempdir()?;
    let url = format!("sqlite://{}/tour.db", folder.path().display());
    let mut settings = Settings::from_vars(|_| None)?;
    settings.store = StoreUrl::parse(&url)?;
    settings.latency = Duration::from_millis(300);
    settings.retries = Some(3);
    settings.mode = Mode::Plain;

    let metrics = PrometheusBuilder::new().install_recorder()?;
    let (backend, payments) = app::open(&settings).await?;
    let Payments::Sqlite(pool) = &payments else {
        return Err("the tour runs on SQLite".into());
    };
    sqlx::raw_sql(REFUSE_RESPONSES).execute(pool).await?;
    let pool = pool.clone();
    let failing = Arc::new(FailingStore::new(backend));
    let state = AppState::new(
        &settings,
        failing.clone(),
        payments.clone(),
        Some(metrics.clone()),
    )?;
    let transactional = Settings {
        mode: Mode::Transactional,
        ..settings.clone()
    };
    let tx_state = AppState::new(&transactional, failing.clone(), payments, Some(metrics))?;
    let tx_handler = tx_state.create_handler();
    let store = state.idem.clone();
    let (client, stop, server) = start(state).await?;
    let (tx_client, tx_stop, tx_server) = start(tx_state).await?;

    println!(
        "idem tour: the payments service on http://{} (SQLite, a 300 ms processor)\n",
        client.addr()
    );
    println!(
        "{:>2}  {:<44} {:<20} {:<52} {:>3}",
        "#", "request", "status", "what happened", "payments"
    );
    println!("{}", "-".repeat(126));
    let mut t = Tour {
        client,
        store,
        handler: "idem_examples::app::create_payment",
        step: 0,
    };
    let eur = r#"{"amount":1200,"currency":"EUR"}"#;

    let first = client.pay(Some("tour-key-0001"), eur).await?;
    expect(&first, 201)?;
    t.row(
        "POST key tour-key-0001, 12.00 EUR",
        &first,
        "new key: the handler ran, response stored",
    )
    .await?;

    let replay = client.pay(Some("tour-key-0001"), eur).await?;
    expect(&replay, 201)?;
    let same = if replay.body == first.body {
        "same bytes"
    } else {
        "DIFFERENT BYTES"
    };
    t.row(
        "same key, same body",
        &replay,
        &format!("replayed from the store ({same}), no new payment"),
    )
    .await?;

    let changed = client
        .pay(Some("tour-key-0001"), r#"{"amount":9900,"currency":"EUR"}"#)
        .await?;
    expect(&changed, 422)?;
    t.row(
        "same key, amount changed",
        &changed,
        "refused: a key belongs to one request",
    )
    .await?;

    let racing = tokio::spawn(async move { client.pay(Some("tour-key-0002"), eur).await });
    while t.state("tour-key-0002").await? != "IN_PROGRESS" {
        tokio::task::yield_now().await;
    }
    let duplicate = client.pay(Some("tour-key-0002"), eur).await?;
    expect(&duplicate, 409)?;
    t.row(
        "key tour-key-0002 while its first is running",
        &duplicate,
        "the first request is still in progress",
    )
    .await?;
    let racing = racing.await??;
    expect(&racing, 201)?;
    t.row(
        "  ...the first request of tour-key-0002",
        &racing,
        "finished: one payment for two requests",
    )
    .await?;

    let missing = client.pay(None, eur).await?;
    expect(&missing, 400)?;
    t.row(
        "no Idempotency-Key",
        &missing,
        "refused before the handler: missing key",
    )
    .await?;
    let invalid = client.pay(Some("short"), eur).await?;
    expect(&invalid, 400)?;
    t.row(
        "Idempotency-Key: short",
        &invalid,
        "refused before the handler: invalid key",
    )
    .await?;

    let usd = r#"{"amount":9900,"currency":"USD"}"#;
    let alice = client.pay_as("alice", "tour-key-0006", eur).await?;
    expect(&alice, 201)?;
    t.row(
        "as alice: key tour-key-0006, 12.00 EUR",
        &alice,
        "alice's new key: the handler ran",
    )
    .await?;
    let bob = client.pay_as("bob", "tour-key-0006", eur).await?;
    expect(&bob, 201)?;
    if bob.replayed() {
        return Err("bob was replayed alice's response".into());
    }
    t.row(
        "as bob: the same key, the same body",
        &bob,
        "bob's own record: ran for bob, not alice's",
    )
    .await?;
    let bob_other = client.pay_as("bob", "tour-key-0007", usd).await?;
    let alice_other = client.pay_as("alice", "tour-key-0007", eur).await?;
    expect(&bob_other, 201)?;
    expect(&alice_other, 201)?;
    t.row(
        "as bob, then alice: key 0007, other bodies",
        &alice_other,
        "a fresh run for alice, no 422 telling of bob",
    )
    .await?;
    let alice_again = client.pay_as("alice", "tour-key-0006", eur).await?;
    expect(&alice_again, 201)?;
    let (a, b) = (
        t.state_of("alice", "tour-key-0006").await?,
        t.state_of("bob", "tour-key-0006").await?,
    );
    t.row(
        "as alice again: key tour-key-0006",
        &alice_again,
        &format!("her own bytes; records: alice {a}, bob {b}"),
    )
    .await?;

    let broken = client
        .pay(Some("tour-key-0003"), r#"{"amount":500,"currency":"ERR"}"#)
        .await?;
    expect(&broken, 500)?;
    t.row(
        "key tour-key-0003, processor fails",
        &broken,
        "500 is not stored: the key stays free",
    )
    .await?;
    let fixed = client
        .pay(Some("tour-key-0003"), r#"{"amount":500,"currency":"USD"}"#)
        .await?;
    expect(&fixed, 201)?;
    t.row(
        "  retry of tour-key-0003",
        &fixed,
        "the handler ran again and succeeded",
    )
    .await?;

    let eur44 = r#"{"amount":4400,"currency":"EUR"}"#;
    failing.fail_always(Op::Complete);
    let lost = client.pay(Some("tour-key-0004"), eur44).await?;
    expect(&lost, 201)?;
    let state = t.state("tour-key-0004").await?;
    t.row(
        "key tour-key-0004, store fails to save",
        &lost,
        &format!("client got 201; 3 writes failed: {state}"),
    )
    .await?;
    failing.heal_all();
    let recovered = client.pay(Some("tour-key-0004"), eur44).await?;
    expect(&recovered, 201)?;
    let state = t.state("tour-key-0004").await?;
    t.row(
        "  retry of tour-key-0004, store healed",
        &recovered,
        &format!("FAILED_STORAGE taken over: ran again, now {state}"),
    )
    .await?;
    let again = client.pay(Some("tour-key-0004"), eur44).await?;
    expect(&again, 201)?;
    t.row("  and once more", &again, "replayed").await?;

    println!(
        "\n    the same story in transactional mode (IDEM_MODE=transactional, http://{}):\n    \
         the payment is written in the transaction that stores the response",
        tx_client.addr()
    );
    t.handler = tx_handler;
    let eur55 = r#"{"amount":5500,"currency":"EUR"}"#;
    refuse_responses(&pool, true).await?;
    let refused = tx_client.pay(Some("tour-key-0005"), eur55).await?;
    expect(&refused, 503)?;
    let state = t.state("tour-key-0005").await?;
    t.row(
        "key tour-key-0005, store fails to save",
        &refused,
        &format!("commit failed: no payment, no response ({state})"),
    )
    .await?;
    refuse_responses(&pool, false).await?;
    let stored = tx_client.pay(Some("tour-key-0005"), eur55).await?;
    expect(&stored, 201)?;
    let state = t.state("tour-key-0005").await?;
    t.row(
        "  retry of tour-key-0005, store healed",
        &stored,
        &format!("ran once: payment and response together, {state}"),
    )
    .await?;
    let again = tx_client.pay(Some("tour-key-0005"), eur55).await?;
    expect(&again, 201)?;
    t.row("  and once more", &again, "replayed").await?;
    let plain_runs = payments_of(&client, 4400).await?;
    let tx_runs = payments_of(&client, 5500).await?;
    println!(
        "\npayments for tour-key-0004 (plain): {plain_runs}; for tour-key-0005 (transactional): \
         {tx_runs}"
    );
    if (plain_runs, tx_runs) != (2, 1) {
        return Err(format!("expected 2 and 1 payments, got {plain_runs} and {tx_runs}").into());
    }

    println!("\nmetrics (GET /metrics):");
    let metrics = client.get("/metrics").await?.text();
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("idempotency_") && !l.contains("_seconds"))
    {
        println!("  {line}");
    }
    let _ = stop.send(());
    let _ = tx_stop.send(());
    server.await??;
    tx_server.await??;
    println!(
        "\nThe tour is over. Run the service itself with: cargo run -p idem-examples --bin payments"
    );
    Ok(())
}

/// A running service: its client, its stop switch, and its task.
type Running = (
    Client,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
);

/// Serves `state` on a free port until stopped.
async fn start(state: AppState) -> Result<Running, Error> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let client = Client::new(listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app::serve(
        listener,
        state,
        Duration::from_secs(60),
        async {
            let _ = stopped.await;
        },
    ));
    Ok((client, stop, server))
}

/// Arms or disarms the trigger that refuses to store responses.
async fn refuse_responses(pool: &sqlx::SqlitePool, armed: bool) -> Result<(), Error> {
    sqlx::query("UPDATE tour_refuse_responses SET armed = ?")
        .bind(i64::from(armed))
        .execute(pool)
        .await?;
    Ok(())
}

/// How many payments of `amount` `GET /payments` lists.
async fn payments_of(client: &Client, amount: i64) -> Result<usize, Error> {
    let list = client.get("/payments").await?.json();
    let list = list.as_array().ok_or("GET /payments is not a list")?;
    Ok(list
        .iter()
        .filter(|p| p["amount"].as_i64() == Some(amount))
        .count())
}
