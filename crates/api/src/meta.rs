//! Object metadata, shaped like Kubernetes' so that Gloo YAML loads unchanged.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: String,
    /// Defaults to `default` when a document leaves it out.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Set by the server: bumped on every change of the spec, labels or annotations.
    #[serde(default, skip_serializing_if = "is_zero", deserialize_with = "lenient_u64")]
    pub generation: u64,
    /// Set by the server: the store revision of the last write to this resource.
    #[serde(default, skip_serializing_if = "is_zero", deserialize_with = "lenient_u64")]
    pub resource_version: u64,
    /// Set by the server: the store revision at which this resource was created; orders
    /// resources by age where the API says "the oldest wins".
    #[serde(default, skip_serializing_if = "is_zero", deserialize_with = "lenient_u64")]
    pub creation_revision: u64,
    /// Accepted for compatibility with `kubectl get -o yaml` output; ignored.
    #[serde(default, skip_serializing)]
    pub uid: Option<String>,
    #[serde(default, skip_serializing)]
    pub creation_timestamp: Option<String>,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

/// Kubernetes writes `resourceVersion` as a string; accept a number or a numeric string so that
/// `kubectl get -o yaml` output can be applied as is.
fn lenient_u64<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumberOrString {
        Number(u64),
        String(String),
    }
    match NumberOrString::deserialize(deserializer)? {
        NumberOrString::Number(n) => Ok(n),
        NumberOrString::String(s) => Ok(s.parse().unwrap_or(0)),
    }
}
