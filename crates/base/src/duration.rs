//! The one duration parser: resources (`requestTimeout: 1.5s`), auth configs
//! (`refreshInterval: 60s`), the binary's flags and config files (`--token-ttl 24h`) and API
//! query parameters (`register?ttl=1h`) all read durations here.
//!
//! Exact decimal arithmetic on integers, every step checked: a value that would overflow is an
//! error that says the largest value allowed, never a wrapped-around or saturated duration.

use std::time::Duration;

/// The largest `google.protobuf.Duration`: 315,576,000,000 s, about 10,000 years
/// (`google/protobuf/duration.proto`). Nothing Trellis stores or sends may be longer.
pub const MAX_DURATION: Duration = Duration::from_secs(315_576_000_000);

/// The longest duration Envoy accepts in the fields Trellis fills (route and per-try timeouts,
/// fault delays, outlier detection intervals, add-on timeouts). Envoy converts them to
/// milliseconds and refuses seconds of `i64::MAX / 1e9` (9,223,372,036) or more with "Duration
/// out-of-range" (`validateDurationAsMilliseconds` in Envoy's `source/common/protobuf/utility.cc`);
/// checked against Envoy 1.40 with `envoy --mode validate`: 9223372035.999s passes, 9223372036s
/// does not.
pub const ENVOY_MAX_DURATION: Duration = Duration::new(9_223_372_035, 999_999_999);

const NANOS_PER_SECOND: u128 = 1_000_000_000;

/// Why a duration was refused; each message shows the text and what would be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("{0:?} is not a duration such as \"1.5s\", \"500ms\", \"10m\", \"24h\" or \"7d\"")]
    Malformed(String),
    #[error("{text:?}: unknown unit {unit:?} (use ms, s, m, h or d)")]
    UnknownUnit { text: String, unit: String },
    #[error("duration {0} is negative: use 0 or more")]
    Negative(String),
    #[error("duration {text} is too large: at most {max}")]
    TooLarge { text: String, max: String },
}

/// Parses `500ms`, `30s`, `1.5s` (protobuf JSON), `10m`, `24h` or `7d`, at most [`MAX_DURATION`].
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    parse_duration_at_most(text, MAX_DURATION)
}

/// [`parse_duration`] with a lower bound of its own, such as [`ENVOY_MAX_DURATION`].
pub fn parse_duration_at_most(text: &str, max: Duration) -> Result<Duration, DurationError> {
    let trimmed = text.trim();
    if trimmed.starts_with('-') {
        return Err(DurationError::Negative(trimmed.to_string()));
    }
    let malformed = || DurationError::Malformed(trimmed.to_string());
    let number_end = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(number_end);
    let unit_nanos: u128 = match unit {
        "ms" => 1_000_000,
        "s" => NANOS_PER_SECOND,
        "m" => 60 * NANOS_PER_SECOND,
        "h" => 3_600 * NANOS_PER_SECOND,
        "d" => 86_400 * NANOS_PER_SECOND,
        _ if number.is_empty() || unit.is_empty() => return Err(malformed()),
        _ => {
            return Err(DurationError::UnknownUnit {
                text: trimmed.to_string(),
                unit: unit.to_string(),
            });
        }
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
        return Err(malformed());
    }
    let too_large = || DurationError::TooLarge {
        text: trimmed.to_string(),
        max: describe(max),
    };
    // Digits beyond what u128 holds are certainly too large; no need to count them.
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| too_large())?
    };
    let mut nanos = whole.checked_mul(unit_nanos).ok_or_else(too_large)?;
    // The fraction: each digit is worth a tenth of the one before; below a nanosecond it is
    // dropped (protobuf durations have nanosecond precision).
    let mut place = unit_nanos;
    for digit in fraction.bytes() {
        place /= 10;
        if place == 0 {
            break;
        }
        nanos = nanos
            .checked_add(u128::from(digit - b'0') * place)
            .ok_or_else(too_large)?;
    }
    if nanos > max.as_nanos() {
        return Err(too_large());
    }
    let seconds = u64::try_from(nanos / NANOS_PER_SECOND).map_err(|_| too_large())?;
    Ok(Duration::new(seconds, (nanos % NANOS_PER_SECOND) as u32))
}

