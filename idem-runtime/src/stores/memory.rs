//! An in-process store: lock-striped maps, TTL expiry, a bounded size, an optional quota per
//! scope.
//!
//! Time is `tokio::time::Instant`, so tests with a paused tokio clock control leases and
//! expiry exactly. When the store is full, expired records are purged from the full shard;
//! if it is still full the claim fails as a transient store error (503 for the client). A
//! live record is never evicted: evicting one would let its key run twice. A quota per scope
//! (`MemoryStore::scope_quota`) keeps one scope from filling the store for every other one
//! (docs/contract.md, "Quotas").

use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hashbrown::{HashMap, HashTable};

use tokio::time::Instant;

use crate::engine::fingerprint::Fingerprint;
use crate::engine::inspect::{InspectedState, Inspection, Stats};
use crate::engine::record::{
    Acquired, Claim, ClaimOutcome, OwnerToken, Payload, Record, RecordId, RecordState,
};
use crate::engine::store::{IdempotencyStore, Ownership, Reply, StoreError, StoreResult};

const SHARDS: usize = 32;
/// Default most records a [`MemoryStore`] holds.
pub const DEFAULT_MEMORY_CAPACITY: usize = 1_000_000;

/// An in-memory [`IdempotencyStore`] for single-process services and tests.
///
/// ```
/// use idem_runtime::{MemoryStore, Store};
/// let store = Store::new(MemoryStore::with_capacity(10_000));
/// # drop(store);
/// ```
pub struct MemoryStore {
    shards: Box<[Mutex<HashTable<Slot>>]>,
    shard_capacity: usize,
    hasher: RandomState,
    quota: Option<Quota>,
}

/// How often, at most, a scope at its quota makes the store sweep every shard for expired
/// records before it refuses: a scope that floods keys gets 429s, not a sweep each.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The quota per scope, and what it needs: each scope's records (expired ones too, until a
/// purge, a sweep or a full shard removes them), counted under one lock, taken after a shard's.
struct Quota {
    per_scope: usize,
    held: Mutex<HashMap<String, Held, RandomState>>,
    last_sweep: Mutex<Option<Instant>>,
}

/// One scope's records.
#[derive(Default)]
struct Held {
    records: usize,
    /// When the first of its live records expires, as the last sweep found it.
    frees_at: Option<Instant>,
}

impl Quota {
    /// Counts a new record of `scope`, or answers when room is expected.
    fn admit(&self, scope: &str, now: Instant) -> Result<(), Duration> {
        let mut held = lock(&self.held);
        // The scope is copied only when it is new to the quota.
        let counted = held.entry_ref(scope).or_default();
        if counted.records < self.per_scope {
            counted.records += 1;
            return Ok(());
        }
        let frees_in = counted.frees_at.map(|at| at.saturating_duration_since(now));
        Err(frees_in
            .filter(|wait| !wait.is_zero())
            .unwrap_or(SWEEP_EVERY))
    }

    /// Uncounts removed records, one scope each.
    fn forget<'a>(&self, scopes: impl IntoIterator<Item = &'a str>) {
        let mut held = lock(&self.held);
        for scope in scopes {
            if let Some(counted) = held.get_mut(scope) {
                counted.records = counted.records.saturating_sub(1);
                if counted.records == 0 {
                    held.remove(scope);
                }
            }
        }
    }

    /// Whether a sweep may run now (at most one every [`SWEEP_EVERY`]).
    fn may_sweep(&self, now: Instant) -> bool {
        let mut last = lock(&self.last_sweep);
        match *last {
            Some(at) if now.saturating_duration_since(at) < SWEEP_EVERY => false,
            _ => {
                *last = Some(now);
                true
            }
        }
    }
}

/// A bucket of a shard's table: the identity's hash (SipHash, keyed per store: keys come
/// from clients), computed once per store call and kept, so that growing a shard never hashes
/// a key again and a probe compares hashes before it touches a record; and the record, boxed
/// (why boxed: the `memory_store` group of `tests/benches/overhead.rs`).
struct Slot {
    hash: u64,
    record: Box<Stored>,
}

/// A record: what a claim reads first (the entry), then its identity.
struct Stored {
    entry: Entry,
    id: RecordId,
}

impl Slot {
    fn is(&self, hash: u64, id: &RecordId) -> bool {
        self.hash == hash && self.record.id == *id
    }
}

