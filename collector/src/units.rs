//! How durations and measured values are written for people: worklogs,
//! ticket titles and evidence lines, `deskpulse rules`, the CLI's tables.
//! One way everywhere, so a rule's `for = "20s"` reads `20s` wherever it
//! is shown, never `0 min`.
//!
//! Durations use the units a policy file is written in (`d`, `h`, `m`,
//! `s`, `ms`), largest first, zero parts left out: `20s`, `5m`, `1h 30m`,
//! `3d`. What [`duration`] writes, `humantime::parse_duration` (the policy
//! parser) reads back to the same value. JSON keeps exact numbers (`for_ms`,
//! `quiet_secs`); only text is written here.

use std::time::Duration;

const UNITS: [(&str, u64); 4] = [
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
];

/// A duration exactly, e.g. `20s`, `1h 30m`, `1s 500ms`; `0s` for zero.
pub fn duration(d: Duration) -> String {
    parts(u64::try_from(d.as_millis()).unwrap_or(u64::MAX), usize::MAX)
}

/// [`duration`] of milliseconds; a negative count reads `0s`.
pub fn duration_ms(ms: i64) -> String {
    parts(u64::try_from(ms).unwrap_or(0), usize::MAX)
}

/// [`duration`] of whole seconds.
pub fn duration_secs(secs: u64) -> String {
    duration(Duration::from_secs(secs))
}

/// A measured span such as an age or a clock offset, to its two largest
/// units and truncated: `3d 4h`, `2h 5m`, `40s`. Below a second, `0s`.
pub fn span(d: Duration) -> String {
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    parts(ms - ms % 1000, 2)
}

/// How long before `now_ms` a moment was, as [`span`] writes it: `2h 5m
/// before`; a moment not before `now_ms` reads `just before`.
pub fn before(at_ms: i64, now_ms: i64) -> String {
    let ms = u64::try_from(now_ms.saturating_sub(at_ms)).unwrap_or(0);
    if ms < 1000 {
        return "just before".into();
    }
    format!("{} before", span(Duration::from_millis(ms)))
}

fn parts(ms: u64, most: usize) -> String {
    let mut left = ms;
    let mut out: Vec<String> = Vec::new();
    // Units passed since the first one shown: truncating to `most` counts
    // them, so "2d 0h 5m" shows as "2d", never as "2d 5m".
    let mut passed = 0;
    for (unit, size) in UNITS.into_iter().chain([("ms", 1)]) {
        if passed >= most {
            break;
        }
        let count = left / size;
        left %= size;
        if count > 0 {
            out.push(format!("{count}{unit}"));
        }
        if count > 0 || passed > 0 {
            passed += 1;
        }
    }
    if out.is_empty() {
        return "0s".into();
    }
    out.join(" ")
}

/// A measured value with its unit, rounded to what a person reads: at
/// most `decimals` places, a trailing `.0` dropped (`22.6%`, `93%`,
/// `1.25`). JSON keeps the exact value.
pub fn rounded(value: f64, decimals: usize, unit: &str) -> String {
    if !value.is_finite() {
        return format!("{value}{unit}");
    }
    let mut text = format!("{value:.decimals$}");
    if text.contains('.') {
        let trimmed = text.trim_end_matches('0').trim_end_matches('.');
        text = trimmed.to_owned();
    }
    if text == "-0" {
        text = "0".into();
    }
    format!("{text}{unit}")
}

/// A percentage, one decimal: `22.6%`.
pub fn percent(value: f64) -> String {
    rounded(value, 1, "%")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_written() {
        let secs = Duration::from_secs;
        assert_eq!(duration(secs(20)), "20s");
        assert_eq!(duration(secs(30)), "30s");
        assert_eq!(duration(secs(300)), "5m");
        assert_eq!(duration(secs(5400)), "1h 30m");
        assert_eq!(duration(secs(3 * 86_400)), "3d");
        assert_eq!(duration(secs(90 * 86_400)), "90d");
        assert_eq!(duration(secs(86_400 + 5)), "1d 5s");
        assert_eq!(duration(Duration::from_millis(1500)), "1s 500ms");
        assert_eq!(duration(Duration::from_millis(250)), "250ms");
        assert_eq!(duration(Duration::ZERO), "0s");
        assert_eq!(duration_ms(20_000), "20s");
        assert_eq!(duration_ms(-5), "0s");
        assert_eq!(duration_secs(900), "15m");
    }

    #[test]
    fn what_is_written_parses_back_to_the_same_duration() {
        for ms in [
            0u64,
            250,
            1_500,
            20_000,
            300_000,
            5_400_000,
            86_400_000 + 5_000,
            7 * 86_400_000,
            400 * 86_400_000 + 3_723_004,
        ] {
            let d = Duration::from_millis(ms);
            let text = duration(d);
            assert_eq!(humantime::parse_duration(&text).expect(&text), d, "{text}");
        }
    }

    #[test]
    fn spans_keep_their_two_largest_units() {
        let secs = Duration::from_secs;
        assert_eq!(span(secs(40)), "40s");
        assert_eq!(span(secs(90)), "1m 30s");
        assert_eq!(span(secs(3 * 3600 + 2 * 60 + 9)), "3h 2m");
        assert_eq!(span(secs(2 * 86_400 + 300)), "2d");
        assert_eq!(span(secs(2 * 86_400 + 4 * 3600 + 300)), "2d 4h");
        assert_eq!(span(Duration::from_millis(999)), "0s");
    }

    #[test]
    fn measured_values_are_rounded_for_people() {
        assert_eq!(percent(22.608_682_632_446_29), "22.6%");
        assert_eq!(percent(93.0), "93%");
        assert_eq!(percent(99.96), "100%");
        assert_eq!(rounded(1234.56, 0, " MiB"), "1235 MiB");
        assert_eq!(rounded(71.26, 1, " °C"), "71.3 °C");
        assert_eq!(rounded(1.256, 2, ""), "1.26");
        assert_eq!(rounded(-0.01, 1, ""), "0");
        assert_eq!(rounded(f64::NAN, 1, "%"), "NaN%");
    }
}
