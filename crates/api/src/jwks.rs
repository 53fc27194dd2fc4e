//! A PEM public key as a JSON Web Key Set. Gloo's JWTPolicy takes `local.inline` as a JWKS or a
//! PEM public key (https://docs.solo.io/gloo-mesh-enterprise/main/reference/api/jwt_policy/);
//! Envoy's `jwt_authn` reads only JWKS there, so PEM keys are converted.

use base64::Engine as _;
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

/// The named curves a JWK can say (`crv`), by their OID.
const CURVES: [(&str, &str); 3] = [
    ("1.2.840.10045.3.1.7", "P-256"),
    ("1.3.132.0.34", "P-384"),
    ("1.3.132.0.35", "P-521"),
];

/// True when `text` is PEM rather than JSON.
pub fn is_pem(text: &str) -> bool {
    text.trim_start().starts_with("-----BEGIN")
}

/// The key set (`{"keys": [<one key>]}`) of a PEM `PUBLIC KEY` (SubjectPublicKeyInfo), RSA or
/// EC on P-256, P-384 or P-521.
pub fn pem_to_jwks(text: &str) -> Result<String, String> {
    // A YAML block scalar (`|-`) leaves no newline after the last line, which the PEM reader needs.
    let lines: String = text.lines().map(|l| format!("{}\n", l.trim())).collect();
    let (_, pem) = x509_parser::pem::parse_x509_pem(lines.as_bytes()).map_err(|e| format!("not a PEM block: {e}"))?;
    if pem.label != "PUBLIC KEY" {
        return Err(format!(
            "a PEM \"PUBLIC KEY\" (SubjectPublicKeyInfo) is needed, not {:?}",
            pem.label
        ));
    }
    let (_, spki) = SubjectPublicKeyInfo::from_der(&pem.contents).map_err(|e| format!("not a public key: {e}"))?;
    let key = match spki.parsed().map_err(|e| format!("not a public key: {e}"))? {
        PublicKey::RSA(rsa) => serde_json::json!({
            "kty": "RSA",
            "n": b64url(without_leading_zeros(rsa.modulus)),
            "e": b64url(without_leading_zeros(rsa.exponent)),
        }),
        PublicKey::EC(point) => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|oid| oid.to_id_string())
                .and_then(|oid| CURVES.iter().find(|(id, _)| *id == oid).map(|(_, name)| *name))
                .ok_or("an EC key on P-256, P-384 or P-521 is needed")?;
            let data = point.data();
            // An uncompressed point: 0x04, then x and y of equal length.
            if data.first() != Some(&4) || data.len() % 2 != 1 {
                return Err("an EC key needs an uncompressed point".to_string());
            }
            let (x, y) = data[1..].split_at(data.len() / 2);
            serde_json::json!({"kty": "EC", "crv": curve, "x": b64url(x), "y": b64url(y)})
        }
        _ => return Err("an RSA or EC public key is needed".to_string()),
    };
    Ok(serde_json::json!({ "keys": [key] }).to_string())
}

fn without_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(bytes.len().saturating_sub(1));
    &bytes[start..]
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests;
