//! Isolation and concurrency: one key runs once however many duplicates race, and a record is
//! identified by (scope, handler, key) (docs/contract.md, "What a request meets").

use std::sync::Arc;

use axum_core::response::IntoResponse;
use http::StatusCode;
use tokio::sync::Notify;

use crate::support::*;
use crate::{CONFIG, memory};

#[tokio::test(start_paused = true)]
async fn fifty_concurrent_duplicates_run_the_handler_once() {
    let (store, counter) = (memory(), Counter::default());
    let req = Req::new("order-0019");
    let gate = Arc::new(Notify::new());
    let runs = counter.0.clone();
    let first_gate = gate.clone();
    let handler = async move {
        runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        first_gate.notified().await;
        (StatusCode::CREATED, "once")
    };
    let mut tasks = vec![tokio::spawn({
        let (store, req) = (store.clone(), req.clone());
        async move { send(&store, &CONFIG, &req, handler).await }
    })];
    while counter.runs() == 0 {
        tokio::task::yield_now().await;
    }
    for _ in 0..49 {
        let (store, req, counter) = (store.clone(), req.clone(), counter.clone());
        tasks.push(tokio::spawn(async move {
            send(&store, &CONFIG, &req, counter.created()).await
        }));
    }
    // Let every duplicate meet the in-progress claim, then let the first finish.
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    gate.notify_one();
    let mut conflicts = 0;
    for task in tasks {
        let reply = task.await.unwrap();
        match reply.status {
            StatusCode::CREATED => assert_eq!(&reply.body[..], b"once"),
            StatusCode::CONFLICT => conflicts += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(counter.runs(), 1);
    assert_eq!(conflicts, 49);
}

#[tokio::test(start_paused = true)]
async fn two_keys_never_see_each_others_response() {
    let (store, counter) = (memory(), Counter::default());
    let a = Req::new("order-00a0");
    let b = Req::new("order-00b0");
    let ra = send(&store, &CONFIG, &a, counter.created()).await;
    let rb = send(&store, &CONFIG, &b, counter.created()).await;
    assert_ne!(ra.body, rb.body);
    assert_eq!(
        send(&store, &CONFIG, &a, counter.created()).await.body,
        ra.body
    );
    assert_eq!(
        send(&store, &CONFIG, &b, counter.created()).await.body,
        rb.body
    );
    assert_eq!(counter.runs(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_same_key_under_two_scopes_or_two_handlers_is_two_records() {
    let (store, counter) = (memory(), Counter::default());
    let base = Req::new("order-0020");
    let variants = [
        base.clone().scope("tenant-a"),
        base.clone().scope("tenant-b"),
        base.clone().handler("tests::refund_payment"),
    ];
    let mut bodies = Vec::new();
    for req in &variants {
        let reply = send(&store, &CONFIG, req, counter.created()).await;
        assert!(!reply.replayed());
        bodies.push(reply.body);
    }
    assert_eq!(counter.runs(), 3);
    for (req, body) in variants.iter().zip(&bodies) {
        assert_eq!(
            &send(&store, &CONFIG, req, counter.created()).await.body,
            body
        );
    }
}

#[tokio::test(start_paused = true)]
async fn the_handler_output_may_be_any_into_response() {
    let store = memory();
    let req = Req::new("order-0028");
    let result: Result<(StatusCode, &str), (StatusCode, String)> = Ok((StatusCode::ACCEPTED, "ok"));
    let reply = send(&store, &CONFIG, &req, async move {
        result.map(IntoResponse::into_response)
    })
    .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
}
