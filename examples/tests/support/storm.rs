//! The duplicate storm both modes are judged by: every copy of a key sent at once, half
//! through each of two instances, a few keys at a time; then what every answer must be.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use idem_examples::client::{Client, Reply};
use tokio::sync::Semaphore;

/// Keys in a storm.
pub const KEYS: usize = 200;
/// Copies of each key, sent at once.
pub const COPIES: usize = 32;

/// One key's body and every answer to its copies.
pub struct Key {
    pub key: String,
    pub body: String,
    pub replies: Vec<Reply>,
}

/// Sends the storm (`prefix-NNNN` keys) and answers every key's replies and the time it took.
pub async fn send(clients: [Client; 2], prefix: &str) -> (Vec<Key>, Duration) {
    let started = Instant::now();
    let in_flight = Arc::new(Semaphore::new(8));
    let mut keys = tokio::task::JoinSet::new();
    for k in 0..KEYS {
        let (in_flight, key) = (in_flight.clone(), format!("{prefix}-{k:04}"));
        keys.spawn(async move {
            let _permit = in_flight.acquire_owned().await.unwrap();
            let body = format!(r#"{{"amount":{},"currency":"EUR"}}"#, k + 1);
            let mut copies = tokio::task::JoinSet::new();
            for c in 0..COPIES {
                let (client, key, body) = (clients[c % 2], key.clone(), body.clone());
                copies.spawn(async move { client.pay(Some(&key), &body).await.unwrap() });
            }
            let replies = copies.join_all().await;
            Key { key, body, replies }
        });
    }
    let storm = keys.join_all().await;
    (storm, started.elapsed())
}

/// Checks that exactly one copy of every key ran, that every other answer is its response
/// byte for byte or a 409 problem with `Retry-After`, and that each key now replays; answers
/// the count of every status seen.
pub async fn check(storm: &[Key], clients: [Client; 2]) -> BTreeMap<u16, usize> {
    let mut statuses = BTreeMap::new();
    let mut firsts = HashMap::new();
    for Key { key, body, replies } in storm {
        let ran: Vec<&Reply> = replies
            .iter()
            .filter(|r| r.status == 201 && !r.replayed())
            .collect();
        assert_eq!(ran.len(), 1, "{key}: exactly one copy ran");
        for reply in replies {
            *statuses.entry(reply.status.as_u16()).or_insert(0) += 1;
            match reply.status.as_u16() {
                201 => {
                    assert_eq!(
                        reply.body, ran[0].body,
                        "{key}: a replay is the first response"
                    );
                    assert_eq!(reply.header("content-type"), ran[0].header("content-type"));
                }
                409 => {
                    assert_eq!(
                        reply.header("content-type"),
                        Some("application/problem+json")
                    );
                    assert!(reply.header("retry-after").is_some());
                }
                other => panic!("{key}: unexpected {other}: {}", reply.text()),
            }
        }
        firsts.insert(key.clone(), (body.clone(), ran[0].body.clone()));
    }
    for (i, (key, (body, first))) in firsts.iter().enumerate() {
        let again = clients[i % 2].pay(Some(key), body).await.unwrap();
        assert!(again.replayed(), "{key} replays after the storm");
        assert_eq!(&again.body, first);
    }
    statuses
}
