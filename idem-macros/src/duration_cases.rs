// The one table of durations and backoff ranges that every parser of them must pass: the
// attribute's (`idem-macros/src/duration.rs`) and the runtime's (`parse_duration`,
// `Backoff::parse`). Both crates pull it in with `include!`, so it holds only plain `const`s.
// The grammar is written down in `duration.rs`'s module doc.

/// Single durations that parse, with their value in milliseconds.
const DURATIONS: &[(&str, u64)] = &[
    ("250ms", 250),
    ("30s", 30_000),
    ("90m", 5_400_000),
    ("24h", 86_400_000),
    ("7d", 604_800_000),
    ("1500ms", 1_500),
    // Zero is a duration; the attribute refuses a zero `ttl` or `lease` on its own.
    ("0s", 0),
    ("0ms", 0),
    ("007s", 7_000),
    // ASCII whitespace around the whole value is ignored.
    (" 30s", 30_000),
    ("30s ", 30_000),
    ("\t24h\n", 86_400_000),
    // The largest: `u64::MAX` milliseconds, written in two units.
    ("18446744073709551615ms", u64::MAX),
    ("18446744073709551s", 18_446_744_073_709_551_000),
];

/// Single durations that do not parse.
const DURATIONS_REJECTED: &[&str] = &[
    // Empty, or only one half.
    "",
    "   ",
    "s",
    "ms",
    "10",
    // Whitespace inside the value.
    "10 s",
    "1 0s",
    // Not a whole, unsigned number.
    "-1s",
    "+1s",
    "1.5s",
    "1_000ms",
    // Not one of the units, or more than one.
    "3w",
    "10S",
    "10Ms",
    "10us",
    "10mss",
    "1h30m",
    // More than `u64::MAX` milliseconds.
    "18446744073709551616ms",
    "18446744073709552s",
    "99999999999999999d",
    // Whitespace other than ASCII.
    "\u{a0}30s",
];

/// Backoff ranges that parse: first and largest delay, in milliseconds.
const BACKOFFS: &[(&str, u64, u64)] = &[
    ("100ms..2s", 100, 2_000),
    ("50ms..1s", 50, 1_000),
    ("1s..1s", 1_000, 1_000),
    ("0ms..0ms", 0, 0),
    ("1m..1h", 60_000, 3_600_000),
    // ASCII whitespace around `..` and around the whole range is ignored.
    ("100ms .. 2s", 100, 2_000),
    ("100ms.. 2s", 100, 2_000),
    ("100ms ..2s", 100, 2_000),
    (" 100ms..2s ", 100, 2_000),
    ("\t100ms\t..\t2s\t", 100, 2_000),
];

/// Backoff ranges that do not parse.
const BACKOFFS_REJECTED: &[&str] = &[
    "",
    "..",
    "2s",
    "..2s",
    "100ms..",
    // The largest delay below the first.
    "2s..1s",
    // Another range syntax.
    "1s...2s",
    "1s..=2s",
    "1s-2s",
    "1s . . 2s",
    "1s..2s..3s",
    // A side that is no duration.
    "1 s..2s",
    "100ms..2 s",
    "1s..soon",
    "1.5s..2s",
    "1s..99999999999999999d",
    "\u{a0}100ms..2s",
];
