//! How long to wait between attempts to persist a response (docs/contract.md, "Persisting the response").
//!
//! Attempt `n` (from 0) is followed by a delay drawn from `[max(d/2, first), d]` where
//! `d = min(cap, first * 2^n)`: exponential growth that really reaches the cap, with full
//! jitter in the upper half so that instances failing together do not retry together.

use std::sync::Mutex;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// The first and largest delay between attempts.
///
/// ```
/// use std::time::Duration;
/// use idem_runtime::Backoff;
///
/// let b = Backoff::parse("100ms..2s").unwrap();
/// assert_eq!(b.ceiling(0), Duration::from_millis(100));
/// assert_eq!(b.ceiling(3), Duration::from_millis(800));
/// assert_eq!(b.ceiling(9), Duration::from_secs(2));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(2))
    }
}

impl Backoff {
    /// A backoff from `first` up to `cap`; a cap below `first` is raised to `first`.
    pub const fn new(first: Duration, cap: Duration) -> Self {
        let cap = if cap.as_nanos() < first.as_nanos() {
            first
        } else {
            cap
        };
        Backoff { first, cap }
    }

    /// Parses `"100ms..2s"` (ASCII whitespace around `..` and the whole range ignored).
    pub fn parse(text: &str) -> Result<Self, DurationError> {
        let (first, cap) = text.split_once("..").ok_or_else(|| {
            DurationError(format!("expected a range like \"100ms..2s\", got {text:?}"))
        })?;
        let (first, cap) = (parse_duration(first)?, parse_duration(cap)?);
        if cap < first {
            return Err(DurationError(format!(
                "the backoff range {text:?} ends below its start"
            )));
        }
        Ok(Backoff::new(first, cap))
    }

    /// The first delay.
    pub const fn first(&self) -> Duration {
        self.first
    }

    /// The largest delay.
    pub const fn cap(&self) -> Duration {
        self.cap
    }

    /// `min(cap, first * 2^attempt)`: the most the delay after attempt `attempt` may be.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.first.saturating_mul(factor).min(self.cap)
    }

    /// The bounds `[max(d/2, first), d]` the delay after attempt `attempt` is drawn from.
    pub fn bounds(&self, attempt: u32) -> (Duration, Duration) {
        let d = self.ceiling(attempt);
        ((d / 2).max(self.first).min(d), d)
    }

    /// The delay after attempt `attempt`, drawn with `jitter`.
    pub fn delay(&self, attempt: u32, jitter: &Jitter) -> Duration {
        let (low, high) = self.bounds(attempt);
        jitter.between(low, high)
    }
}

/// Where the randomness of the backoff comes from. Tests seed it to make delays repeatable.
#[derive(Debug, Default)]
pub enum Jitter {
    /// The thread-local generator.
    #[default]
    Random,
    /// A seeded generator.
    Seeded(Mutex<Box<StdRng>>),
}

impl Jitter {
    /// A generator seeded with `seed`.
    pub fn seeded(seed: u64) -> Self {
        Jitter::Seeded(Mutex::new(Box::new(StdRng::seed_from_u64(seed))))
    }

    /// A duration uniformly drawn from `[low, high]`.
    pub fn between(&self, low: Duration, high: Duration) -> Duration {
        if high <= low {
            return low;
        }
        let (lo, hi) = (nanos(low), nanos(high));
        let n = match self {
            Jitter::Random => rand::rng().random_range(lo..=hi),
            Jitter::Seeded(rng) => match rng.lock() {
                Ok(mut rng) => rng.random_range(lo..=hi),
                Err(poisoned) => poisoned.into_inner().random_range(lo..=hi),
            },
        };
        Duration::from_nanos(n)
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A duration or range that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DurationError(String);

/// Parses `"250ms"`, `"30s"`, `"90m"`, `"24h"`, `"7d"`: a whole number and one unit, at most
/// `u64::MAX` milliseconds, with ASCII whitespace around it ignored. The attribute parses the
/// same grammar at compile time; both pass one table of cases
/// (`idem-macros/src/duration_cases.rs`).
///
/// ```
/// use std::time::Duration;
/// assert_eq!(idem_runtime::parse_duration("90m").unwrap(), Duration::from_secs(5400));
/// assert!(idem_runtime::parse_duration("soon").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let trimmed = text.trim_matches(|c: char| c.is_ascii_whitespace());
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let bad = || {
        DurationError(format!(
            "expected a whole number and a unit (ms, s, m, h, d), like \"30s\" or \"24h\"; got {text:?}"
        ))
    };
    if number.is_empty() {
        return Err(bad());
    }
    let n: u64 = number
        .parse()
        .map_err(|_| DurationError(format!("the duration {text:?} is too large")))?;
    let millis_per: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    n.checked_mul(millis_per)
        .map(Duration::from_millis)
        .ok_or_else(|| DurationError(format!("the duration {text:?} is too large")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_then_stops_at_the_cap() {
        let b = Backoff::default();
        let ms: Vec<u128> = (0..8).map(|n| b.ceiling(n).as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1600, 2000, 2000, 2000]);
        assert_eq!(b.ceiling(200), Duration::from_secs(2));
    }

    #[test]
    fn delays_stay_in_the_upper_half_and_never_below_first() {
        let b = Backoff::default();
        let jitter = Jitter::seeded(7);
        for n in 0..10 {
            let (low, high) = b.bounds(n);
            assert!(low >= b.first() && low >= high / 2 && low <= high);
            for _ in 0..200 {
                let d = b.delay(n, &jitter);
                assert!(d >= low && d <= high, "attempt {n}: {d:?}");
            }
        }
        assert_eq!(
            b.bounds(0),
            (Duration::from_millis(100), Duration::from_millis(100))
        );
    }

    #[test]
    fn a_seeded_jitter_repeats() {
        let b = Backoff::default();
        let (j1, j2) = (Jitter::seeded(42), Jitter::seeded(42));
        for n in 0..6 {
            assert_eq!(b.delay(n, &j1), b.delay(n, &j2));
        }
    }

    include!("../../../idem-macros/src/duration_cases.rs");

    #[test]
    fn the_runtime_parses_the_attributes_grammar() {
        for &(text, millis) in DURATIONS {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_millis(millis)),
                "{text:?}"
            );
        }
        for text in DURATIONS_REJECTED {
            assert!(parse_duration(text).is_err(), "{text:?}");
        }
        for &(text, first, cap) in BACKOFFS {
            assert_eq!(
                Backoff::parse(text),
                Ok(Backoff::new(
                    Duration::from_millis(first),
                    Duration::from_millis(cap)
                )),
                "{text:?}"
            );
        }
        for text in BACKOFFS_REJECTED {
            assert!(Backoff::parse(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn parses_durations_and_ranges() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86_400));
        for bad in ["", "s", "10", "10 s", "-1s", "1.5s", "3w"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            Backoff::parse("50ms..1s").unwrap(),
            Backoff::new(Duration::from_millis(50), Duration::from_secs(1))
        );
        assert!(Backoff::parse("2s..1s").is_err());
        assert!(Backoff::parse("2s").is_err());
    }
}
