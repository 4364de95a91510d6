//! The Redis store: one hash per record, one single-key Lua script per step (`scripts`), on one
//! server or a cluster (`connection`). It runs unchanged on Redis, Valkey and Redis Cluster
//! (docs/contract.md, "Redis and Valkey").
//!
//! A record's key is the store's prefix and the first 128 bits of a SHA-256 of the record's
//! identity (scope, handler and key, each prefixed by its length), in hex: a key name shows up
//! in `MONITOR`, `SLOWLOG` and `--bigkeys`, and must not carry a client's idempotency key.
//! There is no hash tag: records spread over every slot of a cluster.

mod connection;
mod scripts;
mod stats;

use std::sync::Arc;
use std::time::Duration;

use redis::FromRedisValue;
use sha2::{Digest, Sha256};

pub use connection::RedisConnection;
use connection::{Target, classify, eviction_policies, refuse_eviction};
use scripts::SCRIPTS;

use super::columns::{Columns, InspectColumns, acquired_from_column, millis, payload_columns};
use crate::engine::fingerprint::push_hex;
use crate::engine::inspect::{Inspection, Stats};
use crate::engine::record::{Claim, ClaimOutcome, Payload, Record, RecordId};
use crate::engine::store::{IdempotencyStore, Ownership, Reply, StoreError, StoreResult};

/// The key prefix a [`RedisStore`] uses unless told otherwise.
pub const DEFAULT_REDIS_PREFIX: &str = "idem";

/// A key prefix that is not 1 to 64 characters from `A-Z a-z 0-9 _ - . :`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid Redis key prefix {0:?}: expected 1 to 64 characters from A-Z a-z 0-9 _ - . : \
     (no glob characters: stats match the prefix with SCAN)"
)]
pub struct InvalidPrefix(pub String);

/// How [`RedisStore::connect_with`] connects: the key prefix, and whether to trust the
/// server's eviction policy without reading it.
///
/// ```
/// use idem_runtime::RedisOptions;
///
/// let options = RedisOptions::new().prefix("payments-idem")?;
/// # Ok::<(), idem_runtime::InvalidPrefix>(())
/// ```
#[derive(Debug, Clone)]
pub struct RedisOptions {
    prefix: String,
    assume_noeviction: bool,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            prefix: DEFAULT_REDIS_PREFIX.to_owned(),
            assume_noeviction: false,
        }
    }
}

impl RedisOptions {
    /// Prefix [`DEFAULT_REDIS_PREFIX`], and the eviction policy checked at connect.
    pub fn new() -> Self {
        RedisOptions::default()
    }

    /// Keeps the store's records under `PREFIX:…` (several stores, or services, can share
    /// one Redis, each under its own prefix).
    pub fn prefix(mut self, prefix: &str) -> Result<Self, InvalidPrefix> {
        let valid = (1..=64).contains(&prefix.len())
            && prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
        if !valid {
            return Err(InvalidPrefix(prefix.to_owned()));
        }
        self.prefix = prefix.to_owned();
        Ok(self)
    }

    /// Skips reading `maxmemory-policy` at connect, for a managed Redis that refuses
    /// `CONFIG`. You take on what the check ensures: the server must never evict keys
    /// (`noeviction`), or a record evicted under memory pressure lets its key run twice.
    pub fn assume_noeviction(mut self) -> Self {
        self.assume_noeviction = true;
        self
    }
}

/// An [`IdempotencyStore`] on Redis, Valkey or Redis Cluster, shared by every instance of a
/// service.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use idem_runtime::{RedisStore, Store};
///
/// // One server; or "redis+cluster://10.0.0.1:7000,10.0.0.2:7000" for a cluster.
/// let redis = RedisStore::connect("redis://127.0.0.1:6379").await?;
/// let store = Store::new(redis);
/// # drop(store); Ok(()) }
/// ```
///
/// Every step is one script on the record's one key, run with `EVALSHA`: a first call costs
/// two round trips (claim, complete), a replay one. Leases and expiry are judged by the
/// server's clock. Redis deletes an expired record itself (`PEXPIREAT`), so the background
/// purge has nothing to do here: `purge` answers 0.
#[derive(Clone)]
pub struct RedisStore {
    connection: RedisConnection,
    prefix: Arc<str>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("connection", &self.connection)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl RedisStore {
    /// Connects to `url` with the default [`RedisOptions`]: `redis://HOST:PORT[/DB]` (or
    /// `rediss://` for TLS) for one server, `redis+cluster://HOST:PORT[,HOST:PORT…]` for a
    /// cluster (any reachable node is enough to discover the rest).
    ///
    /// Refuses, with an error that says what to change, a server (any master of a cluster)
    /// whose `maxmemory-policy` is not `noeviction`.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        Self::connect_with(url, RedisOptions::new()).await
    }

