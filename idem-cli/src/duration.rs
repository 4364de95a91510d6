//! Durations as a person reads them.

use std::time::Duration;

/// `850ms`, `12.3s`, `4m 05s`, `2h 07m`, `3d 04h`.
pub fn human(duration: Duration) -> String {
    let secs = duration.as_secs();
    match secs {
        0 => format!("{}ms", duration.as_millis()),
        1..60 => format!("{:.1}s", duration.as_secs_f64()),
        60..3600 => format!("{}m {:02}s", secs / 60, secs % 60),
        3600..86400 => format!("{}h {:02}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d {:02}h", secs / 86400, secs % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_range_has_its_unit() {
        let cases = [
            (Duration::from_millis(850), "850ms"),
            (Duration::from_millis(12_340), "12.3s"),
            (Duration::from_secs(245), "4m 05s"),
            (Duration::from_secs(2 * 3600 + 7 * 60), "2h 07m"),
            (Duration::from_secs(3 * 86400 + 4 * 3600 + 5), "3d 04h"),
        ];
        for (duration, text) in cases {
            assert_eq!(human(duration), text);
        }
    }
}
