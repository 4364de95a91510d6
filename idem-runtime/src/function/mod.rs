//! The plain-function adapter (docs/contract.md, "Plain-function mode"):
//! `#[idempotent(store = "...", key = "msg.id")]` on any `async fn` returning `Result<T, E>`:
//! a queue consumer, a job, an outbound call.
//!
//! The same executor as an HTTP request (claim, decisions, lease renewal, persistence,
//! metrics), with a function's vocabulary:
//!
//! | situation | the call returns | function runs |
//! |---|---|---|
//! | key invalid | `Err(E::from(Error::InvalidKey))` | no |
//! | new key (or expired, abandoned, FAILED_STORAGE) | its own result; an `Ok` is stored | yes, once |
//! | same key and arguments, completed | `Ok(stored T)` | no |
//! | same key, other arguments | `Err(E::from(Error::Mismatch))` | no |
//! | same key, still running elsewhere | `Err(E::from(Error::Conflict { retry_after }))` | no |
//! | a new key, its scope at the store's quota | `Err(E::from(Error::QuotaExceeded { retry_after }))` | no |
//! | no scope of its own, on a store with a scope rule | `Err(E::from(Error::NoScope))` | no |
//! | store unreachable when claiming | `Err(E::from(Error::StoreUnavailable))` | no |
//! | the function returns `Err` or panics | that error (the panic resumes) | yes; claim released |
//!
//! The `Ok` value is stored as what it is, its JSON ([`Payload::Value`]). The fingerprint is SHA-256 over each argument's JSON, with
//! object keys sorted so that a `HashMap`'s iteration order does not matter. Unlike an HTTP
//! handler, the function runs in the caller's task (a method may borrow `&self`): a caller
//! that drops the call midway leaves its claim to expire with the lease.

mod error;

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::FutureExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;

pub use error::Error;

use crate::engine::config::Config;
use crate::engine::execute::{Lendable, Lent, Settle, Verdict, execute};
use crate::engine::fingerprint::Fingerprint;
use crate::engine::handle::Store;
use crate::engine::job::Job;
use crate::engine::key::{IdempotencyKey, KeyError};
use crate::engine::metrics;
use crate::engine::outcome::Outcome;
use crate::engine::record::{Payload, Target};
use crate::engine::store::StoreError;

/// The return type of an idempotent function: `Result<T, E>` whose `T` can be stored and
/// whose `E` can carry an [`Error`]. Implemented for every such `Result`.
#[diagnostic::on_unimplemented(
    message = "`#[idempotent(key = ...)]` needs a function returning `Result<T, E>`, not `{Self}`",
    label = "not a `Result`",
    note = "the `Ok` value is stored and replayed; idempotency errors come back as the `Err` type"
)]
pub trait CallResult: sealed::Sealed {
    /// What is stored and replayed.
    type Ok: Storable;
    /// What conflicts, mismatches and store failures come back as.
    type Err: FromIdempotencyError;
    /// As a plain `Result`.
    fn into_result(self) -> Result<Self::Ok, Self::Err>;
    /// From a plain `Result`.
    fn from_result(result: Result<Self::Ok, Self::Err>) -> Self;
}

impl<T: Storable, E: FromIdempotencyError> CallResult for Result<T, E> {
    type Ok = T;
    type Err = E;
    fn into_result(self) -> Self {
        self
    }
    fn from_result(result: Self) -> Self {
        result
    }
}

mod sealed {
    pub trait Sealed {}
    impl<T, E> Sealed for Result<T, E> {}
}

/// An `Ok` type that can be stored and replayed: `Serialize + DeserializeOwned`.
pub trait Storable: Serialize + DeserializeOwned {}
impl<T: Serialize + DeserializeOwned> Storable for T {}

/// An error type that idempotency errors convert into: `From<idem_runtime::Error>`.
pub trait FromIdempotencyError: From<Error> {}
impl<E: From<Error>> FromIdempotencyError for E {}

/// The arguments of one call, serialized for its fingerprint.
///
/// ```
/// use idem_runtime::function::Arguments;
/// use std::collections::HashMap;
///
/// let a: HashMap<&str, u32> = [("x", 1), ("y", 2)].into();
/// let b: HashMap<&str, u32> = [("y", 2), ("x", 1)].into();
/// let one = Arguments::new().arg("order-1").arg(&a).fingerprint().unwrap();
/// let two = Arguments::new().arg("order-1").arg(&b).fingerprint().unwrap();
/// assert_eq!(one, two); // object keys are sorted
/// assert_ne!(one, Arguments::new().arg("order-2").arg(&a).fingerprint().unwrap());
/// ```
#[derive(Debug, Default)]
pub struct Arguments {
    parts: Vec<Vec<u8>>,
    error: Option<serde_json::Error>,
}

