//! Isolation on Postgres under concurrency (docs/contract.md, "What a request meets"): one key
//! used at once by two tenants (a scope read from a header) on two routes is four records,
//! never a replay across them, and no answer ever carries another request's body. The
//! sequential cases (one key on two handlers, under two scopes) are in `support/behaviour.rs`
//! for every store.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::routing::post;
use http_body_util::BodyExt;
use idem_runtime::{Store, idempotent};
use tower::ServiceExt;

const KEY: &str = "shared-key-0001";
const COPIES: usize = 8;

#[derive(Clone)]
struct App {
    idem: Store,
    runs: Arc<AtomicUsize>,
}

fn tenant(headers: &HeaderMap) -> String {
    headers
        .get("x-tenant")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none")
        .to_owned()
}

/// Echoes route, tenant and body, so an answer shows which request it belongs to.
async fn echo(app: &App, route: &str, tenant: String, body: String) -> String {
    app.runs.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(30)).await;
    format!("{route}|{tenant}|{body}")
}

#[idempotent(store = "app.idem", scope = "tenant(&headers)")]
async fn route_a(State(app): State<App>, headers: HeaderMap, body: String) -> String {
    echo(&app, "a", tenant(&headers), body).await
}

#[idempotent(store = "app.idem", scope = "tenant(&headers)")]
async fn route_b(State(app): State<App>, headers: HeaderMap, body: String) -> String {
    echo(&app, "b", tenant(&headers), body).await
}

async fn send(router: &Router, route: &str, tenant: &str, body: &str) -> (StatusCode, bool, Bytes) {
    let request = Request::post(format!("/{route}"))
        .header("idempotency-key", KEY)
        .header("x-tenant", tenant)
        .body(Body::from(body.to_owned()))
        .expect("a valid request");
    let response = router.clone().oneshot(request).await.expect("infallible");
    let replayed = response.headers().contains_key("idempotent-replayed");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("a body")
        .to_bytes();
    (status, replayed, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_key_on_two_routes_and_two_scopes_at_once_never_crosses() {
    let Some((store, _db)) = idem_tests::pg::fixture().await else {
        return;
    };
    let runs = Arc::new(AtomicUsize::new(0));
    let router = Router::new()
        .route("/a", post(route_a))
        .route("/b", post(route_b))
        .with_state(App {
            idem: store,
            runs: runs.clone(),
        });
    let targets: Vec<(&str, &str, String)> = [
        ("a", "acme"),
        ("a", "globex"),
        ("b", "acme"),
        ("b", "globex"),
    ]
    .into_iter()
    .map(|(route, tenant)| (route, tenant, format!("body of {route} for {tenant}")))
    .collect();

    // Every copy of every target at once.
    let mut all = tokio::task::JoinSet::new();
    for (route, tenant, body) in &targets {
        for _ in 0..COPIES {
            let (router, route, tenant, body) = (router.clone(), *route, *tenant, body.clone());
            all.spawn(async move { (route, tenant, send(&router, route, tenant, &body).await) });
        }
    }
    let mut statuses = std::collections::BTreeMap::new();
    for (route, tenant, (status, replayed, body)) in all.join_all().await {
        *statuses.entry(status.as_u16()).or_insert(0) += 1;
        match status {
            StatusCode::OK => {
                let own = format!("{route}|{tenant}|body of {route} for {tenant}");
                assert_eq!(
                    body,
                    own.as_bytes(),
                    "replayed {replayed}: only its own body"
                );
            }
            StatusCode::CONFLICT => {}
            other => panic!("{route} {tenant}: {other}"),
        }
    }
    assert_eq!(
        runs.load(Ordering::SeqCst),
        4,
        "one run per route and tenant"
    );

    // Afterwards each replays its own answer, and another body under the same key is a
    // mismatch within its own record only.
    for (route, tenant, body) in &targets {
        let (status, replayed, answer) = send(&router, route, tenant, body).await;
        assert_eq!((status, replayed), (StatusCode::OK, true));
        assert_eq!(answer, format!("{route}|{tenant}|{body}").as_bytes());
        let (status, _, answer) = send(&router, route, tenant, "another body").await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(!String::from_utf8_lossy(&answer).contains("body of"));
    }
    // A third tenant with the same key and body runs on its own.
    let (status, replayed, answer) = send(&router, "a", "initech", "body of a for acme").await;
    assert_eq!((status, replayed), (StatusCode::OK, false));
    assert_eq!(answer, "a|initech|body of a for acme".as_bytes());
    println!(
        "isolation: {} concurrent requests on one key over 2 routes x 2 tenants; statuses \
         {statuses:?}; handler runs 4 (+1 for a third tenant)",
        targets.len() * COPIES
    );
}
