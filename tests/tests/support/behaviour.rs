//! The HTTP behaviour that every way of making routes idempotent shows, whatever the store:
//! the attribute on each handler (`handlers.rs`) and the tower layer on a router
//! (`layer.rs`) both serve the routes of `http.rs`, and [`http_behaviour_tests!`] runs the
//! same checks on both, on the memory, SQLite and Postgres stores.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode};
use idem_runtime::{FailingStore, MemoryStore, Op, SqliteStore, Store};

use super::http::{App, Call, FORM, JSON, KEY, TEXT, contract_on, from_caller, send};

async fn contract(app: App, first: Call, other: Call, expected: StatusCode) {
    let runs = app.runs.clone();
    contract_on(app.router, first, other, expected, move || {
        runs.load(Ordering::SeqCst)
    })
    .await;
}

// ---- the checks, one per behaviour ------------------------------------------------------

pub async fn state_handler(app: App) {
    let (a, b) = (
        Call::new("/state", TEXT, "a"),
        Call::new("/state", TEXT, "b"),
    );
    contract(app, a, b, StatusCode::CREATED).await;
}

pub async fn path_handler(app: App) {
    let (a, b) = (
        Call::new("/path/1", TEXT, ""),
        Call::new("/path/2", TEXT, ""),
    );
    contract(app, a, b, StatusCode::OK).await;
}

pub async fn query_handler(app: App) {
    let a = Call::new("/query?x=1", TEXT, "");
    let b = Call::new("/query?x=2", TEXT, "");
    contract(app, a, b, StatusCode::OK).await;
}

pub async fn header_map_handler(app: App) {
    let (a, b) = (
        Call::new("/headers", TEXT, "a"),
        Call::new("/headers", TEXT, "b"),
    );
    contract(app, a, b, StatusCode::OK).await;
}

pub async fn extension_handler(app: App) {
    let a = Call::new("/extension", TEXT, "a");
    let b = Call::new("/extension", TEXT, "b");
    contract(app, a, b, StatusCode::OK).await;
}

