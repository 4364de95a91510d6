//! The tower layer on a whole router: plain axum handlers, no attribute, and every `POST` and
//! `PATCH` idempotent. Serves on a free local port and walks through a few requests.
//!
//! ```text
//! cargo run -p idem-examples --bin layered
//! ```

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::routing::{patch, post};
use axum::{Json, Router};
use idem_examples::client::{Client, Error, Reply};
use idem_runtime::{IdempotencyKey, IdempotencyLayer, MemoryStore, RecordId, Store};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

#[derive(Clone, Serialize)]
struct Order {
    id: usize,
    item: String,
    shipped: bool,
}

#[derive(Deserialize)]
struct NewOrder {
    item: String,
}

type Orders = Arc<Mutex<Vec<Order>>>;

async fn create(
    State(orders): State<Orders>,
    Json(new): Json<NewOrder>,
) -> (StatusCode, Json<Order>) {
    let mut orders = orders.lock().unwrap_or_else(|e| e.into_inner());
    let order = Order {
        id: orders.len() + 1,
        item: new.item,
        shipped: false,
    };
    orders.push(order.clone());
    (StatusCode::CREATED, Json(order))
}

async fn ship(
    State(orders): State<Orders>,
    Path(id): Path<usize>,
) -> Result<Json<Order>, StatusCode> {
    let mut orders = orders.lock().unwrap_or_else(|e| e.into_inner());
    let order = orders
        .get_mut(id.wrapping_sub(1))
        .ok_or(StatusCode::NOT_FOUND)?;
    order.shipped = true;
    Ok(Json(order.clone()))
}

async fn list(State(orders): State<Orders>) -> Json<Vec<Order>> {
    Json(orders.lock().unwrap_or_else(|e| e.into_inner()).clone())
}

/// The whole router made idempotent: one layer, the same behaviour as `#[idempotent]` on
/// each handler. `route_layer` keeps it to the routes that exist (an unknown path stays a
/// plain 404).
fn router(store: Store) -> Router {
    let idempotency = IdempotencyLayer::new(store)
        .retries(5)
        .ttl(Duration::from_secs(24 * 3600));
    Router::new()
        .route("/orders", post(create).get(list))
        .route("/orders/{id}", patch(ship))
        .route_layer(idempotency)
        .with_state(Orders::default())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("layered failed: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Error> {
    let store = Store::new(MemoryStore::new());
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let client = Client::new(listener.local_addr()?);
    let app = router(store.clone());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let json = |key: Option<&'static str>| {
        let mut headers: Vec<(&str, &[u8])> = vec![("content-type", b"application/json")];
        if let Some(key) = key {
            headers.push(("idempotency-key", key.as_bytes()));
        }
        headers
    };
    let steps: [(&str, Method, &str, Option<&'static str>, &str); 7] = [
        (
            "create an order",
            Method::POST,
            "/orders",
            Some("order-0001"),
            r#"{"item":"tea"}"#,
        ),
        (
            "the client retries",
            Method::POST,
            "/orders",
            Some("order-0001"),
            r#"{"item":"tea"}"#,
        ),
        (
            "same key, other order",
            Method::POST,
            "/orders",
            Some("order-0001"),
            r#"{"item":"cake"}"#,
        ),
        ("no key", Method::POST, "/orders", None, r#"{"item":"tea"}"#),
        ("ship it", Method::PATCH, "/orders/1", Some("ship-0001"), ""),
        (
            "ship it again (retry)",
            Method::PATCH,
            "/orders/1",
            Some("ship-0001"),
            "",
        ),
        (
            "list (GET passes through)",
            Method::GET,
            "/orders",
            None,
            "",
        ),
    ];
    println!("{:<28} {:<18} {:<22} answer", "step", "request", "status");
    let mut replies = Vec::new();
    for (what, method, path, key, body) in steps {
        let reply = client
            .send(method.clone(), path, &json(key), body.to_owned())
            .await?;
        print_row(what, &format!("{method} {path}"), &reply);
        replies.push(reply);
    }

    // The records are named after the method and the matched route: bounded, never a raw path.
    let key = IdempotencyKey::parse("ship-0001")?;
    let record = store
        .get(&RecordId::new("", "PATCH /orders/{id}", key))
        .await?;
    println!(
        "\nthe record of ship-0001 is under \"PATCH /orders/{{id}}\": {}",
        record.is_some()
    );

    server.abort();
    let orders = replies[6].json();
    let created_once = orders.as_array().map(Vec::len) == Some(1);
    if !created_once || !replies[1].replayed() || !replies[5].replayed() || record.is_none() {
        return Err("the layer did not behave as the attribute does".into());
    }
    Ok(())
}

fn print_row(what: &str, request: &str, reply: &Reply) {
    let mut status = reply.status.as_u16().to_string();
    if reply.replayed() {
        status.push_str(" (replayed)");
    }
    let answer = match reply.json() {
        serde_json::Value::Null => reply.text(),
        json if json.get("type").is_some() => json["type"].as_str().unwrap_or_default().to_owned(),
        json => json.to_string(),
    };
    println!("{what:<28} {request:<18} {status:<22} {answer}");
}