struct Entry {
    fingerprint: Fingerprint,
    token: OwnerToken,
    state: State,
    locked_until: Instant,
    expires_at: Instant,
}

enum State {
    InProgress,
    FailedStorage,
    /// Shared with the call that stored it and with replays: neither copies it.
    Completed(Arc<Payload>),
}

impl Entry {
    /// A fresh IN_PROGRESS record owned by `claim`.
    fn claimed(claim: &Claim, now: Instant) -> Self {
        Entry {
            fingerprint: claim.fingerprint,
            token: claim.token,
            state: State::InProgress,
            locked_until: now + claim.lease,
            expires_at: now + claim.ttl,
        }
    }

    fn record(&self, now: Instant) -> Record {
        let state = match &self.state {
            State::InProgress => RecordState::InProgress {
                lease_remaining: self.locked_until.saturating_duration_since(now),
            },
            State::FailedStorage => RecordState::FailedStorage,
            State::Completed(payload) => RecordState::Completed(Arc::clone(payload)),
        };
        Record {
            fingerprint: self.fingerprint,
            state,
        }
    }

    /// What an operator sees of this record: no times of creation or change (the memory
    /// store keeps none), no body or headers.
    fn inspection(&self, now: Instant) -> Inspection {
        let (state, response_status, headers, body_bytes) = match &self.state {
            State::InProgress => (
                InspectedState::InProgress {
                    lease_remaining: self.locked_until.saturating_duration_since(now),
                },
                None,
                0,
                0,
            ),
            State::FailedStorage => (InspectedState::FailedStorage, None, 0, 0),
            State::Completed(payload) => match &**payload {
                Payload::Response {
                    status,
                    headers,
                    body,
                } => (
                    InspectedState::Completed,
                    Some(*status),
                    headers.len(),
                    body.len(),
                ),
                Payload::Value(json) => (InspectedState::Completed, None, 0, json.len()),
            },
        };
        Inspection {
            state,
            age: None,
            since_update: None,
            expires_in: self.expires_at.saturating_duration_since(now),
            response_status,
            headers,
            body_bytes,
        }
    }

    /// Adds this record to `stats`, live by state or expired.
    fn count(&self, stats: &mut Stats, now: Instant) {
        let counter = if self.expires_at <= now {
            &mut stats.expired
        } else {
            match self.state {
                State::InProgress => &mut stats.in_progress,
                State::FailedStorage => &mut stats.failed_storage,
                State::Completed(_) => &mut stats.completed,
            }
        };
        *counter += 1;
    }

