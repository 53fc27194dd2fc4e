//! `admin.gloo.solo.io/v2`: KubernetesCluster, Workspace and WorkspaceSettings.
//!
//! Fields Trellis does not act on yet are kept as opaque JSON so a Gloo user's YAML loads and
//! round-trips unchanged; misspelled field names are still rejected.

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubernetesClusterSpec {
    /// Defaults to `cluster.local`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cluster_domain: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip_warming: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkspaceSpec {
    #[serde(default)]
    pub workload_clusters: Vec<ClusterSelector>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterSelector {
    /// Cluster name, `*` for all.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default)]
    pub namespaces: Vec<NamespaceSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_enabled: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamespaceSelector {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_enabled: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkspaceSettingsSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub import_from: Vec<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Value>,
}

impl ClusterSelector {
    pub fn selects_cluster(&self, cluster: &str) -> bool {
        self.name.is_empty() || self.name == "*" || self.name == cluster
    }
}
