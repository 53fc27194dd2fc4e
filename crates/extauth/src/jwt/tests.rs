use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair, RSA_PKCS1_SHA256, RsaKeyPair};
use serde_json::json;

use super::*;

/// A 2048-bit RSA key made with `openssl genpkey` for these tests only (ring cannot generate RSA).
const RSA_PKCS8: &str = include_str!("testdata/rsa2048.pk8.b64");
const NOW: u64 = 1_700_000_000;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

enum Key {
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

impl Key {
    fn ec() -> Key {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        Key::Ec(EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap())
    }

    fn rsa() -> Key {
        let der = base64::engine::general_purpose::STANDARD
            .decode(RSA_PKCS8.trim())
            .unwrap();
        Key::Rsa(RsaKeyPair::from_pkcs8(&der).unwrap())
    }

    fn jwk(&self, kid: &str) -> Value {
        match self {
            Key::Ec(key) => {
                let point = key.public_key().as_ref();
                json!({"kty": "EC", "crv": "P-256", "kid": kid, "x": b64(&point[1..33]), "y": b64(&point[33..])})
            }
            Key::Rsa(key) => {
                let public: ring::signature::RsaPublicKeyComponents<Vec<u8>> = key.public().into();
                json!({"kty": "RSA", "kid": kid, "alg": "RS256", "n": b64(&public.n), "e": b64(&public.e)})
            }
        }
    }

    fn alg(&self) -> &'static str {
        match self {
            Key::Ec(_) => "ES256",
            Key::Rsa(_) => "RS256",
        }
    }

    fn sign(&self, header: Value, claims: Value) -> String {
        let signed = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let rng = SystemRandom::new();
        let signature = match self {
            Key::Ec(key) => key.sign(&rng, signed.as_bytes()).unwrap().as_ref().to_vec(),
            Key::Rsa(key) => {
                let mut out = vec![0; key.public().modulus_len()];
                key.sign(&RSA_PKCS1_SHA256, &rng, signed.as_bytes(), &mut out).unwrap();
                out
            }
        };
        format!("{signed}.{}", b64(&signature))
    }

    fn token(&self, claims: Value) -> String {
        self.sign(json!({"alg": self.alg(), "kid": "k1", "typ": "JWT"}), claims)
    }
}

fn jwks(keys: &[Value]) -> Jwks {
    Jwks::parse(&json!({ "keys": keys }).to_string()).unwrap()
}

fn good_claims() -> Value {
    json!({"iss": "https://issuer.example", "aud": ["other", "api"], "sub": "alice", "exp": NOW + 300, "scope": "read write"})
}

fn validator() -> JwtValidator {
    JwtValidator {
        source: JwksSource::Local(Jwks::default()),
        expectations: JwtExpectations {
            issuer: Some("https://issuer.example".into()),
            audiences: vec!["api".into()],
        },
        claims_to_headers: vec![("sub".into(), "x-user".into()), ("exp".into(), "x-exp".into())],
        required_scopes: vec!["read".into()],
    }
}

fn with_claims(f: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
    let mut claims = good_claims();
    f(claims.as_object_mut().unwrap());
    claims
}

