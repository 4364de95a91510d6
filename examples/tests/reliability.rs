//! The reliability suite (README, "Guarantees"): the real `payments` binary on a real Postgres,
//! attacked with duplicate storms, crashes, store outages, failing writes and hostile input.
//! Each test prints one summary line of its figures (run with `--nocapture` to see them).

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use idem_examples::client::{Client, Reply};
use idem_tests::pg::TestDb;
use support::crash::{self, Leases};
use support::db::until;
use support::failing_completion::{self, Completions};
use support::{Service, storm};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const EUR: &str = r#"{"amount":1200,"currency":"EUR"}"#;
const PROBLEM: &str = "application/problem+json";

/// Rows in the idempotency table.
async fn rows(db: &TestDb) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM idempotency_keys")
        .fetch_one(&mut db.connect().await)
        .await
        .expect("count idempotency rows")
}

fn statuses(replies: &[Reply]) -> BTreeMap<u16, usize> {
    let mut seen = BTreeMap::new();
    for reply in replies {
        *seen.entry(reply.status.as_u16()).or_insert(0) += 1;
    }
    seen
}

// ---- 1. duplicate storm -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_storm_across_two_instances_runs_each_key_once() {
    let Some(db) = idem_tests::pg::database().await else {
        return;
    };
    let url = db.url();
    duplicate_storm("", &[("IDEM_STORE", &url), ("IDEM_MODE", "plain")]).await;
}

/// The same storm with both instances behind PgBouncer in transaction mode on two server
/// connections (README, "Behind a connection pooler"): the store, its migrations and the
/// example's own statements all go through the pooler, in either mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_storm_behind_pgbouncer_runs_each_key_once() {
    let Some((_db, url)) = idem_tests::bouncer::database().await else {
        return;
    };
    for mode in ["transactional", "plain"] {
        let env = [
            ("IDEM_STORE", url.as_str()),
            ("IDEM_PG_POOLER", "transaction"),
            ("IDEM_MODE", mode),
        ];
        duplicate_storm(&format!(" behind pgbouncer, {mode}"), &env).await;
    }
}

/// Two instances on `env`, every copy of a key at once, half through each: one payment per
/// key (counting those of an earlier storm on the same database).
async fn duplicate_storm(what: &str, env: &[(&str, &str)]) {
    let env = [env, &[("PAYMENTS_LATENCY_MS", "50")]].concat();
    let (a, b) = tokio::join!(Service::start(&env), Service::start(&env));
    let clients = [a.client, b.client];
    let before = clients[0].payment_count().await.unwrap();
    let prefix = format!("storm-key{}", what.replace([' ', ','], "-"));
    let (sent, took) = storm::send(clients, &prefix).await;
    let statuses = storm::check(&sent, clients).await;
    let count = clients[0].payment_count().await.unwrap() - before;
    assert_eq!(count, storm::KEYS, "one payment per key");
    assert_eq!(
        clients[1].payment_count().await.unwrap() - before,
        storm::KEYS
    );
    println!(
        "duplicate storm{what}: {} keys x {} copies over 2 instances in {took:?}; payments \
         created {count}; statuses {statuses:?}",
        storm::KEYS,
        storm::COPIES,
    );
}

// ---- 3. storage failure after execution ---------------------------------------------------

/// Makes completing writes (updates setting `response_status > 0`) fail at the database: the
/// first `fail_limit` of them (counted by a sequence, which a rollback does not undo) raise a
/// serialization failure, a transient error the runtime retries.
const FAILING_COMPLETION: &str = "
CREATE SEQUENCE completion_attempts;
CREATE TABLE completion_control (fail_limit bigint NOT NULL);
INSERT INTO completion_control VALUES (0);
CREATE FUNCTION fail_completion() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF nextval('completion_attempts') <= (SELECT fail_limit FROM completion_control) THEN
        RAISE EXCEPTION 'completion refused by the test' USING ERRCODE = '40001';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER fail_completion BEFORE UPDATE ON idempotency_keys FOR EACH ROW
    WHEN (NEW.response_status > 0) EXECUTE FUNCTION fail_completion();";

