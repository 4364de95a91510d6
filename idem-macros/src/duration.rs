//! Durations and backoff ranges written in the attribute (`"30s"`, `"100ms..2s"`), checked at
//! compile time. The grammar is the runtime's `parse_duration`: a whole number and one unit.

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
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let expected = || {
        DurationError(format!(
            "expected a whole number and a unit (ms, s, m, h or d), like \"30s\" or \"24h\"; got {text:?}"
        ))
    };
    let n: u64 = number.parse().map_err(|_| expected())?;
    let millis_per = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(expected()),
    };
    n.checked_mul(millis_per)
        .map(Duration::from_millis)
        .ok_or_else(|| DurationError(format!("the duration {text:?} is too large")))
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

    #[test]
    fn parses_every_unit() {
        let cases = [
            ("250ms", 250),
            ("30s", 30_000),
            ("90m", 5_400_000),
            ("24h", 86_400_000),
            ("7d", 604_800_000),
            ("0s", 0),
        ];
        for (text, millis) in cases {
            assert_eq!(parse_duration(text), Ok(Duration::from_millis(millis)));
        }
    }

    #[test]
    fn refuses_anything_else() {
        for bad in [
            "", "s", "10", "10 s", " 10s", "-1s", "1.5s", "3w", "10S", "1h30m",
        ] {
            let error = parse_duration(bad).unwrap_err();
            assert!(
                error.to_string().contains("expected a whole number"),
                "{bad:?}"
            );
        }
        let huge = parse_duration("99999999999999999d").unwrap_err();
        assert!(huge.to_string().contains("too large"));
    }

    #[test]
    fn parses_backoff_ranges() {
        assert_eq!(
            parse_backoff("100ms..2s"),
            Ok((Duration::from_millis(100), Duration::from_secs(2)))
        );
        assert_eq!(
            parse_backoff("1s..1s"),
            Ok((Duration::from_secs(1), Duration::from_secs(1)))
        );
        assert!(parse_backoff("2s").is_err());
        assert!(
            parse_backoff("2s..1s")
                .unwrap_err()
                .to_string()
                .contains("below its start")
        );
        assert!(parse_backoff("1s...2s").is_err());
        assert!(parse_backoff("1s..soon").is_err());
    }
}
