//! Selectors and references shared by several kinds (`common.gloo.solo.io/v2`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Selects objects by labels and/or location; empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cluster: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub workspace: String,
}

/// Points at one object; empty namespace or cluster means "the referrer's".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectReference {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cluster: String,
}

/// A port given by number or by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DestinationKind {
    #[default]
    Service,
    VirtualDestination,
    ExternalService,
}

impl DestinationKind {
    /// The name as YAML spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            DestinationKind::Service => "SERVICE",
            DestinationKind::VirtualDestination => "VIRTUAL_DESTINATION",
            DestinationKind::ExternalService => "EXTERNAL_SERVICE",
        }
    }
}

/// A weighted destination of a route (`forwardTo.destinations[]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DestinationReference {
    #[serde(default, rename = "ref")]
    pub reference: ObjectReference,
    #[serde(default)]
    pub kind: DestinationKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortSelector>,
    /// Only endpoints whose labels include all of these.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub subset: BTreeMap<String, String>,
    /// Relative weight; unset weights count as 0 unless all are unset, then traffic is split evenly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

impl ObjectSelector {
    /// True when every given field of the selector agrees with the object.
    pub fn matches(&self, labels: &BTreeMap<String, String>, name: &str, namespace: &str, cluster: &str) -> bool {
        self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && (self.name.is_empty() || self.name == name)
            && (self.namespace.is_empty() || self.namespace == namespace)
            && (self.cluster.is_empty() || self.cluster == cluster)
    }
}
