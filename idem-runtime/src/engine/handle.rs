//! The [`Store`] handle that handlers receive: any backend, cheap to clone, plus the
//! process-wide overrides and the lease keeper of its running calls.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::engine::backoff::Jitter;
use crate::engine::inspect::{Inspection, Stats};
use crate::engine::job::Overrides;
use crate::engine::lease::Leases;
use crate::engine::purge::PurgeTask;
use crate::engine::record::{Record, RecordId};
use crate::engine::scope::{self, NoScope, Rule, Scope};
use crate::engine::store::{IdempotencyStore, StoreResult};
use crate::engine::wait::{DEFAULT_MAX_WAITERS, RunTimes, Waiters};

/// The handle handlers use: any store, cheap to clone, plus process-wide settings.
///
/// `#[idempotent(store = "...")]` accepts any expression that derefs to a `Store`: a
/// `Store`, an `Arc<Store>`, a `LazyLock<Store>`, a field of the handler's state.
///
/// ```
/// use idem_runtime::{MemoryStore, Store};
///
/// let store = Store::new(MemoryStore::new());
/// let for_another_task = store.clone(); // one Arc increment
/// # drop(for_another_task);
/// ```
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    backend: Arc<dyn IdempotencyStore>,
    leases: Arc<Leases>,
    waiters: Arc<Waiters>,
    run_times: Arc<RunTimes>,
    jitter: Arc<Jitter>,
    lease: Option<Duration>,
    retries: Option<u32>,
    wait: Option<Duration>,
    max_waiters: usize,
    scope: Option<Rule>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("lease_override", &self.inner.lease)
            .field("retries_override", &self.inner.retries)
            .field("wait_override", &self.inner.wait)
            .field("max_waiters", &self.inner.max_waiters)
            .field("scoped", &self.inner.scope.is_some())
            .finish_non_exhaustive()
    }
}

impl<S: IdempotencyStore> From<S> for Store {
    fn from(backend: S) -> Self {
        Store::new(backend)
    }
}

impl Store {
    /// Wraps a backend.
    pub fn new(backend: impl IdempotencyStore) -> Self {
        Store::from_arc(Arc::new(backend))
    }

    /// Wraps a shared backend (keep the other `Arc` to inspect it in tests).
    pub fn from_arc(backend: Arc<dyn IdempotencyStore>) -> Self {
        Store {
            inner: Arc::new(Inner {
                backend,
                leases: Arc::default(),
                waiters: Arc::default(),
                run_times: Arc::default(),
                jitter: Arc::new(Jitter::Random),
                lease: None,
                retries: None,
                wait: None,
                max_waiters: DEFAULT_MAX_WAITERS,
                scope: None,
            }),
        }
    }

    fn with(&self, change: impl FnOnce(&mut Inner)) -> Self {
        let mut inner = (*self.inner).clone();
        change(&mut inner);
        Store {
            inner: Arc::new(inner),
        }
    }

    /// Overrides every handler's `lease` (operators, tests).
    pub fn override_lease(&self, lease: Duration) -> Self {
        self.with(|inner| inner.lease = Some(lease))
    }

    /// Overrides every handler's `retries` (operators, tests); at least 1.
    pub fn override_retries(&self, retries: u32) -> Self {
        self.with(|inner| inner.retries = Some(retries.max(1)))
    }

    /// Makes every handler wait up to `wait` for an in-flight result, as if each had
    /// `#[idempotent(wait = ...)]` (docs/contract.md, "Waiting for the in-flight result"); zero
    /// turns waiting off everywhere.
    ///
    /// ```
    /// use std::time::Duration;
    /// use idem_runtime::{MemoryStore, Store};
    ///
    /// let store = Store::new(MemoryStore::new())
    ///     .override_wait(Duration::from_secs(10))
    ///     .max_waiters(256);
    /// assert_eq!(store.waiting(), 0);
    /// ```
    pub fn override_wait(&self, wait: Duration) -> Self {
        self.with(|inner| inner.wait = Some(wait))
    }

    /// Bounds how many calls may wait for an in-flight result through this handle at once
    /// (default 1024); beyond it, a duplicate gets its 409 at once.
    pub fn max_waiters(&self, limit: usize) -> Self {
        self.with(|inner| inner.max_waiters = limit)
    }

    /// How many calls wait for an in-flight result through this handle now (also the gauge
    /// `idempotency_waiters`).
    pub fn waiting(&self) -> usize {
        self.inner.waiters.count()
    }

    /// Scopes every key by the request it came with: each handler on this store (and each
    /// [`IdempotencyLayer`](crate::IdempotencyLayer) on it) runs a request under the scope
    /// `rule` gives it, so one key sent by two callers is two records (docs/contract.md,
    /// "Scopes"). A handler's own `scope = ...` overrides the rule, and `scope = none` opts
    /// out. A request for which the rule answers `None` (or an empty scope) is refused with
    /// 403 `urn:idem:problem:no-scope` before any store access, and a plain function that
    /// names no scope of its own gets [`Error::NoScope`](crate::Error::NoScope): it has no
    /// request for the rule to read.
    ///
    /// With authentication middleware that puts the caller in the request's extensions:
    ///
    /// ```
    /// use idem_runtime::{MemoryStore, Store};
    ///
    /// #[derive(Clone)]
    /// struct UserId(u64); // inserted by the auth middleware
    ///
    /// let store = Store::new(MemoryStore::new()).scope_by(|parts| {
    ///     parts.extensions.get::<UserId>().map(|user| user.0.to_string())
    /// });
    /// # drop(store);
    /// ```
    pub fn scope_by(
        &self,
        rule: impl Fn(&http::request::Parts) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.with(|inner| inner.scope = Some(Rule::new(Arc::new(rule))))
    }