/// The test database, refusing completions through [`FAILING_COMPLETION`].
struct Trigger<'a>(&'a TestDb);

impl Completions for Trigger<'_> {
    async fn fail_next(&self, n: u64) {
        let mut conn = self.0.connect().await;
        sqlx::query("UPDATE completion_control SET fail_limit = $1")
            .bind(i64::try_from(n).unwrap())
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query("SELECT setval('completion_attempts', 1, false)")
            .execute(&mut conn)
            .await
            .unwrap();
    }

    async fn attempts(&self) -> u64 {
        let n: i64 = sqlx::query_scalar(
            "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM completion_attempts",
        )
        .fetch_one(&mut self.0.connect().await)
        .await
        .unwrap();
        u64::try_from(n).unwrap()
    }

    async fn status(&self, key: &str) -> Option<i32> {
        sqlx::query_scalar(
            "SELECT response_status FROM idempotency_keys WHERE idempotency_key = $1",
        )
        .bind(key)
        .fetch_one(&mut self.0.connect().await)
        .await
        .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_completion_is_retried_then_marked_failed_storage_and_recovered() {
    let Some(db) = idem_tests::pg::database().await else {
        return;
    };
    let url = db.url();
    let service = Service::start(&[
        ("IDEM_STORE", &url),
        ("IDEM_RETRIES", "3"),
        ("IDEM_MODE", "plain"),
    ])
    .await;
    sqlx::raw_sql(FAILING_COMPLETION)
        .execute(&mut db.connect().await)
        .await
        .unwrap();
    failing_completion::run(service.client, &Trigger(&db), "postgres").await;
}

// ---- 4. crash between claim and completion ------------------------------------------------

/// Seconds left on the lease of `key`, by the database's clock (negative once expired).
async fn lease_left(db: &TestDb, key: &str) -> Option<f64> {
    sqlx::query_scalar(
        "SELECT EXTRACT(EPOCH FROM locked_until - now())::float8 FROM idempotency_keys
         WHERE idempotency_key = $1 AND response_status IS NULL",
    )
    .bind(key)
    .fetch_optional(&mut db.connect().await)
    .await
    .unwrap()
}

/// The test database, read for the lease of a claim in progress.
struct Rows<'a>(&'a TestDb);