    /// Connects to `url` with `options`.
    pub async fn connect_with(url: &str, options: RedisOptions) -> StoreResult<Self> {
        let mut connection = Target::parse(url)?.connect().await?;
        if !options.assume_noeviction {
            refuse_eviction(&eviction_policies(&mut connection).await?)?;
        }
        Ok(RedisStore {
            connection,
            prefix: options.prefix.into(),
        })
    }

    /// The connection, for the application's own data in the same Redis.
    pub fn connection(&self) -> &RedisConnection {
        &self.connection
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The Redis key of a record: the prefix and a hash of its identity.
    pub fn key_of(&self, id: &RecordId) -> String {
        let mut hasher = Sha256::new();
        for part in [
            id.scope.as_bytes(),
            id.handler.as_bytes(),
            id.key.as_str().as_bytes(),
        ] {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part);
        }
        let digest = hasher.finalize();
        let mut key = String::with_capacity(self.prefix.len() + 33);
        key.push_str(&self.prefix);
        key.push(':');
        push_hex(&mut key, &digest[..16]);
        key
    }

    /// The `SCAN` pattern of the store's record keys (and no other key under the prefix).
    fn pattern(&self) -> String {
        format!("{}:{}", self.prefix, "[0-9a-f]".repeat(32))
    }

    /// Runs a script on one record's key with `args`.
    async fn run<T: FromRedisValue>(
        &self,
        script: &redis::Script,
        key: String,
        args: &[&[u8]],
    ) -> StoreResult<T> {
        let mut invocation = script.key(key);
        for arg in args {
            invocation.arg(*arg);
        }
        let mut connection = self.connection.clone();
        invocation
            .invoke_async(&mut connection)
            .await
            .map_err(classify)
    }

    /// Runs a script that acts on a claimed record: whether the claim still owned it.
    async fn owned(
        &self,
        script: &redis::Script,
        claim: &Claim,
        args: &[&[u8]],
    ) -> StoreResult<Ownership> {
        let token = claim.token.to_hex();
        let mut all: Vec<&[u8]> = Vec::with_capacity(args.len() + 1);
        all.push(token.as_bytes());
        all.extend_from_slice(args);
        let held: i64 = self.run(script, self.key_of(&claim.id), &all).await?;
        Ok(if held == 1 {
            Ownership::Held
        } else {
            Ownership::Lost
        })
    }

    async fn claim_key(&self, claim: &Claim) -> StoreResult<ClaimOutcome> {
        let (fingerprint, token) = (claim.fingerprint.to_hex(), claim.token.to_hex());
        let (lease, ttl) = (
            millis(claim.lease).to_string(),
            millis(claim.ttl).to_string(),
        );
        let answer: ClaimAnswer = self
            .run(
                &SCRIPTS.claim,
                self.key_of(&claim.id),
                &[
                    fingerprint.as_bytes(),
                    token.as_bytes(),
                    lease.as_bytes(),
                    ttl.as_bytes(),
                ],
            )
            .await?;
        let (acquired, fingerprint, status, headers, body, lease_left) = answer;
        if let Some(acquired) = acquired {
            return Ok(ClaimOutcome::Acquired(acquired_from_column(&acquired)?));
        }
        let record = Columns {
            fingerprint: fingerprint.ok_or_else(|| missing("its fingerprint"))?,
            status,
            headers,
            body,
            lease_remaining: Duration::from_millis(lease_left),
        }
        .into_record()?;
        Ok(ClaimOutcome::Existing(record))
    }

    async fn complete_key(&self, claim: &Claim, payload: &Payload) -> StoreResult<Ownership> {
        let (status, headers, body) = payload_columns(payload);
        let status = status.to_string();
        let headers = headers.unwrap_or_default();
        let ttl = millis(claim.ttl).to_string();
        self.owned(
            &SCRIPTS.complete,
            claim,
            &[status.as_bytes(), headers.as_bytes(), body, ttl.as_bytes()],
        )
        .await
    }

