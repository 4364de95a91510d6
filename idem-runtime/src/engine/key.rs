//! The `Idempotency-Key`: where it comes from and what makes it valid.
//!
//! A key is 8 to 128 characters from `A-Za-z0-9._:-`. The header value may also arrive as an
//! RFC 8941 string (`"..."`), whose quotes are stripped first. A header given twice is
//! invalid; an empty header counts as missing.

use std::fmt;
use std::sync::Arc;

use http::HeaderValue;

/// Fewest characters a key may have.
pub const MIN_KEY_LEN: usize = 8;
/// Most characters a key may have.
pub const MAX_KEY_LEN: usize = 128;

/// A validated idempotency key. Cloning it shares the text rather than copying it (a store
/// keeps the request's own copy).
///
/// ```
/// use idem_runtime::IdempotencyKey;
///
/// let key = IdempotencyKey::parse("\"order-2024:17\"").unwrap();
/// assert_eq!(key.as_str(), "order-2024:17");
/// assert_eq!(key.prefix(), "order-20");
/// assert!(IdempotencyKey::parse("short").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdempotencyKey(Arc<str>);

/// Why a request's key was refused. The messages never contain the key itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// No header, or an empty one.
    #[error("the request has no idempotency key")]
    Missing,
    /// The header was given more than once.
    #[error("the idempotency key header was given more than once")]
    Repeated,
    /// Too short or too long (the length is in characters).
    #[error(
        "an idempotency key must be {MIN_KEY_LEN} to {MAX_KEY_LEN} characters long, this one has {0}"
    )]
    Length(usize),
    /// A character outside `A-Za-z0-9._:-` (the position counts characters from 0).
    #[error(
        "an idempotency key may only contain A-Z, a-z, 0-9, '.', '_', ':' and '-' (invalid character at position {0})"
    )]
    Character(usize),
    /// A quoted value whose quotes do not close, or that is not a plain RFC 8941 string.
    #[error("a quoted idempotency key must be one RFC 8941 string: \"...\"")]
    Quoting,
}

impl KeyError {
    /// True for [`KeyError::Missing`]; every other error is an invalid key.
    pub fn is_missing(&self) -> bool {
        matches!(self, KeyError::Missing)
    }
}

/// `ALLOWED[b]`: whether byte `b` may appear in a key (`A-Za-z0-9._:-`); one load a byte.
const ALLOWED: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'-');
        b += 1;
    }
    table
};

fn allowed(b: u8) -> bool {
    ALLOWED[usize::from(b)]
}

impl IdempotencyKey {
    /// Validates one header value, stripping RFC 8941 quotes first.
    pub fn parse(value: &str) -> Result<Self, KeyError> {
        Self::parse_bytes(value.as_bytes())
    }

    /// Validates raw header bytes (which need not be UTF-8).
    pub fn parse_bytes(value: &[u8]) -> Result<Self, KeyError> {
        if value.is_empty() {
            return Err(KeyError::Missing);
        }
        let inner = match value {
            [b'"', inner @ .., b'"'] => inner,
            [b'"', ..] | [.., b'"'] => return Err(KeyError::Quoting),
            _ => value,
        };
        if let Some(pos) = inner.iter().position(|&b| !allowed(b)) {
            // Report a position in characters: everything before `pos` is ASCII.
            return Err(KeyError::Character(pos));
        }
        if !(MIN_KEY_LEN..=MAX_KEY_LEN).contains(&inner.len()) {
            return Err(KeyError::Length(inner.len()));
        }
        // Every byte is ASCII, so this cannot fail; map rather than unwrap all the same.
        let text = std::str::from_utf8(inner).map_err(|_| KeyError::Character(0))?;
        Ok(IdempotencyKey(text.into()))
    }

