//! Durations and backoff ranges written in the attribute (`"30s"`, `"100ms..2s"`), checked at
//! compile time, by the same grammar as the runtime's `parse_duration` and `Backoff::parse`:
//!
//! - a duration is a whole number (ASCII digits, no sign, no separators) followed at once by
//!   one unit, `ms`, `s`, `m`, `h` or `d`, and is at most `u64::MAX` milliseconds;
//! - a backoff range is two durations joined by `..`, the second not below the first;
//! - ASCII whitespace around the whole value, and around `..`, is ignored: `"100ms .. 2s"` is
//!   a range, `"10 s"` is not a duration.
//!
//! `duration_cases.rs` holds the table of accepted and refused inputs that both parsers pass.

use std::fmt;
use std::time::Duration;

/// Why a duration or range was refused; the message says what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DurationError(String);

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parses `"250ms"`, `"30s"`, `"90m"`, `"24h"` or `"7d"`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let value = text.trim_ascii();
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let expected = || {
        DurationError(format!(
            "expected a whole number and a unit (ms, s, m, h or d), like \"30s\" or \"24h\"; got {text:?}"
        ))
    };
    let too_large = || DurationError(format!("the duration {text:?} is too large"));
    let millis_per = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(expected()),
    };
    // Only digits are left, so a number that does not parse is either empty or too large.
    if number.is_empty() {
        return Err(expected());
    }
    let n: u64 = number.parse().map_err(|_| too_large())?;
    n.checked_mul(millis_per)
        .map(Duration::from_millis)
        .ok_or_else(too_large)
}

/// Parses `"100ms..2s"` into its first and largest delay.
pub(crate) fn parse_backoff(text: &str) -> Result<(Duration, Duration), DurationError> {
    let (first, cap) = text.split_once("..").ok_or_else(|| {
        DurationError(format!(
            "expected a range of two durations, like \"100ms..2s\"; got {text:?}"
        ))
    })?;
    let (first, cap) = (parse_duration(first)?, parse_duration(cap)?);
    if cap < first {
        return Err(DurationError(format!(
            "the backoff range {text:?} ends below its start; write the first delay, then the largest"
        )));
    }
    Ok((first, cap))
}

#[cfg(test)]
mod tests {
    use super::*;

    include!("duration_cases.rs");

    #[test]
    fn accepts_every_duration_of_the_table() {
        for &(text, millis) in DURATIONS {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_millis(millis)),
                "{text:?}"
            );
        }
    }

    #[test]
    fn refuses_every_refused_duration_of_the_table() {
        for &text in DURATIONS_REJECTED {
            assert!(parse_duration(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn accepts_every_backoff_of_the_table() {
        for &(text, first, cap) in BACKOFFS {
            let expected = (Duration::from_millis(first), Duration::from_millis(cap));
            assert_eq!(parse_backoff(text), Ok(expected), "{text:?}");
        }
    }

    #[test]
    fn refuses_every_refused_backoff_of_the_table() {
        for &text in BACKOFFS_REJECTED {
            assert!(parse_backoff(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn messages_say_what_was_expected() {
        let expected = "expected a whole number and a unit";
        for text in ["", "10", "10 s", "1.5s", "3w"] {
            let error = parse_duration(text).map(|_| ()).unwrap_err();
            assert!(error.to_string().contains(expected), "{text:?}: {error}");
        }
        for text in ["18446744073709551616ms", "99999999999999999d"] {
            let error = parse_duration(text).map(|_| ()).unwrap_err();
            assert!(error.to_string().contains("too large"), "{text:?}: {error}");
        }
        let backwards = parse_backoff("2s..1s").map(|_| ()).unwrap_err();
        assert!(backwards.to_string().contains("below its start"));
        let single = parse_backoff("2s").map(|_| ()).unwrap_err();
        assert!(single.to_string().contains("a range of two durations"));
    }
}
