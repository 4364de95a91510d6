//! What a store keeps per key (SPEC section 4): identity, owner, state and response.

use std::borrow::Cow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use bytes::Bytes;

use crate::fingerprint::Fingerprint;
use crate::key::IdempotencyKey;

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

impl fmt::Debug for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordId")
            .field("scope", &self.scope)
            .field("handler", &self.handler)
            .field("key", &self.key)
            .finish()
    }
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
    Completed(StoredResponse),
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

/// A response as stored and replayed: status, end-to-end headers and the body's bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// 100..=599.
    pub status: u16,
    /// Header names (lower case) and raw values, in order.
    pub headers: Vec<(String, Bytes)>,
    /// The body, byte for byte.
    pub body: Bytes,
}

impl fmt::Debug for StoredResponse {
    /// Shows sizes only: stored headers and bodies never reach logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredResponse")
            .field("status", &self.status)
            .field("headers", &self.headers.len())
            .field("body_bytes", &self.body.len())
            .finish()
    }
}

/// A stored record that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a stored record could not be decoded: {0}")]
pub struct DecodeError(pub(crate) &'static str);

impl StoredResponse {
    /// Encodes the headers for a text column: a JSON array of `[name, value]` pairs, the
    /// value a string when it is UTF-8 and an array of byte values otherwise.
    pub fn encode_headers(&self) -> String {
        let pairs: Vec<serde_json::Value> = self
            .headers
            .iter()
            .map(|(name, value)| {
                let value = match std::str::from_utf8(value) {
                    Ok(text) => serde_json::Value::from(text),
                    Err(_) => serde_json::Value::from(value.to_vec()),
                };
                serde_json::Value::Array(vec![name.as_str().into(), value])
            })
            .collect();
        serde_json::Value::Array(pairs).to_string()
    }

    /// Decodes [`StoredResponse::encode_headers`]'s output.
    pub fn decode_headers(text: &str) -> Result<Vec<(String, Bytes)>, DecodeError> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|_| DecodeError("headers are not JSON"))?;
        let pairs = value
            .as_array()
            .ok_or(DecodeError("headers are not an array"))?;
        pairs
            .iter()
            .map(|pair| match pair.as_array().map(Vec::as_slice) {
                Some([serde_json::Value::String(name), value]) => {
                    let bytes = match value {
                        serde_json::Value::String(text) => Bytes::from(text.clone()),
                        serde_json::Value::Array(items) => items
                            .iter()
                            .map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
                            .collect::<Option<Vec<u8>>>()
                            .map(Bytes::from)
                            .ok_or(DecodeError("a header value is not a byte array"))?,
                        _ => return Err(DecodeError("a header value is neither text nor bytes")),
                    };
                    Ok((name.clone(), bytes))
                }
                _ => Err(DecodeError("a header is not a [name, value] pair")),
            })
            .collect()
    }

    /// Rebuilds a response from its columns, checking the status range.
    pub fn from_columns(status: i32, headers: &str, body: Vec<u8>) -> Result<Self, DecodeError> {
        let status = u16::try_from(status)
            .ok()
            .filter(|s| (100..=599).contains(s))
            .ok_or(DecodeError("the status is outside 100..=599"))?;
        Ok(StoredResponse {
            status,
            headers: Self::decode_headers(headers)?,
            body: Bytes::from(body),
        })
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
    fn headers_round_trip_including_non_utf8_values() {
        let response = StoredResponse {
            status: 201,
            headers: vec![
                (
                    "content-type".into(),
                    Bytes::from_static(b"application/json"),
                ),
                ("x-raw".into(), Bytes::from_static(b"caf\xe9")),
            ],
            body: Bytes::from_static(b"{}"),
        };
        let decoded = StoredResponse::from_columns(201, &response.encode_headers(), b"{}".to_vec());
        assert_eq!(decoded, Ok(response));
    }

    #[test]
    fn corrupt_columns_are_errors_not_panics() {
        for bad in [
            "",
            "{}",
            "[1]",
            "[[\"a\"]]",
            "[[\"a\", 3]]",
            "[[\"a\", [300]]]",
        ] {
            assert!(StoredResponse::decode_headers(bad).is_err(), "{bad:?}");
        }
        assert!(StoredResponse::from_columns(-1, "[]", vec![]).is_err());
        assert!(StoredResponse::from_columns(600, "[]", vec![]).is_err());
    }

    #[test]
    fn tokens_are_random_and_debug_hides_them() {
        assert_ne!(OwnerToken::random(), OwnerToken::random());
        let t = OwnerToken::from_u128(u128::MAX);
        assert_eq!(t.to_hex().len(), 32);
        assert_eq!(format!("{t:?}"), "OwnerToken(ffffffff…)");
    }
}
