//! API keys: the key in a request header, looked up by its SHA-256 among the keys the
//! management server resolved from Secrets. The service never holds the keys themselves.

use std::collections::BTreeMap;

use crate::{CheckInput, Outcome, header};

/// What the 401 for a missing or unknown API key says in `www-authenticate`.
pub(crate) const API_KEY_CHALLENGE: &str = "API key is missing or invalid";

/// A compiled `apiKeyAuth` config.
#[derive(Debug, Clone)]
pub struct ApiKeyAuth {
    header_name: String,
    /// SHA-256 of the key -> its metadata.
    keys: BTreeMap<[u8; 32], BTreeMap<String, String>>,
    /// Upstream header -> (metadata entry, required).
    headers_from_metadata: Vec<(String, String, bool)>,
}

impl ApiKeyAuth {
    /// The upstream headers this config can set.
    pub(crate) fn header_names(&self) -> impl Iterator<Item = String> + '_ {
        self.headers_from_metadata.iter().map(|(header, _, _)| header.clone())
    }

    pub(crate) fn new(
        header_name: Option<&str>,
        keys: impl IntoIterator<Item = (String, BTreeMap<String, String>)>,
        headers_from_metadata: Vec<(String, String, bool)>,
    ) -> Result<Self, String> {
        let mut by_hash = BTreeMap::new();
        for (index, (sha256, metadata)) in keys.into_iter().enumerate() {
            let digest = decode_sha256(&sha256)
                .ok_or_else(|| format!("keys[{index}].sha256: expected 64 hex characters (the SHA-256 of the key)"))?;
            by_hash.insert(digest, metadata);
        }
        let header_name = header_name
            .filter(|h| !h.is_empty())
            .unwrap_or("api-key")
            .to_ascii_lowercase();
        Ok(ApiKeyAuth {
            header_name,
            keys: by_hash,
            headers_from_metadata,
        })
    }

    /// The refusal Gloo's ext-auth service sends for a missing or unknown key (its API-key
    /// guide shows this `www-authenticate` value); the same for both, by design.
    fn refuse() -> Outcome {
        Outcome::Deny {
            status: 401,
            headers: vec![("www-authenticate".to_string(), API_KEY_CHALLENGE.to_string())],
            body: String::new(),
        }
    }

    pub fn check(&self, input: &CheckInput) -> Outcome {
        // One answer for a missing and a wrong key: the client learns nothing about which.
        let Some(presented) = header(input, &self.header_name)
            .map(str::trim)
            .filter(|k| !k.is_empty())
        else {
            return Self::refuse();
        };
        let digest = ring::digest::digest(&ring::digest::SHA256, presented.as_bytes());
        // A map lookup by a hash of the key leaks nothing useful through timing: an attacker
        // would need SHA-256 preimages to steer it.
        let Some(metadata) = <[u8; 32]>::try_from(digest.as_ref())
            .ok()
            .and_then(|d| self.keys.get(&d))
        else {
            return Self::refuse();
        };
        let mut upstream_headers = Vec::new();
        for (upstream, entry, required) in &self.headers_from_metadata {
            match metadata.get(entry) {
                Some(value) => upstream_headers.push((upstream.clone(), value.clone())),
                None if *required => return Self::refuse(),
                None => {}
            }
        }
        Outcome::Allow { upstream_headers }
    }
}

fn decode_sha256(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use trellis_base::sha256_hex;

    use super::*;

    fn request(header: &str, value: Option<&str>) -> CheckInput {
        let mut input = CheckInput::default();
        if let Some(value) = value {
            input.headers.insert(header.into(), value.into());
        }
        input
    }

    #[test]
    fn allows_known_keys_and_forwards_their_metadata() {
        let auth = ApiKeyAuth::new(
            Some("X-Api-Key"),
            [
                (
                    sha256_hex(b"k-alice"),
                    BTreeMap::from([("user".to_string(), "alice".to_string())]),
                ),
                (sha256_hex(b"k-bob"), BTreeMap::new()),
            ],
            vec![("x-user-id".into(), "user".into(), false)],
        )
        .unwrap();
        let cases = [
            (
                Some("k-alice"),
                Some(vec![("x-user-id".to_string(), "alice".to_string())]),
            ),
            (Some("k-bob"), Some(vec![])),
            (Some("k-eve"), None),
            (Some(""), None),
            (None, None),
        ];
        for (key, expected) in cases {
            let outcome = auth.check(&request("x-api-key", key));
            match expected {
                Some(upstream_headers) => assert_eq!(outcome, Outcome::Allow { upstream_headers }, "{key:?}"),
                None => assert_eq!(
                    outcome,
                    Outcome::Deny {
                        status: 401,
                        headers: vec![("www-authenticate".into(), API_KEY_CHALLENGE.into())],
                        body: String::new(),
                    },
                    "{key:?}"
                ),
            }
        }
    }

    #[test]
    fn denies_keys_missing_a_required_metadata_entry() {
        let auth = ApiKeyAuth::new(
            None,
            [(sha256_hex(b"k"), BTreeMap::new())],
            vec![("x-org".into(), "org".into(), true)],
        )
        .unwrap();
        assert_eq!(auth.check(&request("api-key", Some("k"))), ApiKeyAuth::refuse());
    }

    #[test]
    fn rejects_keys_that_are_not_sha256_hex() {
        assert!(ApiKeyAuth::new(None, [("abc".to_string(), BTreeMap::new())], vec![]).is_err());
    }
}