/// Whole milliseconds of a duration text, rounded to the nearest; `None` for anything
/// [`parse_duration`] refuses.
pub fn duration_ms(text: &str) -> Option<u64> {
    let duration = parse_duration(text).ok()?;
    u64::try_from((duration.as_nanos() + 500_000) / 1_000_000).ok()
}

/// `315576000000s (about 10000 years)`: the seconds to copy, and a size a person can picture.
fn describe(max: Duration) -> String {
    let seconds = max.as_secs();
    let exact = if max.subsec_nanos() == 0 {
        format!("{seconds}s")
    } else {
        format!("{seconds}.{:09}s", max.subsec_nanos())
            .trim_end_matches('0')
            .to_string()
    };
    let years = seconds / (365 * 86_400 + 86_400 / 4);
    if years >= 2 {
        format!("{exact} (about {years} years)")
    } else {
        exact
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_fractions_and_protobuf_form() {
        let cases = [
            ("500ms", Duration::from_millis(500)),
            ("1.5s", Duration::from_millis(1_500)),
            ("0.100s", Duration::from_millis(100)),
            ("0.000000001s", Duration::from_nanos(1)),
            ("0.0000000001s", Duration::ZERO),
            ("2m", Duration::from_secs(120)),
            ("1.5h", Duration::from_secs(5_400)),
            ("24h", Duration::from_secs(86_400)),
            ("7d", Duration::from_secs(7 * 86_400)),
            (" 6s ", Duration::from_secs(6)),
            ("0s", Duration::ZERO),
            (".5s", Duration::from_millis(500)),
            ("5.s", Duration::from_secs(5)),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_duration(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn refuses_malformed_negative_and_unknown_units() {
        for text in [
            "", "5", "s", "h", ".s", "1..5s", "1.2.3s", "xs", "1e3s", "NaNs", "infs", "+1s",
        ] {
            assert!(
                matches!(
                    parse_duration(text),
                    Err(DurationError::Malformed(_) | DurationError::UnknownUnit { .. })
                ),
                "{text}: {:?}",
                parse_duration(text)
            );
        }
        assert_eq!(
            parse_duration("3w").unwrap_err().to_string(),
            "\"3w\": unknown unit \"w\" (use ms, s, m, h or d)"
        );
        assert_eq!(
            parse_duration("-1s").unwrap_err().to_string(),
            "duration -1s is negative: use 0 or more"
        );
    }

    #[test]
    fn refuses_overflow_with_the_largest_value_allowed() {
        // Each of these wrapped around or saturated in the old parsers.
        for text in [
            "99999999999999999h",
            "99999999999h",
            "18446744073709551616s",
            "999999999999999999999999999999999999999999999d",
            "315576000000.000000001s",
        ] {
            let error = parse_duration(text).unwrap_err();
            assert_eq!(
                error.to_string(),
                format!("duration {text} is too large: at most 315576000000s (about 10000 years)"),
            );
        }
    }

    #[test]
    fn the_largest_values_still_pass() {
        assert_eq!(parse_duration("315576000000s"), Ok(MAX_DURATION));
        assert_eq!(parse_duration("87660000h"), Ok(MAX_DURATION));
        assert_eq!(
            parse_duration_at_most("9223372035.999999999s", ENVOY_MAX_DURATION),
            Ok(ENVOY_MAX_DURATION)
        );
        assert_eq!(
            parse_duration_at_most("9223372036s", ENVOY_MAX_DURATION)
                .unwrap_err()
                .to_string(),
            "duration 9223372036s is too large: at most 9223372035.999999999s (about 292 years)"
        );
    }

    #[test]
    fn milliseconds_round_to_the_nearest() {
        let cases = [
            ("1.5s", Some(1500)),
            ("0.100s", Some(100)),
            ("500ms", Some(500)),
            ("2m", Some(120_000)),
            ("1h", Some(3_600_000)),
            ("0.0004s", Some(0)),
            ("0.0005s", Some(1)),
            ("5", None),
            ("-1s", None),
            ("xs", None),
        ];
        for (text, ms) in cases {
            assert_eq!(duration_ms(text), ms, "{text}");
        }
    }
}
