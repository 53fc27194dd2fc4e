//! Durations in flags, config files and API query parameters: `500ms`, `30s`, `10m`, `24h`, `7d`.
//!
//! The parser is trellis-api's, the one resources use too: checked arithmetic, and at most
//! 315,576,000,000 s, so a TTL such as `99999999999999999h` is refused instead of wrapping
//! around (and `now + ttl` stays far from overflowing a u64 of Unix seconds).

use std::time::Duration;

pub fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    Ok(trellis_api::parse_duration(text)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_rejects_the_rest() {
        let cases = [
            ("500ms", Some(500)),
            ("6s", Some(6_000)),
            ("1.5s", Some(1_500)),
            ("10m", Some(600_000)),
            ("24h", Some(86_400_000)),
            ("1d", Some(86_400_000)),
            ("5", None),
            ("h", None),
            ("3w", None),
            ("-1h", None),
        ];
        for (text, millis) in cases {
            assert_eq!(
                parse_duration(text).ok().map(|d| d.as_millis() as u64),
                millis,
                "{text}"
            );
        }
    }

    #[test]
    fn refuses_durations_that_would_overflow() {
        // `99999999999999999h` in seconds does not fit a u64: the old parser wrapped it around.
        let error = parse_duration("99999999999999999h").unwrap_err().to_string();
        assert_eq!(
            error,
            "duration 99999999999999999h is too large: at most 315576000000s (about 10000 years)"
        );
        assert!(parse_duration("18446744073709551615s").is_err());
        assert_eq!(parse_duration("87660000h").unwrap(), trellis_api::MAX_DURATION);
    }
}
