//! JWT access tokens: signature (RS*, PS*, ES256, ES384 only), time, issuer, audience and
//! scope checks, and claims copied to upstream headers. The key set is passed in, so the server
//! can fetch and refresh remote sets while this stays free of I/O.
//!
//! `alg: none` and HS* are refused outright: a verifier that accepts them lets anyone who knows
//! the (public) key set mint tokens.

use std::time::Duration;

use serde_json::Value;

use crate::jwks::{Curve, Jwks, KeyMaterial, b64url};
use crate::{CheckInput, Outcome, header};

/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECS: u64 = 60;

/// Tokens larger than this are refused before any decoding.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The claims of a verified token.
pub type Claims = serde_json::Map<String, Value>;

/// Why a token was refused; for logs only, never sent to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    #[error("unsupported algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    #[error("no key with kid {0:?} in the key set")]
    UnknownKid(String),
    #[error("no key in the key set fits the token's algorithm")]
    NoKey,
    #[error("bad signature")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token not valid yet")]
    NotYetValid,
    #[error("wrong issuer")]
    WrongIssuer,
    #[error("wrong audience")]
    WrongAudience,
    #[error("missing scope {0:?}")]
    MissingScope(String),
    #[error("key set: {0}")]
    BadJwks(String),
}

/// What a token must say besides being signed by a key of the set and current.
#[derive(Debug, Clone, Default)]
pub struct JwtExpectations {
    /// `iss` must equal this when set.
    pub issuer: Option<String>,
    /// `aud` (a string or a list) must contain one of these when not empty.
    pub audiences: Vec<String>,
}

/// Where a validator's keys come from.
#[derive(Debug, Clone)]
pub enum JwksSource {
    /// Fetched and refreshed by the server.
    Remote { url: String, refresh_interval: Duration },
    /// Given inline in the config.
    Local(Jwks),
}

/// A compiled `oauth2.accessTokenValidation.jwt` config.
#[derive(Debug, Clone)]
pub struct JwtValidator {
    pub source: JwksSource,
    pub expectations: JwtExpectations,
    /// (claim, upstream header)
    pub claims_to_headers: Vec<(String, String)>,
    pub required_scopes: Vec<String>,
}

impl JwtValidator {
    /// The decision for the bearer token of `input`, verified with `jwks`.
    pub fn check(&self, input: &CheckInput, jwks: &Jwks, now: u64) -> Outcome {
        let Some(token) = bearer_token(input) else {
            return bearer_challenge(401, None);
        };
        match self.verify(token, jwks, now) {
            Ok(claims) => Outcome::Allow {
                upstream_headers: self
                    .claims_to_headers
                    .iter()
                    .filter_map(|(claim, header)| Some((header.clone(), claim_text(claims.get(claim)?)?)))
                    .collect(),
            },
            Err(JwtError::MissingScope(_)) => bearer_challenge(403, Some("insufficient_scope")),
            Err(_) => bearer_challenge(401, Some("invalid_token")),
        }
    }

    /// Verifies `token` against `jwks`, the expectations and the required scopes.
    pub fn verify(&self, token: &str, jwks: &Jwks, now: u64) -> Result<Claims, JwtError> {
        let claims = verify_jwt(token, jwks, &self.expectations, now)?;
        let granted = scopes(&claims);
        if let Some(missing) = self.required_scopes.iter().find(|s| !granted.contains(&s.as_str())) {
            return Err(JwtError::MissingScope(missing.clone()));
        }
        Ok(claims)
    }
}

/// Verifies a compact JWS: header, algorithm, signature with a key of `jwks`, `exp`/`nbf` (with
/// [`LEEWAY_SECS`]), then issuer and audience. `now` is seconds since the Unix epoch.
pub fn verify_jwt(token: &str, jwks: &Jwks, expect: &JwtExpectations, now: u64) -> Result<Claims, JwtError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(JwtError::Malformed("too large"));
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed("not three dot-separated parts"));
    };
    let header: Claims = decode_json(header_b64).ok_or(JwtError::Malformed("header is not base64url JSON"))?;
    if header.contains_key("crit") {
        // No JWS extensions are understood, so a token that requires one must be refused.
        return Err(JwtError::Malformed("critical header extensions"));
    }
    let alg = header.get("alg").and_then(Value::as_str).unwrap_or_default();
    let algorithm = Algorithm::from_name(alg).ok_or_else(|| JwtError::UnsupportedAlgorithm(alg.to_string()))?;
    let digest = Jwks::token_digest(token);
    if !jwks.was_verified(&digest) {
        verify_signature(
            token,
            header_b64,
            payload_b64,
            signature_b64,
            &header,
            alg,
            algorithm,
            jwks,
        )?;
        jwks.remember_verified(digest);
    }
    check_claims(payload_b64, expect, now)
}

/// The signature check: a key of `jwks` that fits the token's `kid` and algorithm verifies it.
#[allow(clippy::too_many_arguments)]
fn verify_signature(
    token: &str,
    header_b64: &str,
    payload_b64: &str,
    signature_b64: &str,
    header: &Claims,
    alg: &str,
    algorithm: Algorithm,
    jwks: &Jwks,
) -> Result<(), JwtError> {
    let signature = b64url(signature_b64).ok_or(JwtError::Malformed("signature is not base64url"))?;
    let signed = &token.as_bytes()[..header_b64.len() + 1 + payload_b64.len()];

    let kid = header.get("kid").and_then(Value::as_str);
    if let Some(kid) = kid
        && !jwks.has_kid(kid)
    {
        return Err(JwtError::UnknownKid(kid.to_string()));
    }
    let mut candidates = jwks
        .keys
        .iter()
        .filter(|k| kid.is_none() || k.kid.as_deref() == kid)
        .filter(|k| k.alg.as_deref().is_none_or(|a| a == alg))
        .filter(|k| algorithm.fits(&k.material))
        .peekable();
    if candidates.peek().is_none() {
        return Err(JwtError::NoKey);
    }
    if !candidates.any(|key| algorithm.verify(&key.material, signed, &signature)) {
        return Err(JwtError::BadSignature);
    }
    Ok(())
}

