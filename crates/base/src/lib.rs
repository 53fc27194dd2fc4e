//! The small helpers that every Trellis crate may use, the pure ones included: no I/O, no async
//! runtime, no clock.
//!
//! - [`duration`]: the one duration parser (resources, flags, config files, API query parameters).
//! - [`hash`]: the stable content hash (64-bit FNV-1a) behind config and discovery versions, and
//!   SHA-256 in hex, as tokens, keys and API-key digests are stored.

pub mod duration;
pub mod hash;

pub use duration::{
    DurationError, ENVOY_MAX_DURATION, MAX_DURATION, duration_ms, parse_duration, parse_duration_at_most,
};
pub use hash::{Fnv1a, sha256_hex, stable_hash};
