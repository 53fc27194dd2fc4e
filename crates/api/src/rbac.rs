//! Kubernetes RBAC (`rbac.authorization.k8s.io/v1`): Role, ClusterRole, RoleBinding and
//! ClusterRoleBinding, as the management API enforces them on its callers.
//!
//! As in Kubernetes their content sits at the top level of the document (`rules`, `roleRef`,
//! `subjects`), not under `spec`. ClusterRoles and ClusterRoleBindings are cluster-scoped: they
//! are kept in the admin namespace whatever the document says.

use serde::{Deserialize, Serialize};

/// The top-level fields that hold an RBAC object's content.
pub(crate) const CONTENT_FIELDS: [&str; 4] = ["rules", "aggregationRule", "roleRef", "subjects"];

/// A Role's or ClusterRole's rules.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoleSpec {
    #[serde(default)]
    pub rules: Vec<PolicyRule>,
}

/// What a rule allows: `verbs` on `resources` (lower-case plurals such as `routetables`) of
/// `apiGroups` (`networking.gloo.solo.io`; `""` is the core group), optionally only the named
/// objects. `*` matches anything in each list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyRule {
    #[serde(default)]
    pub api_groups: Vec<String>,
    #[serde(default)]
    pub resources: Vec<String>,
    pub verbs: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_names: Vec<String>,
    /// Accepted so that Kubernetes ClusterRoles load; Trellis has no non-resource URLs to grant.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub non_resource_urls: Vec<String>,
}

/// A RoleBinding's or ClusterRoleBinding's content.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoleBindingSpec {
    pub role_ref: RoleRef,
    #[serde(default)]
    pub subjects: Vec<Subject>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoleRef {
    #[serde(default)]
    pub api_group: String,
    /// `Role` (a RoleBinding only) or `ClusterRole`.
    pub kind: String,
    pub name: String,
}

/// Who a binding grants to: a `User` or `Group` as the credential names them. `ServiceAccount`
/// subjects are accepted and match the user `system:serviceaccount:<namespace>:<name>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Subject {
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_group: String,
}

/// The verbs the API enforces.
pub const VERBS: [&str; 6] = ["get", "list", "watch", "create", "update", "delete"];

pub(crate) fn validate_rules(problems: &mut Vec<(String, String)>, spec: &RoleSpec) {
    for (i, rule) in spec.rules.iter().enumerate() {
        if rule.verbs.is_empty() {
            problems.push((format!("rules[{i}].verbs"), "must name at least one verb".into()));
        }
        for (j, verb) in rule.verbs.iter().enumerate() {
            if verb != "*" && !VERBS.contains(&verb.as_str()) && !KNOWN_OTHER_VERBS.contains(&verb.as_str()) {
                problems.push((
                    format!("rules[{i}].verbs[{j}]"),
                    format!("unknown verb {verb:?} (expected one of {}, or *)", VERBS.join(", ")),
                ));
            }
        }
        if rule.resources.is_empty() && rule.non_resource_urls.is_empty() {
            problems.push((
                format!("rules[{i}].resources"),
                "must name at least one resource, or *".into(),
            ));
        }
    }
}

/// Kubernetes verbs that load (ClusterRoles copied from a cluster) but grant nothing here.
const KNOWN_OTHER_VERBS: [&str; 5] = ["patch", "deletecollection", "impersonate", "bind", "escalate"];

pub(crate) fn validate_binding(problems: &mut Vec<(String, String)>, spec: &RoleBindingSpec, cluster_scoped: bool) {
    let kinds: &[&str] = if cluster_scoped {
        &["ClusterRole"]
    } else {
        &["Role", "ClusterRole"]
    };
    if !kinds.contains(&spec.role_ref.kind.as_str()) {
        problems.push((
            "roleRef.kind".into(),
            format!("{:?}: expected {}", spec.role_ref.kind, kinds.join(" or ")),
        ));
    }
    if spec.role_ref.name.is_empty() {
        problems.push(("roleRef.name".into(), "is required".into()));
    }
    if !spec.role_ref.api_group.is_empty() && spec.role_ref.api_group != "rbac.authorization.k8s.io" {
        problems.push((
            "roleRef.apiGroup".into(),
            format!("{:?}: expected rbac.authorization.k8s.io", spec.role_ref.api_group),
        ));
    }
    for (i, subject) in spec.subjects.iter().enumerate() {
        if !["User", "Group", "ServiceAccount"].contains(&subject.kind.as_str()) {
            problems.push((
                format!("subjects[{i}].kind"),
                format!("{:?}: expected User, Group or ServiceAccount", subject.kind),
            ));
        }
        if subject.name.is_empty() {
            problems.push((format!("subjects[{i}].name"), "is required".into()));
        }
    }
}
