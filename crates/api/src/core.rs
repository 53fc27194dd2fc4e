//! Kubernetes core `v1` ConfigMap and Secret, as Gloo's auth configs reference them: Rego
//! modules in ConfigMaps, API keys and OIDC client secrets in Secrets.
//!
//! Their content sits at the top level of the document (`data`, `stringData`, `type`), not under
//! `spec`; parsing gathers those fields into the spec and serializing puts them back.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The top-level fields that hold a ConfigMap's or Secret's content.
pub(crate) const CONTENT_FIELDS: [&str; 5] = ["data", "stringData", "binaryData", "type", "immutable"];

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigMapSpec {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immutable: Option<bool>,
}

/// Values are kept decoded; `data` (base64) and `stringData` (plain) both land in `data`.
/// Debug output never shows them.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretSpec {
    #[serde(default, rename = "type", skip_serializing_if = "String::is_empty")]
    pub secret_type: String,
    /// Base64, as in Kubernetes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub string_data: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immutable: Option<bool>,
}

impl fmt::Debug for SecretSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<&String> = self.data.keys().chain(self.string_data.keys()).collect();
        f.debug_struct("SecretSpec")
            .field("type", &self.secret_type)
            .field("keys", &keys)
            .finish_non_exhaustive()
    }
}

impl SecretSpec {
    /// One value, decoded: `stringData` wins over `data`, as in Kubernetes. `None` when absent
    /// or when `data` holds invalid base64 (validation rejects that at apply time).
    pub fn value(&self, key: &str) -> Option<String> {
        if let Some(value) = self.string_data.get(key) {
            return Some(value.clone());
        }
        let encoded = self.data.get(key)?;
        let bytes = decode_base64(encoded)?;
        String::from_utf8(bytes).ok()
    }

    /// Every key with its decoded value.
    pub fn values(&self) -> BTreeMap<String, String> {
        let mut all: BTreeMap<String, String> = BTreeMap::new();
        for key in self.data.keys().chain(self.string_data.keys()) {
            if let Some(value) = self.value(key) {
                all.insert(key.clone(), value);
            }
        }
        all
    }

    /// The same secret with every value replaced, for output to people.
    pub fn redacted(&self) -> SecretSpec {
        let hide = |map: &BTreeMap<String, String>| map.keys().map(|k| (k.clone(), "<redacted>".to_string())).collect();
        SecretSpec {
            secret_type: self.secret_type.clone(),
            data: hide(&self.data),
            string_data: hide(&self.string_data),
            immutable: self.immutable,
        }
    }
}

/// Standard base64 with padding optional and whitespace ignored (as YAML folds long values).
pub fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let mut bits: u32 = 0;
    let mut count = 0;
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    for c in text.bytes() {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            b' ' | b'\n' | b'\r' | b'\t' => continue,
            _ => return None,
        };
        bits = (bits << 6) | u32::from(value);
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_base64_with_and_without_padding() {
        assert_eq!(decode_base64("c2VjcmV0").unwrap(), b"secret");
        assert_eq!(decode_base64("YWI=").unwrap(), b"ab");
        assert_eq!(decode_base64("YWI").unwrap(), b"ab");
        assert_eq!(decode_base64("YW\nI=").unwrap(), b"ab");
        assert!(decode_base64("not*base64").is_none());
    }

    #[test]
    fn string_data_wins_and_debug_hides_values() {
        let secret = SecretSpec {
            data: BTreeMap::from([
                ("api-key".into(), "c2VjcmV0".into()),
                ("user".into(), "YWxpY2U=".into()),
            ]),
            string_data: BTreeMap::from([("user".into(), "bob".into())]),
            ..Default::default()
        };
        assert_eq!(secret.value("api-key").as_deref(), Some("secret"));
        assert_eq!(secret.value("user").as_deref(), Some("bob"));
        let debug = format!("{secret:?}");
        assert!(!debug.contains("c2VjcmV0") && !debug.contains("bob"), "{debug}");
        assert!(!serde_json::to_string(&secret.redacted()).unwrap().contains("c2VjcmV0"));
    }
}
