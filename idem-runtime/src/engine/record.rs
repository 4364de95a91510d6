//! What a store keeps per key (docs/contract.md, "Records"): identity, owner, state and payload.

use std::borrow::Cow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::engine::fingerprint::Fingerprint;
use crate::engine::key::IdempotencyKey;

/// `response_status` of a FAILED_STORAGE record, in the original middleware's encoding.
pub const FAILED_STORAGE_STATUS: i32 = -1;

/// The identity of a record: the same key under another scope or handler is another record.
#[derive(Clone, PartialEq, Eq)]
pub struct RecordId {
    /// Extra namespace (a tenant or user id); empty when the handler has none.
    pub scope: String,
    /// The fully qualified handler name (or the matched route, for the tower layer).
    pub handler: Cow<'static, str>,
    /// The client's key.
    pub key: IdempotencyKey,
}

impl RecordId {
    /// A record identity.
    pub fn new(
        scope: impl Into<String>,
        handler: impl Into<Cow<'static, str>>,
        key: IdempotencyKey,
    ) -> Self {
        RecordId {
            scope: scope.into(),
            handler: handler.into(),
            key,
        }
    }
}

/// The three parts, each prefixed by its length, in one `write` when they fit in a small buffer
/// (keys are at most 128 bytes; handler names and scopes are usually short): a hasher pays for
/// every call, and the memory store hashes an identity on every claim and completion.
impl Hash for RecordId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        const ROOM: usize = 256;
        let parts = [
            self.scope.as_bytes(),
            self.handler.as_bytes(),
            self.key.as_str().as_bytes(),
        ];
        let total: usize = parts.iter().map(|part| part.len() + 1).sum();
        if total > ROOM {
            for part in parts {
                part.len().hash(state);
                state.write(part);
            }
            return;
        }
        // Every part is under 256 bytes here, so each length fits its one-byte prefix.
        let mut buffer = [0u8; ROOM];
        let mut at = 0;
        for part in parts {
            buffer[at] = u8::try_from(part.len()).unwrap_or(u8::MAX);
            buffer[at + 1..at + 1 + part.len()].copy_from_slice(part);
            at += part.len() + 1;
        }
        state.write(&buffer[..at]);
    }
}

impl RecordId {
    /// A short name for the record that is the same in every process, for telling waiters
    /// elsewhere that its claim ended: the first 8 bytes of a SHA-256 of its three parts. Two
    /// records sharing it only wake each other's waiters for one more look.
    pub fn wake_key(&self) -> u64 {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        for part in [
            self.scope.as_bytes(),
            self.handler.as_bytes(),
            self.key.as_str().as_bytes(),
        ] {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
        let digest = hasher.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_le_bytes(first)
    }
}

impl fmt::Debug for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordId")
            .field("scope", &self.scope)
            .field("handler", &self.handler)
            .field("key", &self.key)
            .finish()
    }
}

/// Where a call is going: its handler and the scope it asks for, the record's identity but
/// for the key.
#[derive(Debug, Clone)]
pub struct Target {
    /// The fully qualified handler name, or the matched route.
    pub handler: Cow<'static, str>,
    /// The scope it asks for: its own, none, or its store's rule's (docs/contract.md,
    /// "Scopes").
    pub scope: crate::engine::scope::Scope,
}

/// The random token of one claim. Completing, failing, renewing and releasing a record check
/// it, so a slow earlier owner can never overwrite what a later owner wrote.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct OwnerToken(u128);

impl OwnerToken {
    /// A fresh random token.
    pub fn random() -> Self {
        OwnerToken(rand::random())
    }

    /// A token from its number (stores reading it back).
    pub const fn from_u128(n: u128) -> Self {
        OwnerToken(n)
    }

    /// The token as a number.
    pub const fn as_u128(&self) -> u128 {
        self.0
    }

    /// The token as 32 hex digits, for text columns.
    pub fn to_hex(&self) -> String {
        format!("{:032x}", self.0)
    }
}

impl fmt::Debug for OwnerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OwnerToken({:08x}…)", self.0 >> 96)
    }
}

/// What a claim asks of the store: identity, fingerprint, owner and time limits.
#[derive(Debug, Clone)]
pub struct Claim {
    /// The record's identity.
    pub id: RecordId,
    /// The request's fingerprint.
    pub fingerprint: Fingerprint,
    /// This claim's owner token.
    pub token: OwnerToken,
    /// How long the claim stays live without renewal.
    pub lease: Duration,
    /// How long the record lives (and, once completed, is replayed).
    pub ttl: Duration,
}