impl Arguments {
    /// No arguments yet.
    pub fn new() -> Self {
        Arguments::default()
    }

    /// Adds one argument (its JSON, object keys sorted). The first failure is kept.
    pub fn arg<A: Serialize + ?Sized>(mut self, value: &A) -> Self {
        if self.error.is_none() {
            match canonical_json(value) {
                Ok(bytes) => self.parts.push(bytes),
                Err(error) => self.error = Some(error),
            }
        }
        self
    }

    /// SHA-256 over the arguments, each length-prefixed; the first serialization error if
    /// any argument failed.
    pub fn fingerprint(self) -> Result<Fingerprint, serde_json::Error> {
        if let Some(error) = self.error {
            return Err(error);
        }
        let parts: Vec<&[u8]> = self.parts.iter().map(Vec::as_slice).collect();
        Ok(Fingerprint::of_parts(&parts))
    }
}

fn canonical_json<A: Serialize + ?Sized>(value: &A) -> serde_json::Result<Vec<u8>> {
    let mut value = serde_json::to_value(value)?;
    value.sort_all_objects();
    serde_json::to_vec(&value)
}

/// Validates a key computed from the arguments, like a header's: 8 to 128 characters from
/// `A-Za-z0-9._:-`.
pub fn key<K: fmt::Display + ?Sized>(key: &K) -> Result<IdempotencyKey, KeyError> {
    IdempotencyKey::parse(&key.to_string())
}

/// Runs one idempotent call: what `#[idempotent(key = "...")]` expands to.
///
/// `body` is the function's body as a future; it runs at most once per key (in this task,
/// under a renewed lease) and its `Ok` is stored; later calls with the key and the same
/// arguments get that value back without running it.
///
/// ```
/// use idem_runtime::function::{self, Arguments};
/// use idem_runtime::{Config, Error, MemoryStore, Scope, Store, Target};
///
/// const CONFIG: Config = Config::new();
///
/// async fn charge(store: &Store, invoice: &str, amount: u32) -> Result<String, Error> {
///     let target = Target { handler: "billing::charge".into(), scope: Scope::None };
///     let arguments = Arguments::new().arg(invoice).arg(&amount);
///     function::run(store.clone(), &CONFIG, target, function::key(invoice), arguments, async move {
///         Ok(format!("charged {amount}"))
///     })
///     .await
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let store = Store::new(MemoryStore::new());
/// assert_eq!(charge(&store, "invoice-0042", 10).await.unwrap(), "charged 10");
/// // Replayed: the body did not run again.
/// assert_eq!(charge(&store, "invoice-0042", 10).await.unwrap(), "charged 10");
/// assert!(matches!(charge(&store, "invoice-0042", 99).await, Err(Error::Mismatch)));
/// # }
/// ```
pub async fn run<R, F>(
    store: Store,
    config: &Config,
    target: Target,
    key: Result<IdempotencyKey, KeyError>,
    arguments: Arguments,
    body: F,
) -> R
where
    R: CallResult,
    F: Future<Output = R>,
{
    let limit = config.max_stored_body_value();
    let work = move |_| settle(body.map(R::into_result), limit);
    R::from_result(call(store, config, target, key, arguments, work).await)
}

/// [`run`] for a transactional function (`#[idempotent(key = "...", transactional)]`): `body`
/// is called with its `Tx`, a transaction on the store's database opened after the claim, and
/// its writes commit together with the stored result, or not at all.
pub async fn run_transactional<L, R, C, F>(
    store: Store,
    config: &Config,
    target: Target,
    key: Result<IdempotencyKey, KeyError>,
    arguments: Arguments,
    body: C,
) -> R
where
    L: Lendable,
    R: CallResult,
    C: FnOnce(L) -> F,
    F: Future<Output = R>,
{
    let limit = config.max_stored_body_value();
    let work = move |lent: Option<Lent>| async move {
        match lent.and_then(L::lend) {
            Some(tx) => settle(body(tx).map(R::into_result), limit).await,
            None => {
                tracing::error!(
                    "the function's `Tx` is not for this store's database; nothing ran"
                );
                let error =
                    StoreError::permanent("the function's `Tx` is not for this store's database");
                Settle::Release(Err(Error::StoreUnavailable(error).into()))
            }
        }
    };
    R::from_result(call(store, config, target, key, arguments, work).await)
}

