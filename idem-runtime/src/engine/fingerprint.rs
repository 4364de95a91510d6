//! The request fingerprint: SHA-256 over method, path, query and body bytes.
//!
//! Each part is length-prefixed before hashing, so `("/a", "b=1")` and `("/a?b", "=1")`
//! never collide by concatenation.

use std::fmt;

use sha2::{Digest, Sha256};

/// A SHA-256 digest identifying what a request asked for.
///
/// ```
/// use idem_runtime::Fingerprint;
///
/// let a = Fingerprint::of_request("POST", "/payments", "", br#"{"amount":1}"#);
/// let b = Fingerprint::of_request("POST", "/payments", "", br#"{"amount":2}"#);
/// assert_ne!(a, b);
/// assert_eq!(a, Fingerprint::from_hex(&a.to_hex()).unwrap());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// Hashes the parts of an HTTP request that decide its meaning.
    pub fn of_request(method: &str, path: &str, query: &str, body: &[u8]) -> Self {
        Self::of_parts(&[method.as_bytes(), path.as_bytes(), query.as_bytes(), body])
    }

    /// Hashes any sequence of byte strings, each length-prefixed.
    pub fn of_parts(parts: &[&[u8]]) -> Self {
        let mut hasher = Sha256::new();
        for part in parts {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part);
        }
        Fingerprint(hasher.finalize().into())
    }

    /// Wraps a digest computed elsewhere.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Fingerprint(bytes)
    }

    /// The 32 digest bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hex, 64 characters: how SQL stores keep it.
    pub fn to_hex(&self) -> String {
        let mut out = String::with_capacity(64);
        push_hex(&mut out, &self.0);
        out
    }

    /// Parses [`Fingerprint::to_hex`]'s output; `None` for anything else.
    pub fn from_hex(hex: &str) -> Option<Self> {
        let bytes = hex.as_bytes();
        if bytes.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            out[i] = u8::try_from(hi * 16 + lo).ok()?;
        }
        Some(Fingerprint(out))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", &self.to_hex()[..12])
    }
}

/// Appends `bytes` to `out` as lower-case hex, two digits a byte.
pub(crate) fn push_hex(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for byte in bytes {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part_changes_the_fingerprint() {
        let base = Fingerprint::of_request("POST", "/a/approve", "x=1", b"{}");
        assert_ne!(
            base,
            Fingerprint::of_request("PUT", "/a/approve", "x=1", b"{}")
        );
        assert_ne!(
            base,
            Fingerprint::of_request("POST", "/b/approve", "x=1", b"{}")
        );
        assert_ne!(
            base,
            Fingerprint::of_request("POST", "/a/approve", "x=2", b"{}")
        );
        assert_ne!(
            base,
            Fingerprint::of_request("POST", "/a/approve", "x=1", b"{ }")
        );
        assert_eq!(
            base,
            Fingerprint::of_request("POST", "/a/approve", "x=1", b"{}")
        );
    }

    #[test]
    fn parts_do_not_run_into_each_other() {
        assert_ne!(
            Fingerprint::of_request("POST", "/a", "b=1", b""),
            Fingerprint::of_request("POST", "/a?b", "=1", b"")
        );
    }

    #[test]
    fn hex_round_trips_and_rejects_garbage() {
        let fp = Fingerprint::of_parts(&[b"x"]);
        assert_eq!(Fingerprint::from_hex(&fp.to_hex()), Some(fp));
        assert_eq!(Fingerprint::from_hex("zz"), None);
        assert_eq!(Fingerprint::from_hex(&"g".repeat(64)), None);
    }
}
