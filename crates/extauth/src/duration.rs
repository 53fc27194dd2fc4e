//! Durations as Gloo writes them: protobuf JSON (`60s`, `1.5s`), plus `ms`, `m` and `h` for people.

use std::time::Duration;

/// Parses `60s`, `0.5s`, `500ms`, `10m` or `1h`; the message says what is expected.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite() && *n >= 0.0)
        .ok_or_else(|| format!("{text:?} is not a duration such as \"60s\" or \"1.5s\""))?;
    let seconds = match unit {
        "ms" => number / 1000.0,
        "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("{text:?} is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_protobuf_durations_and_rejects_the_rest() {
        let cases = [
            ("60s", Some(60_000)),
            ("1.5s", Some(1_500)),
            ("500ms", Some(500)),
            ("10m", Some(600_000)),
            ("1h", Some(3_600_000)),
            ("5", None),
            ("s", None),
            ("-1s", None),
            ("3d", None),
        ];
        for (text, millis) in cases {
            assert_eq!(
                parse_duration(text).ok().map(|d| d.as_millis() as u64),
                millis,
                "{text}"
            );
        }
    }
}
