//! Plain-function mode on every shape: free functions, `&self`, `&mut self` and `self`
//! methods, trait impls, destructured and skipped parameters, `Result` aliases, `?`, scopes
//! and a `crate` override.
#![deny(warnings)]

use std::sync::LazyLock;

use idem_runtime::{idempotent, Error, MemoryStore, Store};
use serde::{Deserialize, Serialize};

static STORE: LazyLock<Store> = LazyLock::new(|| Store::new(MemoryStore::new()));

#[derive(Serialize, Deserialize)]
struct Message {
    id: u64,
    tenant: String,
    body: String,
}

#[derive(Serialize, Deserialize)]
struct Receipt {
    total: u64,
}

#[derive(Debug)]
enum JobError {
    Idem(Error),
    Parse(std::num::ParseIntError),
}

impl From<Error> for JobError {
    fn from(error: Error) -> Self {
        JobError::Idem(error)
    }
}

impl From<std::num::ParseIntError> for JobError {
    fn from(error: std::num::ParseIntError) -> Self {
        JobError::Parse(error)
    }
}

type JobResult<T> = Result<T, JobError>;

/// Docs stay.
#[idempotent(store = "STORE", key = "format!(\"msg-{:08}\", msg.id)", ttl = "7d")]
pub async fn consume(msg: Message) -> JobResult<Receipt> {
    let total: u64 = msg.body.parse()?;
    Ok(Receipt { total })
}

#[idempotent(store = "ctx.idem", key = "key", scope = "tenant")]
async fn destructured(
    #[idem(skip)] ctx: &Consumer,
    key: &str,
    (tenant, amount): (String, u64),
) -> Result<u64, Error> {
    let _ = tenant;
    Ok(amount)
}

#[idempotent(store = "STORE", key = "order_id", retries = 3, lease = "10s")]
async fn unit_result(order_id: String) -> Result<(), Error> {
    let _ = order_id;
    Ok(())
}

#[idempotent(store = "STORE", key = "format!(\"order-{order_id}\")")]
async fn inline_format_argument(order_id: u64) -> Result<Vec<u64>, Error> {
    Ok(vec![order_id])
}

struct Consumer {
    idem: Store,
    handled: u64,
}

impl Consumer {
    #[idempotent(store = "self.idem", key = "msg.id.to_string() + \"-handled\"", scope = "msg.tenant")]
    async fn by_ref(&self, msg: Message) -> JobResult<u64> {
        Ok(msg.id + self.handled)
    }

    #[idempotent(store = "self.idem", key = "msg.id.to_string() + \"-counted\"")]
    async fn by_mut(&mut self, msg: &Message) -> JobResult<u64> {
        self.handled += 1;
        Ok(msg.id)
    }

    #[idempotent(store = "self.idem.clone()", key = "id")]
    async fn by_value(self, id: String) -> Result<String, Error> {
        Ok(format!("{id} {}", self.handled))
    }
}

trait Handle {
    async fn handle(&self, msg: Message) -> JobResult<Receipt>;
}

impl Handle for Consumer {
    #[idempotent(store = "self.idem", key = "format!(\"msg-{:08}\", msg.id)")]
    async fn handle(&self, msg: Message) -> JobResult<Receipt> {
        Ok(Receipt { total: msg.id })
    }
}

mod reexported {
    pub use idem_runtime as idem;
}

#[idempotent(store = "STORE", key = "id", crate = "crate::reexported::idem")]
async fn through_a_reexport(id: String) -> Result<String, Error> {
    Ok(id)
}

fn assert_send<T: Send>(_: T) {}

fn main() {
    // The futures are `Send` when the arguments are: they can run on a multi-threaded runtime.
    let message = || Message { id: 1, tenant: "acme".into(), body: "2".into() };
    assert_send(consume(message()));
    assert_send(unit_result("order-1".into()));
    assert_send(inline_format_argument(7));
    assert_send(through_a_reexport("order-1".into()));
    let mut consumer = Consumer { idem: STORE.clone(), handled: 0 };
    assert_send(destructured(&consumer, "order-1", ("acme".into(), 3)));
    assert_send(consumer.by_ref(message()));
    assert_send(consumer.handle(message()));
    let msg = message();
    assert_send(consumer.by_mut(&msg));
    assert_send(consumer.by_value("order-1".into()));
}