    /// Whether `claim` may take this record over, and as what.
    fn takeover(&self, claim: &Claim, now: Instant) -> Option<Acquired> {
        if self.expires_at <= now {
            return Some(Acquired::New);
        }
        if self.fingerprint != claim.fingerprint {
            return None;
        }
        match self.state {
            State::FailedStorage => Some(Acquired::FailedStorage),
            State::InProgress if self.locked_until <= now => Some(Acquired::Abandoned),
            _ => None,
        }
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl MemoryStore {
    /// A store holding up to [`DEFAULT_MEMORY_CAPACITY`] records.
    pub fn new() -> Self {
        MemoryStore::with_capacity(DEFAULT_MEMORY_CAPACITY)
    }

    /// A store holding up to about `capacity` records (rounded up to a multiple of 32).
    pub fn with_capacity(capacity: usize) -> Self {
        MemoryStore {
            shards: (0..SHARDS).map(|_| Mutex::new(HashTable::new())).collect(),
            shard_capacity: capacity.div_ceil(SHARDS).max(1),
            hasher: RandomState::new(),
            quota: None,
        }
    }

    /// Caps the records one scope may hold at `records` (at least 1): a claim of a new key
    /// beyond it is answered [`ClaimOutcome::OverQuota`] (429 with `Retry-After` over HTTP),
    /// so that one caller flooding keys fills its own quota, not the store (docs/contract.md,
    /// "Quotas"). Expired records count until they are removed: by a purge, by a full shard,
    /// or by the sweep of every shard that a scope at its quota starts (at most once a
    /// second). Unscoped keys are one scope, `""`.
    ///
    /// ```
    /// use idem_runtime::{MemoryStore, Store};
    ///
    /// let store = Store::new(MemoryStore::with_capacity(1_000_000).scope_quota(10_000));
    /// # drop(store);
    /// ```
    pub fn scope_quota(mut self, records: u64) -> Self {
        self.quota = Some(Quota {
            // More than the address space holds is no limit at all.
            per_scope: usize::try_from(records).unwrap_or(usize::MAX).max(1),
            held: Mutex::default(),
            last_sweep: Mutex::default(),
        });
        self
    }

    /// How many records the store holds, expired ones included until purged.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    /// True when the store holds no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The identity's hash and its shard, locked. The shard comes from bits that the table
    /// itself does not use for buckets (low bits) or control bytes (top 7 bits).
    fn shard(&self, id: &RecordId) -> (u64, MutexGuard<'_, HashTable<Slot>>) {
        let hash = self.hasher.hash_one(id);
        let index = (hash >> 40) as usize % SHARDS;
        (hash, lock(&self.shards[index]))
    }

    /// Claims; a scope at its quota first has expired records swept (at most one sweep a
    /// second), then is tried once more.
    fn claim_record(&self, claim: &Claim) -> StoreResult<ClaimOutcome> {
        let claimed = self.claim_once(claim)?;
        match &self.quota {
            Some(quota)
                if matches!(claimed, ClaimOutcome::OverQuota { .. })
                    && quota.may_sweep(Instant::now()) =>
            {
                self.sweep(quota, &claim.id.scope);
                self.claim_once(claim)
            }
            _ => Ok(claimed),
        }
    }

    /// Removes every expired record, shard by shard, and notes when the first live record of
    /// `scope` expires.
    fn sweep(&self, quota: &Quota, scope: &str) {
        let now = Instant::now();
        let mut frees_at: Option<Instant> = None;
        for shard in self.shards.iter() {
            let mut gone = Vec::new();
            lock(shard).retain(|slot| {
                let record = &slot.record;
                if record.entry.expires_at <= now {
                    gone.push(record.id.scope.clone());
                    return false;
                }
                if record.id.scope == scope {
                    let at = record.entry.expires_at;
                    frees_at = Some(frees_at.map_or(at, |first| first.min(at)));
                }
                true
            });
            quota.forget(gone.iter().map(String::as_str));
        }
        if let Some(held) = lock(&quota.held).get_mut(scope) {
            held.frees_at = frees_at;
        }
    }

    fn claim_once(&self, claim: &Claim) -> StoreResult<ClaimOutcome> {
        let now = Instant::now();
        let (hash, mut shard) = self.shard(&claim.id);
        if let Some(slot) = shard.find_mut(hash, |slot| slot.is(hash, &claim.id)) {
            let entry = &mut slot.record.entry;
            return Ok(match entry.takeover(claim, now) {
                Some(acquired) => {
                    *entry = Entry::claimed(claim, now);
                    ClaimOutcome::Acquired(acquired)
                }
                None => ClaimOutcome::Existing(entry.record(now)),
            });
        }
        if shard.len() >= self.shard_capacity {
            self.remove_expired(&mut shard, now, usize::MAX);
            if shard.len() >= self.shard_capacity {
                return Err(StoreError::transient(
                    "the memory store is full of live records",
                ));
            }
        }
        if let Some(quota) = &self.quota
            && let Err(retry_after) = quota.admit(&claim.id.scope, now)
        {
            return Ok(ClaimOutcome::OverQuota { retry_after });
        }
        let slot = Slot {
            hash,
            record: Box::new(Stored {
                entry: Entry::claimed(claim, now),
                id: claim.id.clone(),
            }),
        };
        shard.insert_unique(hash, slot, |slot| slot.hash);
        Ok(ClaimOutcome::Acquired(Acquired::New))
    }

    /// Removes up to `limit` expired records from a locked shard (uncounting them from their
    /// scopes' quotas) and answers how many it removed.
    fn remove_expired(&self, shard: &mut HashTable<Slot>, now: Instant, limit: usize) -> usize {
        let mut removed = 0usize;
        let mut gone = Vec::new();
        shard.retain(|slot| {
            let expired = slot.record.entry.expires_at <= now && removed < limit;
            removed += usize::from(expired);
            if expired && self.quota.is_some() {
                gone.push(slot.record.id.scope.clone());
            }
            !expired
        });
        if let Some(quota) = &self.quota {
            quota.forget(gone.iter().map(String::as_str));
        }
        removed
    }

    /// Uncounts one removed record from its scope's quota.
    fn forget(&self, scope: &str) {
        if let Some(quota) = &self.quota {
            quota.forget([scope]);
        }
    }

    /// Applies `change` to the record if `claim` still owns it.
    fn with_owned(&self, claim: &Claim, change: impl FnOnce(&mut Entry, Instant)) -> Ownership {
        let now = Instant::now();
        let (hash, mut shard) = self.shard(&claim.id);
        match shard.find_mut(hash, |slot| slot.is(hash, &claim.id)) {
            Some(slot) if slot.record.entry.token == claim.token => {
                change(&mut slot.record.entry, now);
                Ownership::Held
            }
            _ => Ownership::Lost,
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // No code panics while holding a shard lock; should one ever, the map is still whole.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl IdempotencyStore for MemoryStore {
    fn claim<'a>(&'a self, claim: &'a Claim) -> Reply<'a, ClaimOutcome> {
        Reply::Ready(self.claim_record(claim))
    }

    fn renew<'a>(&'a self, claim: &'a Claim) -> Reply<'a, Ownership> {
        let mut live = false;
        let owned = self.with_owned(claim, |entry, now| {
            if matches!(entry.state, State::InProgress) {
                entry.locked_until = now + claim.lease;
                live = true;
            }
        });
        Reply::Ready(Ok(if live { owned } else { Ownership::Lost }))
    }

    fn complete<'a>(&'a self, claim: &'a Claim, payload: &'a Arc<Payload>) -> Reply<'a, Ownership> {
        Reply::Ready(Ok(self.with_owned(claim, |entry, now| {
            entry.state = State::Completed(Arc::clone(payload));
            entry.expires_at = now + claim.ttl;
        })))
    }

    fn fail<'a>(&'a self, claim: &'a Claim) -> Reply<'a, Ownership> {
        Reply::Ready(Ok(self.with_owned(claim, |entry, _| {
            entry.state = State::FailedStorage;
        })))
    }

    fn release<'a>(&'a self, claim: &'a Claim) -> Reply<'a, Ownership> {
        let (hash, mut shard) = self.shard(&claim.id);
        let owned = match shard.find_entry(hash, |slot| slot.is(hash, &claim.id)) {
            Ok(slot)
                if slot.get().record.entry.token == claim.token
                    && matches!(slot.get().record.entry.state, State::InProgress) =>
            {
                slot.remove();
                self.forget(&claim.id.scope);
                Ownership::Held
            }
            _ => Ownership::Lost,
        };
        Reply::Ready(Ok(owned))
    }

    fn get<'a>(&'a self, id: &'a RecordId) -> Reply<'a, Option<Record>> {
        let now = Instant::now();
        let (hash, shard) = self.shard(id);
        let record = shard
            .find(hash, |slot| slot.is(hash, id))
            .map(|slot| &slot.record.entry)
            .filter(|entry| entry.expires_at > now)
            .map(|entry| entry.record(now));
        Reply::Ready(Ok(record))
    }

    fn purge(&self, limit: usize) -> Reply<'_, u64> {
        let now = Instant::now();
        let mut purged = 0usize;
        for shard in self.shards.iter() {
            if purged >= limit {
                break;
            }
            purged += self.remove_expired(&mut lock(shard), now, limit - purged);
        }
        Reply::Ready(Ok(purged as u64))
    }

    fn inspect<'a>(&'a self, id: &'a RecordId) -> Reply<'a, Option<Inspection>> {
        let now = Instant::now();
        let (hash, shard) = self.shard(id);
        let inspection = shard
            .find(hash, |slot| slot.is(hash, id))
            .map(|slot| &slot.record.entry)
            .filter(|entry| entry.expires_at > now)
            .map(|entry| entry.inspection(now));
        Reply::Ready(Ok(inspection))
    }

    fn evict<'a>(&'a self, id: &'a RecordId) -> Reply<'a, bool> {
        let (hash, mut shard) = self.shard(id);
        let evicted = match shard.find_entry(hash, |slot| slot.is(hash, id)) {
            Ok(slot) => {
                slot.remove();
                self.forget(&id.scope);
                true
            }
            Err(_) => false,
        };
        Reply::Ready(Ok(evicted))
    }

    /// One shard locked at a time: while other shards change, the counts are each shard's
    /// as it stood when counted.
    fn stats(&self) -> Reply<'_, Stats> {
        let now = Instant::now();
        let mut stats = Stats::default();
        for shard in self.shards.iter() {
            for slot in lock(shard).iter() {
                slot.record.entry.count(&mut stats, now);
            }
        }
        Reply::Ready(Ok(stats))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use bytes::Bytes;

    fn claim(n: usize, ttl: Duration) -> Claim {
        Claim::for_test(&format!("memory-key-{n:04}"), ttl)
    }

    #[tokio::test(start_paused = true)]
    async fn answers_at_once_and_only_the_owner_completes() {
        let store = MemoryStore::new();
        let first = claim(1, Duration::from_secs(60));
        assert!(matches!(
            store.claim(&first),
            Reply::Ready(Ok(ClaimOutcome::Acquired(Acquired::New)))
        ));
        let mut duplicate = first.clone();
        duplicate.token = OwnerToken::random();
        let Reply::Ready(Ok(ClaimOutcome::Existing(record))) = store.claim(&duplicate) else {
            panic!("a live claim stands");
        };
        assert!(matches!(record.state, RecordState::InProgress { .. }));
        let payload = Arc::new(Payload::Response {
            status: 201,
            headers: vec![("content-type".into(), Bytes::from_static(b"text/plain"))],
            body: Bytes::from_static(b"done"),
        });
        assert_eq!(
            store.complete(&duplicate, &payload).await.ok(),
            Some(Ownership::Lost)
        );
        assert_eq!(
            store.complete(&first, &payload).await.ok(),
            Some(Ownership::Held)
        );
        let Ok(ClaimOutcome::Existing(replayed)) = store.claim(&duplicate).await else {
            panic!("the completed record stands");
        };
        assert_eq!(replayed.state, RecordState::Completed(payload));
    }

    #[tokio::test(start_paused = true)]
    async fn scope_handler_and_key_never_run_into_each_other() {
        let store = MemoryStore::new();
        let base = claim(1, Duration::from_secs(60));
        let with = |scope: &str, handler: &'static str| {
            let mut claim = base.clone();
            claim.id = RecordId::new(scope, handler, base.id.key.clone());
            claim
        };
        let ids = [
            with("a", "bc"),
            with("ab", "c"),
            with("", "abc"),
            with("abc", ""),
        ];
        for claim in &ids {
            assert!(
                matches!(
                    store.claim(claim).await,
                    Ok(ClaimOutcome::Acquired(Acquired::New))
                ),
                "{:?} is a record of its own",
                claim.id
            );
        }
        for claim in &ids {
            assert!(store.get(&claim.id).await.unwrap().is_some());
            assert_eq!(store.release(claim).await.ok(), Some(Ownership::Held));
        }
        assert!(store.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_store_refuses_new_keys_but_never_evicts_live_ones() {
        let store = MemoryStore::with_capacity(SHARDS); // one record a shard
        let ttl = Duration::from_secs(10);
        let mut refused = 0;
        let mut taken = Vec::new();
        for n in 0..SHARDS * 4 {
            let c = claim(n, ttl);
            match store.claim(&c).await {
                Ok(ClaimOutcome::Acquired(Acquired::New)) => taken.push(c),
                Err(e) => {
                    assert!(e.is_transient());
                    refused += 1;
                }
                Ok(other) => panic!("unexpected {other:?}"),
            }
        }
        assert!(refused > 0, "the store is bounded");
        assert_eq!(store.len(), taken.len());
        for c in &taken {
            assert!(
                store.get(&c.id).await.unwrap().is_some(),
                "no live record was evicted"
            );
        }
        // Once the records expire, their room is reused.
        tokio::time::advance(ttl).await;
        let late = (SHARDS * 4..SHARDS * 8)
            .map(|n| claim(n, ttl))
            .collect::<Vec<_>>();
        let mut accepted = 0;
        for c in &late {
            accepted += usize::from(store.claim(c).await.is_ok());
        }
        assert!(accepted >= taken.len().min(late.len()) / 2);
    }

    #[tokio::test(start_paused = true)]
    async fn purge_removes_only_expired_records_in_bounded_batches() {
        let store = MemoryStore::new();
        for n in 0..10 {
            store
                .claim(&claim(n, Duration::from_secs(5)))
                .await
                .unwrap();
        }
        for n in 10..13 {
            store
                .claim(&claim(n, Duration::from_secs(50)))
                .await
                .unwrap();
        }
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(store.purge(4).await.unwrap(), 4);
        assert_eq!(store.purge(100).await.unwrap(), 6);
        assert_eq!(store.purge(100).await.unwrap(), 0);
        assert_eq!(store.len(), 3);
    }
}
