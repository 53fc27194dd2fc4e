//! Where a proxy's access log entries go (`--access-log` on `trellis proxy` and `trellis
//! gateway ingress`): the proxy says it when it registers, the agent checks it and writes it
//! into the listeners it builds for that proxy's Envoy.
//!
//! ```text
//!  --access-log stdout            ─▶ Stdout    Envoy's standard output (the proxy's log)
//!  --access-log otlp://HOST:PORT  ─▶ Otlp      an OpenTelemetry collector, OTLP/gRPC
//!  --access-log PATH              ─▶ File      JSON lines appended to PATH (made absolute here)
//!  (not given)                    ─▶ File      <data dir>/access.log
//! ```
//!
//! The sink is the proxy's own business, not the mesh's: Gloo's AccessLogPolicy has no field
//! for it, and Envoy writes the file with the proxy's own permissions.

use std::path::Path;

use anyhow::Context;
use trellis_model::access_log::AccessLogSink;

/// The access log file in a proxy's data directory, when `--access-log` is not given.
pub const DEFAULT_FILE: &str = "access.log";

/// Longest file path accepted (Linux's `PATH_MAX`).
const MAX_PATH_BYTES: usize = 4096;

/// Longest `host:port` of a collector.
const MAX_ADDRESS_BYTES: usize = 260;

const OTLP_SCHEME: &str = "otlp://";

/// The sink `--access-log` names; `None` is the default file in `data_dir` (absolute).
pub fn from_flag(flag: Option<&str>, data_dir: &Path) -> anyhow::Result<AccessLogSink> {
    let sink = match flag {
        None => AccessLogSink::File(data_dir.join(DEFAULT_FILE).display().to_string()),
        Some("stdout") => AccessLogSink::Stdout,
        Some(text) if text.starts_with(OTLP_SCHEME) => {
            AccessLogSink::Otlp(text[OTLP_SCHEME.len()..].trim_end_matches('/').to_string())
        }
        Some(text) => {
            // Envoy resolves a relative path against its own working directory; say ours.
            let path = std::path::absolute(text).with_context(|| format!("--access-log {text}: cannot resolve"))?;
            AccessLogSink::File(path.display().to_string())
        }
    };
    check(&sink).map_err(|message| anyhow::anyhow!("--access-log: {message}"))?;
    Ok(sink)
}

/// What the agent accepts in a registration: an absolute file path without control characters,
/// or a collector as `host:port`, each of bounded length.
pub fn check(sink: &AccessLogSink) -> Result<(), String> {
    match sink {
        AccessLogSink::Stdout => Ok(()),
        AccessLogSink::File(path) => {
            if path.len() > MAX_PATH_BYTES || path.chars().any(char::is_control) {
                return Err(format!(
                    "the access log path must be at most {MAX_PATH_BYTES} bytes without control characters"
                ));
            }
            if !path.starts_with('/') {
                return Err(format!("the access log path {path:?} must be absolute"));
            }
            Ok(())
        }
        AccessLogSink::Otlp(address) => {
            let parsed = address.rsplit_once(':').and_then(|(host, port)| {
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
                let valid_host = !host.is_empty()
                    && (host.parse::<std::net::IpAddr>().is_ok()
                        || host
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.')));
                valid_host.then_some(port)
            });
            if address.len() > MAX_ADDRESS_BYTES || parsed.is_none() {
                return Err(format!(
                    "the OpenTelemetry collector {address:?} is not HOST:PORT (e.g. otlp://otel-collector:4317)"
                ));
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_name_each_sink() {
        let dir = Path::new("/srv/proxy");
        assert_eq!(
            from_flag(None, dir).unwrap(),
            AccessLogSink::File("/srv/proxy/access.log".into())
        );
        assert_eq!(from_flag(Some("stdout"), dir).unwrap(), AccessLogSink::Stdout);
        assert_eq!(
            from_flag(Some("otlp://otel-collector:4317"), dir).unwrap(),
            AccessLogSink::Otlp("otel-collector:4317".into())
        );
        assert_eq!(
            from_flag(Some("otlp://[::1]:4317"), dir).unwrap(),
            AccessLogSink::Otlp("[::1]:4317".into())
        );
        let AccessLogSink::File(relative) = from_flag(Some("logs/access.log"), dir).unwrap() else {
            panic!("a path is a file")
        };
        assert!(
            relative.starts_with('/') && relative.ends_with("logs/access.log"),
            "{relative}"
        );
        for bad in ["otlp://collector", "otlp://:4317", "otlp://a b:4317", "otlp://host:0"] {
            assert!(from_flag(Some(bad), dir).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_agent_refuses_relative_long_or_odd_paths() {
        assert!(check(&AccessLogSink::File("access.log".into())).is_err());
        assert!(check(&AccessLogSink::File(format!("/{}", "a".repeat(MAX_PATH_BYTES)))).is_err());
        assert!(check(&AccessLogSink::File("/var/log/a\nb".into())).is_err());
        assert!(check(&AccessLogSink::Otlp(format!("{}:4317", "a".repeat(MAX_ADDRESS_BYTES)))).is_err());
        assert!(check(&AccessLogSink::File("/var/log/proxy/access.log".into())).is_ok());
    }
}