#[cfg(test)]
impl Claim {
    /// A fresh claim of `key` on a test handler, with a 1 s lease: for the crate's unit tests.
    pub(crate) fn for_test(key: &str, ttl: Duration) -> Claim {
        let key = IdempotencyKey::parse(key).expect("a valid test key");
        Claim {
            id: RecordId::new("", "tests::h", key),
            fingerprint: Fingerprint::from_bytes([1; 32]),
            token: OwnerToken::random(),
            lease: Duration::from_secs(1),
            ttl,
        }
    }
}

/// The state of an existing record, as judged by the store's clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordState {
    /// Claimed; `lease_remaining` is how long the claim stays live (zero once abandoned).
    InProgress {
        /// Time left on the lease.
        lease_remaining: Duration,
    },
    /// The handler ran, its response could not be stored.
    FailedStorage,
    /// The response is stored and replayed.
    Completed(Arc<Payload>),
}

/// An existing record, as a failed claim returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The fingerprint of the request that created it.
    pub fingerprint: Fingerprint,
    /// Where it stands.
    pub state: RecordState,
}

/// What a claim attempt found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// The claim is ours: run the handler.
    Acquired(Acquired),
    /// Someone else's record stands; nothing was written.
    Existing(Record),
    /// The key is new (or its record expired) and its scope already holds as many live
    /// records as the store's quota allows; nothing was written.
    OverQuota {
        /// When one of the scope's records the store counted expires, freeing room.
        retry_after: Duration,
    },
}

/// How a claim was acquired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquired {
    /// No live record existed (none, or only an expired one).
    New,
    /// Taken over from an IN_PROGRESS record whose lease had expired.
    Abandoned,
    /// Taken over from a FAILED_STORAGE record.
    FailedStorage,
}

/// What a completed record keeps and a replay hands back. The core never looks inside: the
/// adapter that made a payload reads it back.
#[derive(Clone, PartialEq, Eq)]
pub enum Payload {
    /// A protocol's answer (an HTTP response): its status, its end-to-end headers and its body.
    Response {
        /// 100..=599.
        status: u16,
        /// Header names (lower case) and raw values, in order.
        headers: Vec<(String, Bytes)>,
        /// The body, byte for byte.
        body: Bytes,
    },
    /// A plain function's `Ok` value, as its JSON.
    Value(Bytes),
}

impl Payload {
    /// The bytes kept: a response's body, or a value's JSON.
    pub fn body(&self) -> &Bytes {
        match self {
            Payload::Response { body, .. } | Payload::Value(body) => body,
        }
    }
}

impl fmt::Debug for Payload {
    /// Shows sizes only: stored headers and bodies never reach logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Payload::Response {
                status,
                headers,
                body,
            } => f
                .debug_struct("Payload::Response")
                .field("status", status)
                .field("headers", &headers.len())
                .field("body_bytes", &body.len())
                .finish(),
            Payload::Value(body) => f
                .debug_struct("Payload::Value")
                .field("bytes", &body.len())
                .finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::hash::BuildHasher;

    #[test]
    fn equal_identities_hash_alike_and_parts_do_not_run_together() {
        let key = IdempotencyKey::parse("key-0000-0001").unwrap();
        let long = "h".repeat(300); // over the one-write buffer: hashed part by part
        let state = std::hash::RandomState::new();
        for (scope, handler) in [
            ("", "app::create"),
            ("tenant-7", "app::create"),
            ("", long.as_str()),
        ] {
            let a = RecordId::new(scope, handler.to_owned(), key.clone());
            let b = RecordId::new(scope.to_owned(), handler.to_owned(), key.clone());
            assert_eq!(state.hash_one(&a), state.hash_one(&b));
        }
        let split_one = RecordId::new("ab", "c", key.clone());
        let split_two = RecordId::new("a", "bc", key);
        assert_ne!(split_one, split_two);
        assert_ne!(state.hash_one(&split_one), state.hash_one(&split_two));
    }

    #[test]
    fn tokens_are_random_and_debug_hides_them() {
        assert_ne!(OwnerToken::random(), OwnerToken::random());
        let t = OwnerToken::from_u128(u128::MAX);
        assert_eq!(t.to_hex().len(), 32);
        assert_eq!(format!("{t:?}"), "OwnerToken(ffffffff…)");
    }
}
