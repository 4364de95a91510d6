//! Plain-function mode keeps its signature: `#[tracing::instrument]` works above and below
//! `#[idempotent(key = ...)]`, on free functions and methods.
#![deny(warnings)]

use std::sync::LazyLock;

use idem_runtime::{idempotent, Error, MemoryStore, Store};
use serde::Serialize;

static STORE: LazyLock<Store> = LazyLock::new(|| Store::new(MemoryStore::new()));

#[derive(Debug, Serialize)]
struct Message {
    id: u64,
    body: String,
}

#[idempotent(store = STORE, key = msg.id)]
#[tracing::instrument(skip(msg), fields(id = msg.id), err)]
async fn below(msg: Message) -> Result<usize, Error> {
    Ok(msg.body.len())
}

#[tracing::instrument(skip(msg), fields(id = msg.id), err)]
#[idempotent(store = STORE, key = msg.id)]
async fn above(msg: Message) -> Result<usize, Error> {
    Ok(msg.body.len())
}

struct Consumer {
    idem: Store,
}

impl Consumer {
    #[idempotent(store = self.idem, key = format!("msg-{}", msg.id))]
    #[tracing::instrument(skip(self))]
    async fn below(&self, msg: Message) -> Result<u64, Error> {
        Ok(msg.id)
    }

    #[tracing::instrument(skip(self, msg))]
    #[idempotent(store = self.idem, key = format!("msg-{}", msg.id))]
    async fn above(&self, msg: Message) -> Result<u64, Error> {
        Ok(msg.id)
    }
}

fn assert_send<T: Send>(_: T) {}

fn main() {
    let message = || Message { id: 1, body: "b".into() };
    assert_send(below(message()));
    assert_send(above(message()));
    let consumer = Consumer { idem: STORE.clone() };
    assert_send(consumer.below(message()));
    assert_send(consumer.above(message()));
}