    /// Reads the key from every value a request gave for the header.
    ///
    /// None or one empty value is [`KeyError::Missing`]; two values are [`KeyError::Repeated`].
    pub fn from_header_values<'a>(
        values: impl Iterator<Item = &'a HeaderValue>,
    ) -> Result<Self, KeyError> {
        Self::from_values(values.map(HeaderValue::as_bytes))
    }

    /// Reads the key from every value a request gave for it, as raw bytes (an HTTP header's
    /// values, a gRPC metadata entry's): none or one empty value is [`KeyError::Missing`], two
    /// values are [`KeyError::Repeated`].
    pub(crate) fn from_values<'a>(
        mut values: impl Iterator<Item = &'a [u8]>,
    ) -> Result<Self, KeyError> {
        let first = values.next().ok_or(KeyError::Missing)?;
        if values.next().is_some() {
            return Err(KeyError::Repeated);
        }
        Self::parse_bytes(first)
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 8 characters: what logs and traces may show of a key.
    pub fn prefix(&self) -> &str {
        // Keys are ASCII and at least MIN_KEY_LEN long.
        self.0.get(..MIN_KEY_LEN).unwrap_or(&self.0)
    }
}

/// Shows only the prefix, so a key in a `{:?}` never leaks whole.
impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdempotencyKey({}…)", self.prefix())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_alphabet_and_both_length_bounds() {
        assert!(IdempotencyKey::parse("aZ09._:-").is_ok());
        assert!(IdempotencyKey::parse(&"k".repeat(128)).is_ok());
    }

    #[test]
    fn refuses_lengths_outside_8_to_128() {
        assert_eq!(IdempotencyKey::parse("1234567"), Err(KeyError::Length(7)));
        assert_eq!(
            IdempotencyKey::parse(&"k".repeat(129)),
            Err(KeyError::Length(129))
        );
        assert_eq!(IdempotencyKey::parse("\"\""), Err(KeyError::Length(0)));
    }

    #[test]
    fn refuses_characters_outside_the_alphabet() {
        for bad in [
            "abc def-12",
            "abcdefgh/",
            "ключ-ключ-ключ",
            "abcd\0efgh",
            "abc'--drop",
        ] {
            assert!(
                matches!(IdempotencyKey::parse(bad), Err(KeyError::Character(_))),
                "{bad:?}"
            );
        }
        assert!(IdempotencyKey::parse_bytes(b"abcdefgh\xff").is_err());
    }

    #[test]
    fn strips_rfc8941_quotes_and_refuses_half_quotes() {
        assert_eq!(
            IdempotencyKey::parse("\"abcdefgh\"").unwrap().as_str(),
            "abcdefgh"
        );
        assert_eq!(IdempotencyKey::parse("\"abcdefgh"), Err(KeyError::Quoting));
        assert_eq!(IdempotencyKey::parse("abcdefgh\""), Err(KeyError::Quoting));
        assert_eq!(IdempotencyKey::parse("\""), Err(KeyError::Quoting));
        assert!(IdempotencyKey::parse("\"abc\\\"defgh\"").is_err());
    }

    #[test]
    fn empty_is_missing_and_twice_is_repeated() {
        let empty = HeaderValue::from_static("");
        assert_eq!(
            IdempotencyKey::from_header_values([&empty].into_iter()),
            Err(KeyError::Missing)
        );
        assert_eq!(
            IdempotencyKey::from_header_values(std::iter::empty()),
            Err(KeyError::Missing)
        );
        let a = HeaderValue::from_static("abcdefgh");
        assert_eq!(
            IdempotencyKey::from_header_values([&a, &a].into_iter()),
            Err(KeyError::Repeated)
        );
    }

    #[test]
    fn debug_and_errors_never_show_the_whole_key() {
        let key = IdempotencyKey::parse("secret-0123456789").unwrap();
        assert_eq!(format!("{key:?}"), "IdempotencyKey(secret-0…)");
        let err = IdempotencyKey::parse("secret 0123456789").unwrap_err();
        assert!(!err.to_string().contains("secret"));
    }
}
