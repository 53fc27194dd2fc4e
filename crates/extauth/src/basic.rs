//! HTTP Basic auth against Gloo's user lists: `$apr1$` (Apache MD5-crypt) or salted SHA-1.
//!
//! Gloo's SHA-1 mode is not documented beyond "sha1 with a salt", so this accepts what the two
//! plausible tools write: the SHA-1 of `salt + password`, as lowercase hex (`sha1sum`) or as
//! base64 (`openssl dgst -binary | base64`). The two encodings have different lengths (40 and
//! 28), so accepting both cannot confuse one with the other; with an empty salt the base64 form is
//! exactly htpasswd's `{SHA}` format, whose prefix is stripped if present.

use std::collections::BTreeMap;

use base64::Engine as _;

use crate::apr1::apr1_hash;
use crate::{CheckInput, Outcome, header};

/// A compiled `basicAuth` config.
#[derive(Debug, Clone)]
pub struct BasicAuth {
    realm: String,
    algorithm: Algorithm,
    users: BTreeMap<String, StoredPassword>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Apr1,
    Sha1,
}

#[derive(Debug, Clone)]
struct StoredPassword {
    salt: String,
    /// The digest bytes: for apr1 the 22 crypt characters, for SHA-1 the 20 raw bytes.
    expected: Vec<u8>,
}

impl BasicAuth {
    /// `users` maps a user name to `(salt, hashedPassword)`; errors name the user.
    pub(crate) fn new(
        realm: &str,
        algorithm: Algorithm,
        users: impl IntoIterator<Item = (String, String, String)>,
    ) -> Result<Self, String> {
        let mut stored = BTreeMap::new();
        for (user, salt, hashed) in users {
            let expected = match algorithm {
                Algorithm::Apr1 => {
                    if hashed.len() != 22 {
                        return Err(format!(
                            "users[{user:?}].hashedPassword: expected the 22 characters after `$apr1$<salt>$`"
                        ));
                    }
                    hashed.into_bytes()
                }
                Algorithm::Sha1 => decode_sha1(&hashed).ok_or_else(|| {
                    format!("users[{user:?}].hashedPassword: expected a SHA-1 digest in hex (40 characters) or base64")
                })?,
            };
            stored.insert(user, StoredPassword { salt, expected });
        }
        Ok(BasicAuth {
            realm: realm.to_string(),
            algorithm,
            users: stored,
        })
    }

    pub fn check(&self, input: &CheckInput) -> Outcome {
        let Some((user, password)) = credentials(input) else {
            return self.challenge();
        };
        let (stored, known) = match self.users.get(&user) {
            Some(stored) => (stored, true),
            // Hash anyway so the answer takes as long for unknown users as for known ones.
            None => (&UNKNOWN, false),
        };
        let computed = match self.algorithm {
            Algorithm::Apr1 => apr1_hash(password.as_bytes(), stored.salt.as_bytes()).into_bytes(),
            Algorithm::Sha1 => {
                let salted = [stored.salt.as_bytes(), password.as_bytes()].concat();
                ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &salted)
                    .as_ref()
                    .to_vec()
            }
        };
        if known && constant_time_eq(&computed, &stored.expected) {
            Outcome::Allow {
                upstream_headers: vec![("x-user-id".to_string(), user)],
            }
        } else {
            self.challenge()
        }
    }

    /// 401 with the header that makes a browser ask for a password.
    fn challenge(&self) -> Outcome {
        let realm = self.realm.replace(['"', '\\'], "");
        Outcome::Deny {
            status: 401,
            headers: vec![("www-authenticate".to_string(), format!("Basic realm=\"{realm}\""))],
            body: String::new(),
        }
    }
}

static UNKNOWN: StoredPassword = StoredPassword {
    salt: String::new(),
    expected: Vec::new(),
};

/// `(user, password)` from `Authorization: Basic base64(user:password)`, or None if malformed.
fn credentials(input: &CheckInput) -> Option<(String, String)> {
    let value = header(input, "authorization")?.trim();
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") || encoded.len() > 4096 {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// Compares without an early exit, so timing does not tell how many leading bytes matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn decode_sha1(text: &str) -> Option<Vec<u8>> {
    let text = text.strip_prefix("{SHA}").unwrap_or(text);
    let bytes = if text.len() == 40 {
        (0..40)
            .step_by(2)
            .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
            .collect::<Option<Vec<u8>>>()?
    } else {
        base64::engine::general_purpose::STANDARD.decode(text).ok()?
    };
    (bytes.len() == 20).then_some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(authorization: Option<&str>) -> CheckInput {
        let mut input = CheckInput::default();
        if let Some(value) = authorization {
            input.headers.insert("authorization".into(), value.into());
        }
        input
    }

    fn basic(user_password: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_password)
        )
    }

    fn sha1_hex(data: &str) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, data.as_bytes());
        digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn apr1_allows_the_right_password_only() {
        let auth = BasicAuth::new(
            "gloo",
            Algorithm::Apr1,
            [("user".into(), "TYiryv0/".into(), "8BvzLUO9IfGPGGsPnAgSu1".into())],
        )
        .unwrap();
        let cases = [
            (Some(basic("user:password")), true),
            (Some(basic("user:wrong")), false),
            (Some(basic("nobody:password")), false),
            (Some(basic("userpassword")), false),
            (Some("Basic !!!not-base64".to_string()), false),
            (Some("Bearer abc".to_string()), false),
            (Some(format!("Basic {}", "A".repeat(100_000))), false),
            (None, false),
        ];
        for (authorization, allowed) in cases {
            let outcome = auth.check(&request(authorization.as_deref()));
            assert_eq!(outcome.is_allow(), allowed, "{authorization:?}");
            if allowed {
                assert_eq!(
                    outcome,
                    Outcome::Allow {
                        upstream_headers: vec![("x-user-id".into(), "user".into())]
                    }
                );
            } else {
                assert_eq!(
                    outcome,
                    Outcome::Deny {
                        status: 401,
                        headers: vec![("www-authenticate".into(), "Basic realm=\"gloo\"".into())],
                        body: String::new()
                    }
                );
            }
        }
    }

    #[test]
    fn sha1_accepts_hex_base64_and_htpasswd_sha() {
        let hex = sha1_hex("pepperpassword");
        let raw = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, b"pepperpassword");
        let b64 = base64::engine::general_purpose::STANDARD.encode(raw.as_ref());
        // htpasswd -s: {SHA}base64(sha1(password)), no salt.
        let htpasswd = "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=";
        for (salt, stored, password) in [
            ("pepper", hex.as_str(), "password"),
            ("pepper", &b64, "password"),
            ("", htpasswd, "password"),
        ] {
            let auth = BasicAuth::new("r", Algorithm::Sha1, [("alice".into(), salt.into(), stored.into())]).unwrap();
            assert!(
                auth.check(&request(Some(&basic(&format!("alice:{password}")))))
                    .is_allow(),
                "{stored}"
            );
            assert!(
                !auth.check(&request(Some(&basic("alice:other")))).is_allow(),
                "{stored}"
            );
        }
    }

    #[test]
    fn rejects_stored_hashes_of_the_wrong_shape() {
        assert!(BasicAuth::new("r", Algorithm::Apr1, [("a".into(), "s".into(), "short".into())]).is_err());
        assert!(BasicAuth::new("r", Algorithm::Sha1, [("a".into(), "s".into(), "zz".into())]).is_err());
    }
}
