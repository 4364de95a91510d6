#![allow(unused)]

use idem_runtime::{idempotent, Error, MemoryStore, Store};
use std::sync::LazyLock;

static STORE: LazyLock<Store> = LazyLock::new(|| Store::new(MemoryStore::new()));

struct Job {
    id: String,
}

// A constant key: every call would replay the first call's result.
#[idempotent(store = "STORE", key = "\"nightly-report\"")]
async fn send_report(day: u32) -> Result<(), Error> {
    Ok(())
}

// A name that is no argument (the parameter is `msg`).
#[idempotent(store = "STORE", key = "job.id")]
async fn run_job(msg: Job) -> Result<(), Error> {
    Ok(())
}

// No arguments to compute a key from.
#[idempotent(store = "STORE", key = "\"tick\"")]
async fn tick() -> Result<(), Error> {
    Ok(())
}

fn main() {}
