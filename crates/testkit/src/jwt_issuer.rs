//! A JWT issuer for tests and benchmarks: an ES256 key, its key set (JWKS), signed tokens, and
//! the key set served over plain HTTP.

use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};

pub struct Issuer {
    key: EcdsaKeyPair,
    kid: String,
}

impl Issuer {
    /// A fresh key, published under `kid`.
    pub fn new(kid: &str) -> Issuer {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        Issuer {
            key: EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap(),
            kid: kid.to_string(),
        }
    }

    pub fn jwks(&self) -> Value {
        let point = self.key.public_key().as_ref();
        json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": self.kid, "use": "sig", "alg": "ES256",
            "x": b64url(&point[1..33]), "y": b64url(&point[33..])}]})
    }

    /// A compact JWS of `claims`, signed with this key.
    pub fn sign(&self, claims: &Value) -> String {
        let header = json!({"alg": "ES256", "kid": self.kid, "typ": "JWT"});
        let signed = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let signature = self.key.sign(&SystemRandom::new(), signed.as_bytes()).unwrap();
        format!("{signed}.{}", b64url(signature.as_ref()))
    }

    /// A token for `alice` from `issuer` to audience `api`, expiring `expires_in` seconds from now.
    pub fn token(&self, issuer: &str, expires_in: i64) -> String {
        self.sign(&json!({"iss": issuer, "aud": "api", "sub": "alice", "exp": unix_now() + expires_in}))
    }

    /// Serves the key set at `http://127.0.0.1:<port>/jwks.json`; returns that URL.
    pub async fn serve(&self) -> String {
        let jwks = self.jwks();
        let app = axum::Router::new().route(
            "/jwks.json",
            axum::routing::get(move || async move { axum::Json(jwks) }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{address}/jwks.json")
    }
}

pub fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}
