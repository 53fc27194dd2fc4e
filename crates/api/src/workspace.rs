//! `admin.gloo.solo.io/v2`: KubernetesCluster, Workspace and WorkspaceSettings.
//!
//! Fields Trellis does not act on yet (east-west gateway options, client modes) are kept as opaque JSON so a Gloo user's YAML loads and
//! round-trips unchanged; misspelled field names are still rejected.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::common::{ObjectSelector, PortSelector};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubernetesClusterSpec {
    /// Defaults to `cluster.local`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cluster_domain: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip_warming: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkspaceSpec {
    #[serde(default)]
    pub workload_clusters: Vec<ClusterSelector>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
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

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamespaceSelector {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_enabled: Option<bool>,
}

/// `WorkspaceSettings`: what a workspace shares and takes from others, and its options.
/// Source: https://github.com/solo-io/solo-apis/blob/main/api/gloo.solo.io/admin/v2/workspace_settings.proto
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkspaceSettingsSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub import_from: Vec<WorkspaceObjectSelector>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<WorkspaceObjectSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<WorkspaceOptions>,
}

/// One `importFrom` / `exportTo` entry: the workspaces it names and, optionally, which of their
/// resources cross (none listed: every resource).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkspaceObjectSelector {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workspaces: Vec<WorkspaceSelector>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<TypedObjectSelector>,
}

/// A workspace by name (exact, `*` or `prefix*`) and/or by the labels of its Workspace resource;
/// both given: both must match.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkspaceSelector {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
}

/// Resources of one kind (or `ALL`), narrowed by labels, exact name, namespace and cluster.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TypedObjectSelector {
    #[serde(default)]
    pub kind: SharedKind,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cluster: String,
}

/// The kinds a workspace can share (`TypedObjectSelector.ObjectKind`; `ALL` is the default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SharedKind {
    #[default]
    All,
    RouteTable,
    Service,
    VirtualDestination,
    ExternalService,
    ApiDoc,
    GraphqlResolverMap,
    GraphqlSchema,
    GraphqlStitchedSchema,
    ExternalWorkload,
}

impl SharedKind {
    /// Kinds Trellis has resources of; the others select nothing.
    pub fn exists_in_trellis(self) -> bool {
        matches!(
            self,
            SharedKind::All
                | SharedKind::RouteTable
                | SharedKind::Service
                | SharedKind::VirtualDestination
                | SharedKind::ExternalService
        )
    }
}

/// `options`: the workspace as a whole. Fields Trellis does not act on stay opaque.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkspaceOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_isolation: Option<ServiceIsolation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub federation: Option<Federation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub east_west_gateways: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_dest_client_mode: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trim_all_proxy_config: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceIsolation {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trim_proxy_config: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforcement_layers: Option<Value>,
}

/// `options.federation`: a host name `<service>.<namespace>.<cluster>.<hostSuffix>` per selected
/// service, on the selected ports (none listed: every port).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Federation {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host_suffix: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_selector: Vec<ObjectSelector>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortSelector>,
}

impl ClusterSelector {
    pub fn selects_cluster(&self, cluster: &str) -> bool {
        self.name.is_empty() || self.name == "*" || self.name == cluster
    }
}