#[test]
fn verifies_tokens_by_table() {
    for key in [Key::ec(), Key::rsa()] {
        let set = jwks(&[key.jwk("k1")]);
        let tampered = {
            let token = key.token(good_claims());
            let parts: Vec<&str> = token.split('.').collect();
            let evil = b64(with_claims(|c| {
                c.insert("sub".into(), json!("mallory"));
            })
            .to_string()
            .as_bytes());
            format!("{}.{}.{}", parts[0], evil, parts[2])
        };
        let unsigned = format!(
            "{}.{}.",
            b64(br#"{"alg":"none"}"#),
            b64(good_claims().to_string().as_bytes())
        );
        let cases: Vec<(&str, String, Result<(), JwtError>)> = vec![
            ("valid", key.token(good_claims()), Ok(())),
            (
                "expired within leeway",
                key.token(with_claims(|c| {
                    c.insert("exp".into(), json!(NOW - 30));
                })),
                Ok(()),
            ),
            (
                "expired",
                key.token(with_claims(|c| {
                    c.insert("exp".into(), json!(NOW - 61));
                })),
                Err(JwtError::Expired),
            ),
            (
                "not yet valid",
                key.token(with_claims(|c| {
                    c.insert("nbf".into(), json!(NOW + 120));
                })),
                Err(JwtError::NotYetValid),
            ),
            (
                "wrong issuer",
                key.token(with_claims(|c| {
                    c.insert("iss".into(), json!("https://evil"));
                })),
                Err(JwtError::WrongIssuer),
            ),
            (
                "wrong audience",
                key.token(with_claims(|c| {
                    c.insert("aud".into(), json!("web"));
                })),
                Err(JwtError::WrongAudience),
            ),
            (
                "audience as a string",
                key.token(with_claims(|c| {
                    c.insert("aud".into(), json!("api"));
                })),
                Ok(()),
            ),
            (
                "missing scope",
                key.token(with_claims(|c| {
                    c.insert("scope".into(), json!("write"));
                })),
                Err(JwtError::MissingScope("read".into())),
            ),
            (
                "scp list",
                key.token(with_claims(|c| {
                    c.remove("scope");
                    c.insert("scp".into(), json!(["read"]));
                })),
                Ok(()),
            ),
            ("tampered payload", tampered, Err(JwtError::BadSignature)),
            ("alg none", unsigned, Err(JwtError::UnsupportedAlgorithm("none".into()))),
            (
                "HS256",
                key.sign(json!({"alg": "HS256", "kid": "k1"}), good_claims()),
                Err(JwtError::UnsupportedAlgorithm("HS256".into())),
            ),
            (
                "unknown kid",
                key.sign(json!({"alg": key.alg(), "kid": "k9"}), good_claims()),
                Err(JwtError::UnknownKid("k9".into())),
            ),
            ("no kid", key.sign(json!({"alg": key.alg()}), good_claims()), Ok(())),
            (
                "critical extension",
                key.sign(json!({"alg": key.alg(), "crit": ["x"]}), good_claims()),
                Err(JwtError::Malformed("critical header extensions")),
            ),
            (
                "two segments",
                "abc.def".into(),
                Err(JwtError::Malformed("not three dot-separated parts")),
            ),
            (
                "garbage",
                "!!!.???.###".into(),
                Err(JwtError::Malformed("header is not base64url JSON")),
            ),
            ("huge", "a".repeat(100_000), Err(JwtError::Malformed("too large"))),
        ];
        for (name, token, expected) in cases {
            let got = validator().verify(&token, &set, NOW).map(|_| ());
            assert_eq!(got, expected, "{} {name}", key.alg());
        }
    }
}

#[test]
fn refuses_a_key_of_another_type_or_algorithm() {
    let ec = Key::ec();
    let rsa = Key::rsa();
    // The token says RS256 but the only key is EC: no key fits.
    let token = ec.sign(json!({"alg": "RS256"}), good_claims());
    assert_eq!(
        validator().verify(&token, &jwks(&[ec.jwk("k1")]), NOW),
        Err(JwtError::NoKey)
    );
    // The RSA JWK says alg RS256; a PS256 token must not use it.
    let token = rsa.sign(json!({"alg": "PS256"}), good_claims());
    assert_eq!(
        validator().verify(&token, &jwks(&[rsa.jwk("k1")]), NOW),
        Err(JwtError::NoKey)
    );
    // Another key with the same kid does not verify it.
    let other = Key::ec();
    assert_eq!(
        validator().verify(&ec.token(good_claims()), &jwks(&[other.jwk("k1")]), NOW),
        Err(JwtError::BadSignature)
    );
}

#[test]
fn check_maps_results_to_outcomes() {
    let key = Key::ec();
    let set = jwks(&[key.jwk("k1")]);
    let request = |authorization: Option<String>| {
        let mut input = CheckInput::default();
        if let Some(value) = authorization {
            input.headers.insert("authorization".into(), value);
        }
        input
    };
    let allowed = validator().check(
        &request(Some(format!("Bearer {}", key.token(good_claims())))),
        &set,
        NOW,
    );
    assert_eq!(
        allowed,
        Outcome::Allow {
            upstream_headers: vec![
                ("x-user".into(), "alice".into()),
                ("x-exp".into(), (NOW + 300).to_string())
            ]
        }
    );
    let invalid = bearer_challenge(401, Some("invalid_token"));
    assert_eq!(
        validator().check(&request(Some("Bearer abc.def".into())), &set, NOW),
        invalid
    );
    assert_eq!(
        validator().check(&request(None), &set, NOW),
        bearer_challenge(401, None)
    );
    let no_read = key.token(with_claims(|c| {
        c.insert("scope".into(), json!("write"));
    }));
    assert_eq!(
        validator().check(&request(Some(format!("Bearer {no_read}"))), &set, NOW),
        bearer_challenge(403, Some("insufficient_scope"))
    );
}

#[test]
fn key_sets_skip_unusable_keys_and_refuse_empty_ones() {
    let ec = Key::ec();
    let set = jwks(&[
        json!({"kty": "oct", "k": "c2VjcmV0"}),
        json!({"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"}),
        ec.jwk("k1"),
    ]);
    assert_eq!(set.len(), 1);
    assert!(set.has_kid("k1"));
    assert!(Jwks::parse(r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#).is_err());
    assert!(Jwks::parse("not json").is_err());
    assert_eq!(token_kid(&ec.token(good_claims())).as_deref(), Some("k1"));
}

#[test]
fn a_verified_token_is_remembered_only_by_its_own_key_set() {
    let key = Key::ec();
    let set = jwks(&[key.jwk("k1")]);
    let token = key.token(good_claims());
    validator().verify(&token, &set, NOW).unwrap();
    assert!(set.was_verified(&Jwks::token_digest(&token)));
    // Claims are checked on every use: later the remembered token has expired.
    assert!(matches!(
        validator().verify(&token, &set, NOW + 10_000),
        Err(JwtError::Expired)
    ));
    // A refreshed set without the key refuses it.
    let other = Key::ec();
    let rotated = jwks(&[other.jwk("k1")]);
    assert!(matches!(
        validator().verify(&token, &rotated, NOW),
        Err(JwtError::BadSignature)
    ));
    // A token another key signed is refused and never remembered.
    let forged = other.token(good_claims());
    assert!(matches!(
        validator().verify(&forged, &set, NOW),
        Err(JwtError::BadSignature)
    ));
    assert!(!set.was_verified(&Jwks::token_digest(&forged)));
}