pub async fn json_handler(app: App) {
    let a = Call::new("/json", JSON, r#"{"name":"a"}"#);
    let b = Call::new("/json", JSON, r#"{"name":"b"}"#);
    contract(app, a, b, StatusCode::CREATED).await;
}

pub async fn form_handler(app: App) {
    let (a, b) = (
        Call::new("/form", FORM, "name=a"),
        Call::new("/form", FORM, "name=b"),
    );
    contract(app, a, b, StatusCode::OK).await;
}

pub async fn bytes_handler(app: App) {
    let a = Call::new("/bytes", "application/octet-stream", "\x00\x01");
    let b = Call::new("/bytes", "application/octet-stream", "\x00\x02");
    contract(app, a, b, StatusCode::OK).await;
}

pub async fn string_handler(app: App) {
    let (a, b) = (
        Call::new("/string", TEXT, "a"),
        Call::new("/string", TEXT, "b"),
    );
    contract(app, a, b, StatusCode::OK).await;
}

pub async fn result_handler_with_question_mark(app: App) {
    let a = Call::new("/fallible", JSON, r#"{"name":"1"}"#);
    let b = Call::new("/fallible", JSON, r#"{"name":"2"}"#);
    contract(app, a, b, StatusCode::CREATED).await;
}

pub async fn a_client_error_from_the_handler_is_stored_and_replayed(app: App) {
    let call = Call::new("/fallible", JSON, r#"{"name":"x"}"#);
    let first = send(&app.router, call.request(Some(KEY))).await;
    assert_eq!(first.status, StatusCode::UNPROCESSABLE_ENTITY);
    let replay = send(&app.router, call.request(Some(KEY))).await;
    assert_eq!(replay.body, first.body);
    assert!(replay.replayed(), "a 4xx from the handler is stored");
    assert_eq!(app.runs(), 1);
}

pub async fn a_server_error_is_not_stored_so_a_retry_runs_again(app: App) {
    let call = Call::new("/fallible", JSON, r#"{"name":"crash"}"#);
    for _ in 0..2 {
        let answer = send(&app.router, call.request(Some(KEY))).await;
        assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!answer.replayed());
    }
    assert_eq!(app.runs(), 2);
}

pub async fn one_key_on_two_handlers_is_two_records(app: App) {
    let a = send(
        &app.router,
        Call::new("/string", TEXT, "a").request(Some(KEY)),
    )
    .await;
    let b = send(
        &app.router,
        Call::new("/headers", TEXT, "a").request(Some(KEY)),
    )
    .await;
    assert!(!a.replayed() && !b.replayed());
    assert_eq!(app.runs(), 2);
}

pub async fn one_key_under_two_scopes_is_two_records(app: App) {
    let acme = Call::new("/scoped/acme", TEXT, "a");
    let first = send(&app.router, acme.request(Some(KEY))).await;
    assert_eq!(first.status, StatusCode::OK);
    assert!(send(&app.router, acme.request(Some(KEY))).await.replayed());

    // Unscoped, this would be the same key on another path: a mismatch. Scoped by tenant,
    // it is another record, and it runs.
    let globex = Call::new("/scoped/globex", TEXT, "a");
    let globex = send(&app.router, globex.request(Some(KEY))).await;
    assert_eq!(globex.status, StatusCode::OK);
    assert!(!globex.replayed());
    assert_eq!(globex.body, Bytes::from("run 2 tenant globex"));
    assert_eq!(app.runs(), 2);
}

pub async fn an_optional_key_in_a_custom_header(app: App) {
    let call = Call::new("/optional", TEXT, "a");
    for _ in 0..2 {
        let answer = send(&app.router, call.request(None)).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert!(!answer.replayed());
    }
    assert_eq!(app.runs(), 2, "no header: no idempotency");

    let keyed = || {
        Request::post("/optional")
            .header("x-request-key", KEY)
            .body(Body::from("a"))
            .expect("a valid request")
    };
    let first = send(&app.router, keyed()).await;
    let replay = send(&app.router, keyed()).await;
    assert!(!first.replayed() && replay.replayed());
    assert_eq!(replay.body, first.body);
    // `Idempotency-Key` means nothing to this route.
    let ignored = send(&app.router, call.request(Some(KEY))).await;
    assert!(!ignored.replayed());
    assert_eq!(app.runs(), 4);
}

pub async fn the_applications_body_limit_applies_before_any_record(app: App) {
    let router = app
        .router
        .clone()
        .layer(axum::extract::DefaultBodyLimit::max(16));
    let long = Call::new("/string", TEXT, "a body longer than sixteen bytes");
    let large = send(&router, long.request(Some(KEY))).await;
    assert_eq!(large.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(large.problem_type(), "urn:idem:problem:body-too-large");
    assert_eq!(app.runs(), 0);
    // The same key with a body under the limit runs: the 413 left no record.
    let small = send(
        &router,
        Call::new("/string", TEXT, "short").request(Some(KEY)),
    )
    .await;
    assert_eq!(small.status, StatusCode::OK);
    assert_eq!(app.runs(), 1);
}

pub async fn a_duplicate_in_progress_is_409_with_retry_after(app: App) {
    let call = Call::new("/slow", TEXT, "a");
    let first = tokio::spawn({
        let router = app.router.clone();
        let request = call.request(Some(KEY));
        async move { send(&router, request).await }
    });
    while app.runs() == 0 {
        tokio::task::yield_now().await;
    }
    let duplicate = send(&app.router, call.request(Some(KEY))).await;
    assert_eq!(duplicate.status, StatusCode::CONFLICT);
    assert_eq!(
        duplicate.problem_type(),
        "urn:idem:problem:request-in-progress"
    );
    let retry_after: u64 = duplicate.headers["retry-after"]
        .to_str()
        .ok()
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    app.gate.notify_one();
    let first = first.await.expect("the first request completes");
    assert_eq!(first.status, StatusCode::OK);
    assert!(send(&app.router, call.request(Some(KEY))).await.replayed());
    assert_eq!(app.runs(), 1);
}

/// Once, not per store: the failing wrapper answers before any backend would.
pub async fn a_store_outage_is_503_and_nothing_runs(make: impl FnOnce(Store) -> App) {
    let failing = Arc::new(FailingStore::new(MemoryStore::new()));
    failing.fail_always(Op::Claim);
    let app = make(Store::new(failing.clone()));
    let answer = send(
        &app.router,
        Call::new("/string", TEXT, "a").request(Some(KEY)),
    )
    .await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.problem_type(), "urn:idem:problem:store-unavailable");
    assert!(answer.headers.contains_key("retry-after"));
    assert_eq!(app.runs(), 0);
    failing.heal_all();
    let answer = send(
        &app.router,
        Call::new("/string", TEXT, "a").request(Some(KEY)),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(app.runs(), 1);
}

// ---- scoping by caller: the route `/caller` inherits its store's rule -------------------

pub async fn two_callers_with_one_key_and_one_body_get_two_executions(app: App) {
    let alice = send(&app.router, from_caller(Some("alice"), "pay 12")).await;
    let bob = send(&app.router, from_caller(Some("bob"), "pay 12")).await;
    assert_eq!(alice.status, StatusCode::OK);
    assert_eq!(bob.status, StatusCode::OK);
    assert!(!bob.replayed(), "bob's request is not alice's replay");
    assert_eq!(&alice.body[..], b"run 1 for alice body pay 12");
    assert_eq!(&bob.body[..], b"run 2 for bob body pay 12");
    assert_eq!(app.runs(), 2, "two callers, two executions");

    // Each replays their own bytes, never the other's.
    let alice_again = send(&app.router, from_caller(Some("alice"), "pay 12")).await;
    let bob_again = send(&app.router, from_caller(Some("bob"), "pay 12")).await;
    assert!(alice_again.replayed() && bob_again.replayed());
    assert_eq!(alice_again.body, alice.body);
    assert_eq!(bob_again.body, bob.body);
    assert_eq!(app.runs(), 2);
}

pub async fn another_caller_with_another_body_runs_fresh_instead_of_422(app: App) {
    let alice = send(&app.router, from_caller(Some("alice"), "pay 12")).await;
    assert_eq!(alice.status, StatusCode::OK);
    let bob = send(&app.router, from_caller(Some("bob"), "pay 99")).await;
    assert_eq!(
        bob.status,
        StatusCode::OK,
        "a 422 would tell bob that someone else uses this key"
    );
    assert_eq!(&bob.body[..], b"run 2 for bob body pay 99");
    // Within one caller the key still guards its request.
    let reused = send(&app.router, from_caller(Some("alice"), "pay 99")).await;
    assert_eq!(reused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(app.runs(), 2);
}

pub async fn a_request_naming_no_caller_is_refused_before_any_record(app: App) {
    let nobody = send(&app.router, from_caller(None, "pay 12")).await;
    assert_eq!(nobody.status, StatusCode::FORBIDDEN);
    assert_eq!(nobody.problem_type(), "urn:idem:problem:no-scope");
    assert_eq!(app.runs(), 0);
    // Nothing was recorded: a caller's first request with the key runs.
    let alice = send(&app.router, from_caller(Some("alice"), "pay 12")).await;
    assert_eq!(&alice.body[..], b"run 1 for alice body pay 12");
}

// ---- stores -------------------------------------------------------------------------------

/// A fresh memory store.
pub async fn memory() -> Option<(Store, ())> {
    Some((Store::new(MemoryStore::new()), ()))
}

/// A fresh in-memory SQLite database, migrated.
pub async fn sqlite() -> Option<(Store, ())> {
    let store = SqliteStore::connect("sqlite::memory:")
        .await
        .expect("open an in-memory database");
    store.migrate().await.expect("migrations run");
    Some((Store::new(store), ()))
}

/// Runs one check on a fresh store (skipping when the store is unavailable).
pub async fn on<G, S: Future<Output = Option<(Store, G)>>>(
    make_store: impl FnOnce() -> S,
    check: impl AsyncFnOnce(Store),
) {
    let Some((store, _guard)) = make_store().await else {
        return;
    };
    check(store).await;
}

/// One `#[tokio::test]` per check, per store, for an app constructor `fn(Store) -> App`
/// given as a path from the crate root (`crate::app`).
#[allow(unused_macros)]
macro_rules! http_behaviour_tests {
    ($app:path) => {
        mod memory {
            $crate::support::behaviour::http_behaviour_tests!(@store $app, $crate::support::behaviour::memory);
        }
        mod sqlite {
            $crate::support::behaviour::http_behaviour_tests!(@store $app, $crate::support::behaviour::sqlite);
        }
        mod postgres {
            $crate::support::behaviour::http_behaviour_tests!(@store $app, idem_tests::pg::fixture);
        }

        #[tokio::test]
        async fn a_store_outage_is_503_and_nothing_runs() {
            $crate::support::behaviour::a_store_outage_is_503_and_nothing_runs($app).await;
        }
    };
    (@store $app:path, $store:path) => {
        $crate::support::behaviour::http_behaviour_tests!(@cases $app, $store;
            state_handler,
            path_handler,
            query_handler,
            header_map_handler,
            extension_handler,
            json_handler,
            form_handler,
            bytes_handler,
            string_handler,
            result_handler_with_question_mark,
            a_client_error_from_the_handler_is_stored_and_replayed,
            a_server_error_is_not_stored_so_a_retry_runs_again,
            one_key_on_two_handlers_is_two_records,
            one_key_under_two_scopes_is_two_records,
            an_optional_key_in_a_custom_header,
            the_applications_body_limit_applies_before_any_record,
            a_duplicate_in_progress_is_409_with_retry_after,
            two_callers_with_one_key_and_one_body_get_two_executions,
            another_caller_with_another_body_runs_fresh_instead_of_422,
            a_request_naming_no_caller_is_refused_before_any_record,
        );
    };
    (@cases $app:path, $store:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::support::behaviour::on($store, async |store| {
                    $crate::support::behaviour::$case($app(store)).await
                })
                .await;
            }
        )*
    };
}

#[allow(unused_imports)] // `plain.rs` has no HTTP routes
pub(crate) use http_behaviour_tests;