    /// [`Store::scope_by`] the request extension `T` that authentication middleware inserts
    /// (its `Display` text is the scope); a request without it is refused.
    ///
    /// ```
    /// use idem_runtime::{MemoryStore, Store};
    ///
    /// #[derive(Clone)]
    /// struct AccountId(String);
    /// impl std::fmt::Display for AccountId {
    ///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
    ///         f.write_str(&self.0)
    ///     }
    /// }
    ///
    /// let store = Store::new(MemoryStore::new()).scope_by_extension::<AccountId>();
    /// # drop(store);
    /// ```
    pub fn scope_by_extension<T: fmt::Display + Send + Sync + 'static>(&self) -> Self {
        self.scope_by(|parts| parts.extensions.get::<T>().map(T::to_string))
    }

    /// [`Store::scope_by`] the value of the request header `name` (a tenant header). Only for
    /// a header the client cannot choose freely, such as one a gateway sets after
    /// authenticating it: a client that may send any value may send another tenant's. A
    /// request without it, or with it twice, or not as visible ASCII, is refused.
    ///
    /// ```
    /// use idem_runtime::{MemoryStore, Store};
    ///
    /// let store = Store::new(MemoryStore::new()).scope_by_header("x-tenant-id");
    /// # drop(store);
    /// ```
    pub fn scope_by_header(&self, name: &'static str) -> Self {
        self.scope_by(move |parts| {
            let mut values = parts.headers.get_all(name).iter();
            match (values.next(), values.next()) {
                (Some(value), None) => value.to_str().ok().map(str::to_owned),
                _ => None,
            }
        })
    }

    /// Whether a scope rule is set ([`Store::scope_by`]).
    pub fn is_scoped(&self) -> bool {
        self.inner.scope.is_some()
    }

    /// The scope a call runs under (docs/contract.md, "Scopes").
    #[allow(clippy::ptr_arg)] // the name is remembered without a copy when it is static
    pub(crate) fn scope_for(
        &self,
        asked: Scope,
        parts: Option<&http::request::Parts>,
        handler: &std::borrow::Cow<'static, str>,
    ) -> Result<String, NoScope> {
        scope::resolve(asked, self.inner.scope.as_ref(), parts, handler)
    }

    /// Draws backoff jitter from a generator seeded with `seed`, for repeatable tests.
    pub fn with_jitter_seed(&self, seed: u64) -> Self {
        self.with(|inner| inner.jitter = Arc::new(Jitter::seeded(seed)))
    }

    /// The backend.
    pub fn backend(&self) -> &dyn IdempotencyStore {
        &*self.inner.backend
    }

    pub(crate) fn shared_backend(&self) -> &Arc<dyn IdempotencyStore> {
        &self.inner.backend
    }

    pub(crate) fn leases(&self) -> &Arc<Leases> {
        &self.inner.leases
    }

    pub(crate) fn waiters(&self) -> &Arc<Waiters> {
        &self.inner.waiters
    }

    pub(crate) fn max_waiters_value(&self) -> usize {
        self.inner.max_waiters
    }

    pub(crate) fn run_times(&self) -> &RunTimes {
        &self.inner.run_times
    }

    pub(crate) fn jitter(&self) -> &Jitter {
        &self.inner.jitter
    }

    pub(crate) fn overrides(&self) -> Overrides {
        Overrides {
            lease: self.inner.lease,
            retries: self.inner.retries,
            wait: self.inner.wait,
        }
    }

    /// Reads a record (expired ones read as `None`).
    pub async fn get(&self, id: &RecordId) -> StoreResult<Option<Record>> {
        self.backend().get(id).await
    }

    /// Deletes every expired record, in batches of `batch`, and answers how many it deleted.
    pub async fn purge_expired(&self, batch: usize) -> StoreResult<u64> {
        let batch = batch.max(1);
        let mut total = 0;
        loop {
            let n = self.backend().purge(batch).await?;
            total += n;
            if n < batch as u64 {
                return Ok(total);
            }
        }
    }

    /// Shows a record's state, times and sizes, never its body or headers; expired records
    /// read as `None`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use idem_runtime::{IdempotencyKey, MemoryStore, RecordId, Store};
    ///
    /// let store = Store::new(MemoryStore::new());
    /// let key = IdempotencyKey::parse("order-0001").unwrap();
    /// let id = RecordId::new("", "payments::create", key);
    /// assert_eq!(store.inspect(&id).await.unwrap(), None);
    /// # }
    /// ```
    pub async fn inspect(&self, id: &RecordId) -> StoreResult<Option<Inspection>> {
        self.backend().inspect(id).await
    }

    /// Deletes one record in any state, without an owner token: how an operator frees a
    /// stuck key (docs/contract.md, "Operating the records"). A handler still running under
    /// the evicted claim loses it: its completion writes nothing. `true` if a record was
    /// deleted.
    pub async fn evict(&self, id: &RecordId) -> StoreResult<bool> {
        self.backend().evict(id).await
    }

    /// Counts live records by state, and expired ones awaiting a purge.
    pub async fn stats(&self) -> StoreResult<Stats> {
        self.backend().stats().await
    }

    /// Runs [`Store::purge_expired`]`(batch)` every `every` (the first pass at once) until the
    /// returned task is dropped or stopped. Each pass that removed records adds them to
    /// `idempotency_purged_total` and logs their number at debug level; a failed pass logs a
    /// warning and the next one tries again. Needs a tokio runtime.
    pub fn purge_every(&self, every: Duration, batch: usize) -> PurgeTask {
        PurgeTask::start(self.clone(), every, batch)
    }
}
