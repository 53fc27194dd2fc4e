//! JSON Web Key Sets: the RSA and EC P-256/P-384 public keys JWTs are verified with. Keys of
//! other types (oct, OKP) are skipped, since accepting a shared secret from a published JWKS
//! would let anyone sign tokens.

use base64::Engine as _;
use serde::Deserialize;

use crate::jwt::JwtError;

/// A parsed key set; cheap to clone per refresh, shared behind an `Arc` by the server.
#[derive(Debug, Clone, Default)]
pub struct Jwks {
    pub(crate) keys: Vec<Jwk>,
    /// SHA-256 of tokens whose signature a key of this set verified. Clients send the same
    /// bearer token many times, and a signature check costs 50-100 µs (ES256, RS256) where this
    /// lookup costs about one: at a few thousand checks a second that is a core. The set belongs
    /// to these keys, so a refreshed key set (a key withdrawn) starts empty; only successes are
    /// kept (nobody can fill it without valid signatures), and it is cleared when full.
    pub(crate) verified: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<[u8; 32]>>>,
}

/// Verified signatures a key set remembers before it starts over.
const VERIFIED_CAPACITY: usize = 16_384;

impl Jwks {
    pub(crate) fn token_digest(token: &str) -> [u8; 32] {
        let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        out
    }

    pub(crate) fn was_verified(&self, digest: &[u8; 32]) -> bool {
        self.verified.lock().map(|set| set.contains(digest)).unwrap_or(false)
    }

    pub(crate) fn remember_verified(&self, digest: [u8; 32]) {
        if let Ok(mut set) = self.verified.lock() {
            if set.len() >= VERIFIED_CAPACITY {
                set.clear();
            }
            set.insert(digest);
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Jwk {
    pub(crate) kid: Option<String>,
    /// When the JWK names its algorithm, only tokens of that algorithm may use it.
    pub(crate) alg: Option<String>,
    pub(crate) material: KeyMaterial,
}

#[derive(Debug, Clone)]
pub(crate) enum KeyMaterial {
    /// Big-endian modulus (no leading zeros) and exponent.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// Uncompressed point `0x04 || x || y`.
    Ec { curve: Curve, point: Vec<u8> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Curve {
    P256,
    P384,
}

#[derive(Deserialize)]
struct RawSet {
    keys: Vec<RawKey>,
}

#[derive(Deserialize)]
struct RawKey {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default, rename = "use")]
    usage: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
}

impl Jwks {
    /// Parses a JWKS document (`{"keys": [...]}`); keys that cannot verify signatures are
    /// skipped, a document with no usable key is an error.
    pub fn parse(json: &str) -> Result<Jwks, JwtError> {
        let raw: RawSet =
            serde_json::from_str(json).map_err(|e| JwtError::BadJwks(format!("not a JWKS document: {e}")))?;
        let keys: Vec<Jwk> = raw.keys.into_iter().filter_map(Jwk::from_raw).collect();
        if keys.is_empty() {
            return Err(JwtError::BadJwks(
                "no usable RSA or EC (P-256, P-384) signing key".into(),
            ));
        }
        Ok(Jwks {
            keys,
            verified: Default::default(),
        })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether a key with this `kid` is in the set (the server refetches a remote set when not).
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }
}

impl Jwk {
    fn from_raw(raw: RawKey) -> Option<Jwk> {
        if raw.usage.as_deref().is_some_and(|u| u != "sig") {
            return None;
        }
        let material = match raw.kty.as_str() {
            "RSA" => {
                let mut n = b64url(raw.n.as_deref()?)?;
                let e = b64url(raw.e.as_deref()?)?;
                let leading = n.iter().take_while(|b| **b == 0).count();
                n.drain(..leading);
                KeyMaterial::Rsa { n, e }
            }
            "EC" => {
                let (curve, size) = match raw.crv.as_deref()? {
                    "P-256" => (Curve::P256, 32),
                    "P-384" => (Curve::P384, 48),
                    _ => return None,
                };
                let x = b64url(raw.x.as_deref()?)?;
                let y = b64url(raw.y.as_deref()?)?;
                if x.len() > size || y.len() > size {
                    return None;
                }
                let mut point = vec![0x04];
                for coordinate in [x, y] {
                    point.extend(std::iter::repeat_n(0, size - coordinate.len()));
                    point.extend(coordinate);
                }
                KeyMaterial::Ec { curve, point }
            }
            _ => return None,
        };
        Some(Jwk {
            kid: raw.kid,
            alg: raw.alg,
            material,
        })
    }
}

/// Base64url with or without padding, as JWKs and JWTs are found in the wild.
pub(crate) fn b64url(text: &str) -> Option<Vec<u8>> {
    const ENGINE: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    ENGINE.decode(text).ok()
}