    async fn get_key(&self, id: &RecordId) -> StoreResult<Option<Record>> {
        type Answer = Option<(String, Option<i32>, Option<String>, Option<Vec<u8>>, u64)>;
        let answer: Answer = self.run(&SCRIPTS.get, self.key_of(id), &[]).await?;
        answer
            .map(|(fingerprint, status, headers, body, lease_left)| {
                Columns {
                    fingerprint,
                    status,
                    headers,
                    body,
                    lease_remaining: Duration::from_millis(lease_left),
                }
                .into_record()
            })
            .transpose()
    }

    async fn inspect_key(&self, id: &RecordId) -> StoreResult<Option<Inspection>> {
        type Answer = Option<(Option<i32>, Option<String>, u64, u64, u64, u64, u64)>;
        let answer: Answer = self.run(&SCRIPTS.inspect, self.key_of(id), &[]).await?;
        let Some((status, headers, body_bytes, age, since_update, expires_in, lease)) = answer
        else {
            return Ok(None);
        };
        InspectColumns {
            status,
            headers,
            body_bytes: usize::try_from(body_bytes).unwrap_or(usize::MAX),
            age: Duration::from_millis(age),
            since_update: Duration::from_millis(since_update),
            expires_in: Duration::from_millis(expires_in),
            lease_remaining: Duration::from_millis(lease),
        }
        .into_inspection()
        .map(Some)
    }

    async fn evict_key(&self, id: &RecordId) -> StoreResult<bool> {
        let mut connection = self.connection.clone();
        let deleted: i64 = redis::cmd("DEL")
            .arg(self.key_of(id))
            .query_async(&mut connection)
            .await
            .map_err(classify)?;
        Ok(deleted > 0)
    }

    /// Counts the records by state (`stats`): see the module `stats` for how, and its cost.
    async fn count(&self) -> StoreResult<Stats> {
        stats::count(&self.connection, &self.pattern()).await
    }
}

/// The claim script's answer: how the claim was acquired, or the standing record's
/// fingerprint, status, headers, body and lease left (ms).
type ClaimAnswer = (
    Option<String>,
    Option<String>,
    Option<i32>,
    Option<String>,
    Option<Vec<u8>>,
    u64,
);

/// A record's answer lacked a field every record has.
fn missing(what: &str) -> StoreError {
    StoreError::permanent(format!("a Redis idempotency record lacks {what}"))
}

impl IdempotencyStore for RedisStore {
    fn claim<'a>(&'a self, claim: &'a Claim) -> Reply<'a, ClaimOutcome> {
        Reply::pending(self.claim_key(claim))
    }

    fn renew<'a>(&'a self, claim: &'a Claim) -> Reply<'a, Ownership> {
        Reply::pending(async move {
            let lease = millis(claim.lease).to_string();
            self.owned(&SCRIPTS.renew, claim, &[lease.as_bytes()]).await
        })
    }

    fn complete<'a>(&'a self, claim: &'a Claim, payload: &'a Arc<Payload>) -> Reply<'a, Ownership> {
        Reply::pending(self.complete_key(claim, payload))
    }

    fn fail<'a>(&'a self, claim: &'a Claim) -> Reply<'a, Ownership> {
        Reply::pending(self.owned(&SCRIPTS.fail, claim, &[]))
    }

    fn release<'a>(&'a self, claim: &'a Claim) -> Reply<'a, Ownership> {
        Reply::pending(self.owned(&SCRIPTS.release, claim, &[]))
    }

    fn get<'a>(&'a self, id: &'a RecordId) -> Reply<'a, Option<Record>> {
        Reply::pending(self.get_key(id))
    }

    /// Nothing to purge: Redis deletes a record itself when it expires (`PEXPIREAT`).
    fn purge(&self, _limit: usize) -> Reply<'_, u64> {
        Reply::Ready(Ok(0))
    }

    fn inspect<'a>(&'a self, id: &'a RecordId) -> Reply<'a, Option<Inspection>> {
        Reply::pending(self.inspect_key(id))
    }

    fn evict<'a>(&'a self, id: &'a RecordId) -> Reply<'a, bool> {
        Reply::pending(self.evict_key(id))
    }

    fn stats(&self) -> Reply<'_, Stats> {
        Reply::pending(self.count())
    }
}