impl Leases for Rows<'_> {
    async fn lease_left(&self, key: &str) -> Option<f64> {
        lease_left(self.0, key).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_left_by_a_killed_process_is_taken_over_once_after_its_lease() {
    let Some(db) = idem_tests::pg::database().await else {
        return;
    };
    crash::run(&db.url(), &Rows(&db), "postgres").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_handler_slower_than_its_lease_is_never_taken_over() {
    let Some(db) = idem_tests::pg::database().await else {
        return;
    };
    let url = db.url();
    let env = [
        ("IDEM_STORE", url.as_str()),
        ("IDEM_LEASE", "2s"),
        ("PAYMENTS_LATENCY_MS", "6000"),
    ];
    let (owner, other) = tokio::join!(Service::start(&env), Service::start(&env));
    let client = owner.client;
    let first = tokio::spawn(async move { client.pay(Some("live-key-00001"), EUR).await });
    until(
        Duration::from_secs(10),
        "the slow request claims its key",
        || async { lease_left(&db, "live-key-00001").await.is_some() },
    )
    .await;
    // Duplicates through the other instance over three leases' time: the owner renews.
    let mut duplicates = Vec::new();
    while !first.is_finished() {
        let reply = other.client.pay(Some("live-key-00001"), EUR).await.unwrap();
        if reply.status == 201 {
            duplicates.push(reply);
            break;
        }
        assert_eq!(reply.status, 409, "{}", reply.text());
        duplicates.push(reply);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first = first.await.unwrap().unwrap();
    assert_eq!(first.status, 201);
    assert!(!first.replayed());
    let after = other.client.pay(Some("live-key-00001"), EUR).await.unwrap();
    assert!(after.replayed());
    assert_eq!(after.body, first.body);
    for reply in duplicates.iter().filter(|r| r.status == 201) {
        assert!(reply.replayed(), "a duplicate never ran the handler");
        assert_eq!(reply.body, first.body);
    }
    let payments = other.client.payment_count().await.unwrap();
    assert_eq!(payments, 1);
    assert!(
        duplicates.iter().filter(|r| r.status == 409).count() >= 10,
        "duplicates kept arriving over several leases"
    );
    println!(
        "live owner: {} duplicates over a 6s handler with a 2s lease; statuses {:?}; \
         payments created {payments}",
        duplicates.len(),
        statuses(&duplicates)
    );
}

// ---- 5. hostile keys and requests ---------------------------------------------------------

/// How a hostile request went.
#[derive(Debug)]
enum Answer {
    /// The library's problem answer.
    Problem(u16),
    /// hyper's own refusal, or a closed connection (nothing reached the application).
    Refused(String),
}

/// Sends raw bytes on a fresh connection; answers the status line (or the close).
async fn raw(client: &Client, request: &[u8]) -> (Option<u16>, String) {
    let stream = TcpStream::connect(client.addr()).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    // Written beside the read: the server may answer and close before taking it all.
    let request = request.to_vec();
    let writing = tokio::spawn(async move {
        let _ = writer.write_all(&request).await;
        writer
    });
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), reader.read_to_end(&mut answer)).await;
    assert!(
        read.is_ok(),
        "the server neither answered nor closed within 10 s"
    );
    drop(writing.await);
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3)?.parse().ok());
    (status, text)
}

