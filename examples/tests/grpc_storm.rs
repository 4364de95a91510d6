//! A duplicate storm over two instances of the `grpc_payments` binary sharing Postgres: every
//! copy of a key sent at once, half through each instance; exactly one payment per key.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use idem_examples::grpc::pb::payments_client::PaymentsClient;
use idem_examples::grpc::pb::{ListPaymentsRequest, Payment};
use support::grpc::{self, Instance};
use tokio::sync::Semaphore;
use tonic::Code;
use tonic::transport::Channel;

/// Keys in the storm.
const KEYS: usize = 200;
/// Copies of each key, sent at once.
const COPIES: usize = 32;

/// What one copy met: the payment and whether it was a replay, or the status code.
type Reply = Result<(Payment, bool), (Code, bool)>;

async fn pay(mut client: PaymentsClient<Channel>, key: &str, amount: i64) -> Reply {
    match client
        .create_payment(grpc::pay(Some(key), amount, "EUR"))
        .await
    {
        Ok(answer) => {
            let replayed = grpc::replayed(answer.metadata());
            Ok((answer.into_inner(), replayed))
        }
        Err(status) => Err((
            status.code(),
            status.metadata().get("retry-after").is_some(),
        )),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_duplicate_storm_over_two_instances_pays_each_key_once() {
    let Some(db) = idem_tests::pg::database().await else {
        return;
    };
    let url = db.url();
    let env = [("IDEM_STORE", url.as_str()), ("PAYMENTS_LATENCY_MS", "50")];
    let (a, b) = tokio::join!(Instance::start(&env), Instance::start(&env));
    let clients = [a.client.clone(), b.client.clone()];
    let started = Instant::now();
    let in_flight = Arc::new(Semaphore::new(8));
    let mut keys = tokio::task::JoinSet::new();
    for k in 0..KEYS {
        let (in_flight, clients) = (in_flight.clone(), clients.clone());
        keys.spawn(async move {
            let _permit = in_flight.acquire_owned().await.expect("never closed");
            let key = format!("grpc-storm-{k:04}");
            let mut copies = tokio::task::JoinSet::new();
            for c in 0..COPIES {
                let (client, key) = (clients[c % 2].clone(), key.clone());
                copies.spawn(async move { pay(client, &key, k as i64 + 1).await });
            }
            (key, k as i64 + 1, copies.join_all().await)
        });
    }
    let storm = keys.join_all().await;
    let took = started.elapsed();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (key, amount, replies) in &storm {
        let ran: Vec<&Payment> = replies
            .iter()
            .filter_map(|reply| match reply {
                Ok((payment, false)) => Some(payment),
                _ => None,
            })
            .collect();
        assert_eq!(ran.len(), 1, "{key}: exactly one copy ran");
        for reply in replies {
            let label = match reply {
                Ok((payment, replayed)) => {
                    assert_eq!(payment, ran[0], "{key}: a replay is the first answer");
                    assert_eq!(payment.amount, *amount);
                    if *replayed { "replayed" } else { "ran" }
                }
                Err((Code::Aborted, retry_after)) => {
                    assert!(retry_after, "{key}: ABORTED carries retry-after");
                    "aborted"
                }
                Err((code, _)) => panic!("{key}: unexpected {code:?}"),
            };
            *seen.entry(label.to_owned()).or_insert(0) += 1;
        }
        let again = pay(clients[1].clone(), key, *amount).await;
        assert_eq!(
            again,
            Ok((ran[0].clone(), true)),
            "{key} replays after the storm"
        );
    }
    for mut client in clients {
        let listed = client
            .list_payments(ListPaymentsRequest {})
            .await
            .expect("ListPayments answers")
            .into_inner()
            .payments;
        assert_eq!(listed.len(), KEYS, "one payment per key");
    }
    println!(
        "gRPC duplicate storm: {KEYS} keys x {COPIES} copies over 2 instances in {took:?}; \
         payments created {KEYS}; answers {seen:?}"
    );
}
