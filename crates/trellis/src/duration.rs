//! Durations in flags and config files: `500ms`, `30s`, `10m`, `24h`, `7d`.

use std::time::Duration;

pub fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| anyhow::anyhow!("{text:?} is not a duration such as 30s, 10m or 24h"))?;
    let seconds = match unit {
        "ms" => return Ok(Duration::from_millis(number)),
        "s" => number,
        "m" => number * 60,
        "h" => number * 3600,
        "d" => number * 86400,
        _ => anyhow::bail!("{text:?}: unknown unit {unit:?} (use ms, s, m, h or d)"),
    };
    Ok(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_rejects_the_rest() {
        let cases = [
            ("500ms", Some(500)),
            ("6s", Some(6_000)),
            ("10m", Some(600_000)),
            ("24h", Some(86_400_000)),
            ("1d", Some(86_400_000)),
            ("5", None),
            ("h", None),
            ("3w", None),
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