fn raw_post(addr: std::net::SocketAddr, key_line: &[u8], body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST /payments HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         connection: close\r\ncontent-length: {}\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(key_line);
    request.extend_from_slice(b"\r\n\r\n");
    request.extend_from_slice(body);
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_keys_and_requests_are_refused_before_any_record() {
    let Some(db) = idem_tests::pg::database().await else {
        return;
    };
    let url = db.url();
    let service = Service::start(&[("IDEM_STORE", &url)]).await;
    let client = service.client;

    // Header values hyper's client accepts, sent as the Idempotency-Key.
    let long = |n: usize| "k".repeat(n).into_bytes();
    let mut values: Vec<(String, Vec<u8>)> = vec![
        ("7 characters".into(), long(7)),
        ("129 characters".into(), long(129)),
        ("1 character".into(), long(1)),
        ("4 KiB".into(), long(4096)),
        ("a space inside".into(), b"order 0001".to_vec()),
        ("a tab inside".into(), b"order\t0001".to_vec()),
        ("only spaces".into(), b"          ".to_vec()),
        (
            "unicode".into(),
            "order-\u{e9}\u{e9}\u{e9}".as_bytes().to_vec(),
        ),
        ("emoji".into(), "order-\u{1f4b8}-0001".as_bytes().to_vec()),
        ("latin-1 byte".into(), b"order-\xe9-0001".to_vec()),
        ("invalid utf-8".into(), b"order-\xff\xfe-0001".to_vec()),
        ("quoted, too short".into(), b"\"short\"".to_vec()),
        ("half-quoted left".into(), b"\"order-0001".to_vec()),
        ("half-quoted right".into(), b"order-0001\"".to_vec()),
        ("a lone quote".into(), b"\"".to_vec()),
        ("empty quotes".into(), b"\"\"".to_vec()),
        (
            "quotes inside quotes".into(),
            b"\"order\"-\"0001\"".to_vec(),
        ),
        ("single quotes".into(), b"'order-0001'".to_vec()),
        ("escaped quote".into(), b"\"order\\\"0001\"".to_vec()),
        ("sql: quote".into(), b"order-0001' OR '1'='1".to_vec()),
        ("sql: comment".into(), b"order-0001;--".to_vec()),
        (
            "sql: drop".into(),
            b"x'); DROP TABLE idempotency_keys; --".to_vec(),
        ),
        (
            "sql: union".into(),
            b"1 UNION SELECT response_body FROM idempotency_keys".to_vec(),
        ),
        ("percent".into(), b"order%200001".to_vec()),
        ("slash".into(), b"order/0001/../x".to_vec()),
        ("comma list".into(), b"order-0001, order-0002".to_vec()),
        ("semicolon params".into(), b"order-0001;q=1".to_vec()),
        ("json".into(), br#"{"key":"order-0001"}"#.to_vec()),
        ("brackets".into(), b"<order-0001>".to_vec()),
        ("at sign".into(), b"order@0001x".to_vec()),
        ("plus".into(), b"order+0001x".to_vec()),
        ("equals".into(), b"order=0001x".to_vec()),
        ("backslash".into(), b"order\\0001".to_vec()),
        ("asterisk".into(), b"*********".to_vec()),
    ];
    values.push((
        "129 quoted".into(),
        [b"\"".as_slice(), &long(129), b"\""].concat(),
    ));
    let mut answers: Vec<(String, Answer)> = Vec::new();
    for (name, value) in &values {
        let reply = client
            .send(
                hyper::Method::POST,
                "/payments",
                &[
                    ("content-type", b"application/json"),
                    ("idempotency-key", value),
                ],
                EUR,
            )
            .await
            .unwrap();
        // Surrounding whitespace is not part of a header value: spaces alone are no key.
        let kind = if name == "only spaces" {
            "missing-key"
        } else {
            "invalid-key"
        };
        answers.push((name.clone(), problem(&reply, 400, kind, name)));
    }

    // The header twice, with valid and with equal values; and an empty header.
    for (name, a, b) in [
        ("repeated, equal", "order-0001", "order-0001"),
        ("repeated, different", "order-0001", "order-0002"),
        ("repeated, one empty", "order-0001", ""),
    ] {
        let reply = client
            .send(
                hyper::Method::POST,
                "/payments",
                &[
                    ("content-type", b"application/json"),
                    ("idempotency-key", a.as_bytes()),
                    ("idempotency-key", b.as_bytes()),
                ],
                EUR,
            )
            .await
            .unwrap();
        answers.push((name.into(), problem(&reply, 400, "invalid-key", name)));
    }
    let empty = client
        .send(
            hyper::Method::POST,
            "/payments",
            &[
                ("content-type", b"application/json"),
                ("idempotency-key", b""),
            ],
            EUR,
        )
        .await
        .unwrap();
    answers.push(("empty".into(), problem(&empty, 400, "missing-key", "empty")));
    let missing = client.pay(None, EUR).await.unwrap();
    answers.push((
        "missing".into(),
        problem(&missing, 400, "missing-key", "missing"),
    ));

    // Oversized bodies with a valid key: 413 problem+json before any record. This is the
    // application's body limit (axum's `DefaultBodyLimit`), applied by the attribute while it
    // buffers the body; the second announces 20 MiB and sends 3, and is answered without
    // waiting for the rest.
    let body = format!(
        r#"{{"amount":1,"currency":"EUR","pad":"{}"}}"#,
        "x".repeat(3 << 20)
    );
    let reply = client
        .send(
            hyper::Method::POST,
            "/payments",
            &[
                ("content-type", b"application/json"),
                ("idempotency-key", b"hostile-body-01"),
            ],
            body.clone(),
        )
        .await
        .unwrap();
    answers.push((
        "body 3 MiB".into(),
        problem(&reply, 413, "body-too-large", "body 3 MiB"),
    ));
    let announced = format!(
        "POST /payments HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         idempotency-key: hostile-body-02\r\ncontent-length: {}\r\n\r\n{body}",
        20 << 20
    );
    let (status, text) = raw(&client, announced.as_bytes()).await;
    assert_eq!(status, Some(413), "{text}");
    assert!(
        text.contains("application/problem+json")
            && text.contains("urn:idem:problem:body-too-large"),
        "{text}"
    );
    answers.push(("body 20 MiB announced".into(), Answer::Problem(413)));

    // Bytes hyper's client will not send: control characters, NUL, line breaks, and a
    // header of 1 MiB. The server refuses them itself, or closes the connection.
    let addr = client.addr();
    let mut raws: Vec<(String, Vec<u8>)> = vec![
        ("NUL".into(), b"idempotency-key: order\x000001".to_vec()),
        (
            "leading NUL".into(),
            b"idempotency-key: \x00order-0001".to_vec(),
        ),
        ("bell".into(), b"idempotency-key: order\x070001".to_vec()),
        (
            "escape".into(),
            b"idempotency-key: order\x1b[2J0001".to_vec(),
        ),
        ("bare CR".into(), b"idempotency-key: order\r0001".to_vec()),
        (
            "vertical tab".into(),
            b"idempotency-key: order\x0b0001".to_vec(),
        ),
        (
            "form feed".into(),
            b"idempotency-key: order\x0c0001".to_vec(),
        ),
        ("DEL".into(), b"idempotency-key: order-\x7f-0001".to_vec()),
    ];
    let mut huge = b"idempotency-key: ".to_vec();
    huge.extend(std::iter::repeat_n(b'k', 1 << 20));
    raws.push(("1 MiB header".into(), huge));
    raws.push((
        "obsolete line folding".into(),
        b"idempotency-key: order-\r\n 0001".to_vec(),
    ));
    for (name, line) in &raws {
        let (status, text) = raw(&client, &raw_post(addr, line, EUR.as_bytes())).await;
        match status {
            Some(code) if (400..500).contains(&code) => {
                if text.contains(PROBLEM) {
                    answers.push((name.clone(), Answer::Problem(code)));
                } else {
                    answers.push((name.clone(), Answer::Refused(format!("{code} from hyper"))));
                }
            }
            None => answers.push((name.clone(), Answer::Refused("connection closed".into()))),
            Some(code) => panic!("{name}: answered {code}:\n{text}"),
        }
    }

    let payments = client.payment_count().await.unwrap();
    assert_eq!(payments, 0, "the handler never ran");
    assert_eq!(rows(&db).await, 0, "no record was written");
    assert!(answers.len() >= 40, "{} cases", answers.len());
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (_, answer) in &answers {
        let label = match answer {
            Answer::Problem(code) => format!("{code} problem+json"),
            Answer::Refused(how) => how.clone(),
        };
        *seen.entry(label).or_insert(0) += 1;
    }
    // The service still serves.
    let fine = client.pay(Some("hostile-after-01"), EUR).await.unwrap();
    assert_eq!(fine.status, 201);
    println!(
        "hostile input: {} bad requests; answers {seen:?}; payments created {payments}, \
         rows written 0",
        answers.len()
    );
}

/// Checks a library problem answer: status, content type, type URI, and no echo of the key.
fn problem(reply: &Reply, status: u16, kind: &str, name: &str) -> Answer {
    assert_eq!(reply.status, status, "{name}: {}", reply.text());
    assert_eq!(reply.header("content-type"), Some(PROBLEM), "{name}");
    let json = reply.json();
    assert_eq!(json["type"], format!("urn:idem:problem:{kind}"), "{name}");
    assert_eq!(json["status"], status, "{name}");
    assert!(json["title"].is_string() && json["detail"].is_string() || kind == "missing-key");
    assert!(
        !reply.text().contains("order-0001"),
        "{name}: the key is never echoed"
    );
    Answer::Problem(status)
}

// ---- 2. store outage under load -----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_is_503_and_the_service_recovers_on_its_own() {
    let Some(server) = idem_tests::pg::own_server().await else {
        return;
    };
    let db = server.create_database().await;
    let url = db.url();
    let service = Service::start(&[("IDEM_STORE", &url), ("PAYMENTS_LATENCY_MS", "20")]).await;
    let client = service.client;

    support::outage::run(client, "store", server.stop_immediately(), server.restart()).await;
}
