//! Small helpers: tokens, digests, renewal timing and a hand-written base64 encoder (one fewer dependency).

use std::time::{Duration, SystemTime};

use ring::rand::{SecureRandom, SystemRandom};

use crate::{PkiError, Result};

const STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// 32 random bytes as base64url without padding (43 characters): bearer tokens such as join tokens.
///
/// # Panics
/// When the operating system's random number generator fails, which leaves nothing safe to do.
pub fn random_token() -> String {
    let bytes: [u8; 32] = random_bytes().expect("the system random number generator failed");
    base64_encode(&bytes, URL_SAFE, false)
}

/// When to renew a certificate valid from `not_before` to `not_after`: at 2/3 of its lifetime, which leaves a
/// third of it to retry in.
///
/// Certificates issued here are backdated by the clock-skew allowance; their life is counted from
/// the moment of issue, or a short-lived certificate would be due the moment it is issued.
pub fn renew_at(not_before: SystemTime, not_after: SystemTime) -> SystemTime {
    let issued = not_before + crate::authority::CLOCK_SKEW;
    let start = if issued < not_after { issued } else { not_before };
    match not_after.duration_since(start) {
        Ok(lifetime) => start + lifetime.mul_f64(2.0 / 3.0),
        // An inverted validity period is already due.
        Err(_) => not_after,
    }
}

pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut bytes = [0u8; N];
    SystemRandom::new().fill(&mut bytes).map_err(|_| PkiError::Random)?;
    Ok(bytes)
}

/// DER to a `CERTIFICATE` PEM block (64-column base64, trailing newline).
pub fn der_to_pem(der: &[u8]) -> String {
    let body = base64_encode(der, STANDARD, true);
    let mut pem = String::with_capacity(body.len() + body.len() / 64 + 60);
    pem.push_str("-----BEGIN CERTIFICATE-----\n");
    for line in body.as_bytes().chunks(64) {
        // The alphabet is ASCII, so every chunk is valid UTF-8.
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

pub(crate) fn base64_encode(data: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let symbols = chunk.len() + 1;
        for i in 0..4 {
            if i < symbols {
                out.push(alphabet[((n >> (18 - 6 * i)) & 0x3f) as usize] as char);
            } else if pad {
                out.push('=');
            }
        }
    }
    out
}

/// `now - skew`, saturating at the epoch rather than failing.
pub(crate) fn saturating_sub(now: SystemTime, skew: Duration) -> SystemTime {
    now.checked_sub(skew).unwrap_or(SystemTime::UNIX_EPOCH)
}