async fn call<T, E, W>(
    store: Store,
    config: &Config,
    target: Target,
    key: Result<IdempotencyKey, KeyError>,
    arguments: Arguments,
    work: impl FnOnce(Option<Lent>) -> W,
) -> Result<T, E>
where
    T: Storable,
    E: From<Error>,
    W: Future<Output = Settle<Result<T, E>>>,
{
    let Target { handler, scope } = target;
    let key = match key {
        Ok(key) => key,
        Err(error) => {
            metrics::outcome(&handler, Outcome::from(&error));
            return Err(Error::InvalidKey(error).into());
        }
    };
    let fingerprint = arguments
        .fingerprint()
        .map_err(|error| E::from(Error::Arguments(error)))?;
    // A function has no request for a store's rule to read: it names its scope, or none.
    let Ok(scope) = store.scope_for(scope, None, &handler) else {
        metrics::outcome(&handler, Outcome::NoScope);
        return Err(Error::NoScope.into());
    };
    let span = tracing::info_span!("idempotent", handler = %handler, key_prefix = key.prefix());
    let job = Job::new(config, store.overrides(), handler, scope, key, fingerprint);
    match execute(store, job, work).instrument(span).await {
        Verdict::Ran(result) => result,
        Verdict::Panicked(panic) => std::panic::resume_unwind(panic),
        Verdict::Replay(payload) => replay(&payload).map_err(E::from),
        Verdict::Mismatch => Err(Error::Mismatch.into()),
        Verdict::Conflict { retry_after } => Err(Error::Conflict { retry_after }.into()),
        Verdict::OverQuota { retry_after } => Err(Error::QuotaExceeded { retry_after }.into()),
        Verdict::Unavailable(error) => Err(Error::StoreUnavailable(error).into()),
        Verdict::CommitFailed => Err(Error::CommitFailed.into()),
    }
}

/// The body's run as the executor's work: an `Ok` is kept as its JSON; an `Err`, or a value
/// too large or unserializable to keep, releases the claim.
async fn settle<T, E, F>(body: F, limit: usize) -> Settle<Result<T, E>>
where
    T: Storable,
    F: Future<Output = Result<T, E>>,
{
    let value = match body.await {
        Ok(value) => value,
        Err(error) => {
            tracing::info!(
                "the function returned an error: releasing the claim so a retry runs again"
            );
            return Settle::Release(Err(error));
        }
    };
    match serde_json::to_vec(&value) {
        Ok(json) if json.len() <= limit => {
            Settle::Keep(Arc::new(Payload::Value(Bytes::from(json))), Ok(value))
        }
        Ok(json) => {
            tracing::warn!(
                limit,
                size = json.len(),
                "the result is over the storable limit; returning it unstored and releasing the claim"
            );
            Settle::Release(Ok(value))
        }
        Err(error) => {
            tracing::warn!(%error, "the result could not be serialized; returning it unstored and releasing the claim");
            Settle::Release(Ok(value))
        }
    }
}

/// The stored value, read back: a value's JSON, or (for records written before values were
/// stored as what they are) the body of a JSON response. Corrupt data is logged by position
/// only, never echoed.
fn replay<T: DeserializeOwned>(payload: &Payload) -> Result<T, Error> {
    serde_json::from_slice(payload.body()).map_err(|error| {
        tracing::error!(
            category = ?error.classify(),
            line = error.line(),
            column = error.column(),
            "the stored result does not deserialize as the function's return type"
        );
        Error::Undecodable
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_length_prefixed_and_order_matters() {
        let ab = Arguments::new().arg("a").arg("b").fingerprint().unwrap();
        let ba = Arguments::new().arg("b").arg("a").fingerprint().unwrap();
        let joined = Arguments::new().arg("ab").fingerprint().unwrap();
        assert_ne!(ab, ba);
        assert_ne!(ab, joined);
    }

    #[test]
    fn an_unserializable_argument_is_an_error() {
        let map: std::collections::BTreeMap<Vec<u8>, u8> = [(vec![1], 1)].into();
        assert!(Arguments::new().arg(&map).fingerprint().is_err());
    }

    #[test]
    fn keys_are_validated_like_headers() {
        assert!(key("order-0001").is_ok());
        assert!(key(&42u64).is_err());
        assert_eq!(key(""), Err(KeyError::Missing));
        assert!(key(&format_args!("order-{:04}", 42)).is_ok());
    }

    #[test]
    fn undecodable_results_do_not_echo_stored_data() {
        let stored = Payload::Value(Bytes::from_static(b"\"secret-value\""));
        let error = replay::<u32>(&stored).unwrap_err();
        assert!(matches!(error, Error::Undecodable));
        assert!(!error.to_string().contains("secret"));
    }
}

#[cfg(test)]
mod legacy {
    use super::*;

    #[test]
    fn a_value_stored_as_a_json_response_by_the_previous_release_still_replays() {
        let previous = Payload::Response {
            status: 200,
            headers: vec![(
                "content-type".to_owned(),
                Bytes::from_static(b"application/json"),
            )],
            body: Bytes::from_static(b"{\"amount_cents\":1200}"),
        };
        let value: serde_json::Value = replay(&previous).unwrap();
        assert_eq!(value["amount_cents"], 1200);
    }
}