/// Time, issuer and audience checks of a verified token's payload.
fn check_claims(payload_b64: &str, expect: &JwtExpectations, now: u64) -> Result<Claims, JwtError> {
    let claims: Claims = decode_json(payload_b64).ok_or(JwtError::Malformed("payload is not base64url JSON"))?;
    let now = now as f64;
    if let Some(exp) = claims.get("exp") {
        let exp = exp.as_f64().ok_or(JwtError::Malformed("exp is not a number"))?;
        if now > exp + LEEWAY_SECS as f64 {
            return Err(JwtError::Expired);
        }
    }
    if let Some(nbf) = claims.get("nbf") {
        let nbf = nbf.as_f64().ok_or(JwtError::Malformed("nbf is not a number"))?;
        if now + (LEEWAY_SECS as f64) < nbf {
            return Err(JwtError::NotYetValid);
        }
    }
    if let Some(issuer) = &expect.issuer
        && claims.get("iss").and_then(Value::as_str) != Some(issuer.as_str())
    {
        return Err(JwtError::WrongIssuer);
    }
    if !expect.audiences.is_empty() {
        let audiences: Vec<&str> = match claims.get("aud") {
            Some(Value::String(aud)) => vec![aud.as_str()],
            Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !audiences.iter().any(|a| expect.audiences.iter().any(|e| e == a)) {
            return Err(JwtError::WrongAudience);
        }
    }
    Ok(claims)
}

/// The `kid` of a token's header, without verifying anything (to decide on a key set refresh).
pub fn token_kid(token: &str) -> Option<String> {
    let header: Claims = decode_json(token.split('.').next()?)?;
    header.get("kid")?.as_str().map(str::to_string)
}

/// The token of `Authorization: Bearer <token>`.
pub fn bearer_token(input: &CheckInput) -> Option<&str> {
    let value = header(input, "authorization")?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// A deny with an RFC 6750 challenge; `error` is the only detail a client gets.
pub fn bearer_challenge(status: u16, error: Option<&str>) -> Outcome {
    let challenge = match error {
        Some(error) => format!("Bearer error=\"{error}\""),
        None => "Bearer".to_string(),
    };
    Outcome::Deny {
        status,
        headers: vec![("www-authenticate".to_string(), challenge)],
        body: String::new(),
    }
}

/// Granted scopes: the space-separated `scope` claim, or `scp` as a list or a string.
fn scopes(claims: &Claims) -> Vec<&str> {
    let mut granted = Vec::new();
    for name in ["scope", "scp"] {
        match claims.get(name) {
            Some(Value::String(s)) => granted.extend(s.split_whitespace()),
            Some(Value::Array(list)) => granted.extend(list.iter().filter_map(Value::as_str)),
            _ => {}
        }
    }
    granted
}

/// A claim as a header value: strings as they are, other scalars and structures as JSON.
fn claim_text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

fn decode_json(part: &str) -> Option<Claims> {
    serde_json::from_slice(&b64url(part)?).ok()
}

/// A supported signature algorithm and the key type it needs.
#[derive(Clone, Copy)]
enum Algorithm {
    Rsa(&'static ring::signature::RsaParameters),
    Ec(Curve, &'static ring::signature::EcdsaVerificationAlgorithm),
}

impl Algorithm {
    fn from_name(alg: &str) -> Option<Algorithm> {
        use ring::signature as s;
        Some(match alg {
            "RS256" => Algorithm::Rsa(&s::RSA_PKCS1_2048_8192_SHA256),
            "RS384" => Algorithm::Rsa(&s::RSA_PKCS1_2048_8192_SHA384),
            "RS512" => Algorithm::Rsa(&s::RSA_PKCS1_2048_8192_SHA512),
            "PS256" => Algorithm::Rsa(&s::RSA_PSS_2048_8192_SHA256),
            "PS384" => Algorithm::Rsa(&s::RSA_PSS_2048_8192_SHA384),
            "PS512" => Algorithm::Rsa(&s::RSA_PSS_2048_8192_SHA512),
            "ES256" => Algorithm::Ec(Curve::P256, &s::ECDSA_P256_SHA256_FIXED),
            "ES384" => Algorithm::Ec(Curve::P384, &s::ECDSA_P384_SHA384_FIXED),
            _ => return None,
        })
    }

    fn fits(self, key: &KeyMaterial) -> bool {
        match (self, key) {
            (Algorithm::Rsa(_), KeyMaterial::Rsa { .. }) => true,
            (Algorithm::Ec(want, _), KeyMaterial::Ec { curve, .. }) => want == *curve,
            _ => false,
        }
    }

    fn verify(self, key: &KeyMaterial, signed: &[u8], signature: &[u8]) -> bool {
        match (self, key) {
            (Algorithm::Rsa(params), KeyMaterial::Rsa { n, e }) => ring::signature::RsaPublicKeyComponents { n, e }
                .verify(params, signed, signature)
                .is_ok(),
            (Algorithm::Ec(_, alg), KeyMaterial::Ec { point, .. }) => {
                ring::signature::UnparsedPublicKey::new(alg, point)
                    .verify(signed, signature)
                    .is_ok()
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests;
