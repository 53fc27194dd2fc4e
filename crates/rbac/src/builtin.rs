//! The personas of a mesh team as ClusterRoles every Trellis server has, and the one binding
//! that makes the admin credential an admin.

use std::collections::BTreeMap;

use trellis_api::{PolicyRule, RoleBindingSpec, RoleRef, Subject};

use crate::Binding;

/// Everything, everywhere.
pub const ADMIN_ROLE: &str = "trellis-admin";
/// Edits mesh config (routes, destinations, policies, add-on config, ConfigMaps and Secrets) and
/// reads workspaces and clusters; bound with the workspace annotation, only in that workspace.
pub const WORKSPACE_OPERATOR_ROLE: &str = "trellis-workspace-operator";
/// Reads mesh config, checks and insights; never Secrets, tokens, RBAC, the audit log or
/// insight silences (silencing is an admin's decision).
pub const VIEWER_ROLE: &str = "trellis-viewer";
/// The group of the generated admin token's user.
pub const ADMINS_GROUP: &str = "trellis:admins";

const GLOO_CONFIG_GROUPS: [&str; 6] = [
    "networking.gloo.solo.io",
    "security.policy.gloo.solo.io",
    "resilience.policy.gloo.solo.io",
    "trafficcontrol.policy.gloo.solo.io",
    "observability.policy.gloo.solo.io",
    "extensions.policy.gloo.solo.io",
];
const EDIT: [&str; 6] = ["get", "list", "watch", "create", "update", "delete"];
const READ: [&str; 3] = ["get", "list", "watch"];

pub fn is_builtin(name: &str) -> bool {
    [ADMIN_ROLE, WORKSPACE_OPERATOR_ROLE, VIEWER_ROLE].contains(&name)
}

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    let owned = |list: &[&str]| list.iter().map(|s| s.to_string()).collect();
    PolicyRule {
        api_groups: owned(groups),
        resources: owned(resources),
        verbs: owned(verbs),
        ..Default::default()
    }
}

pub(crate) fn cluster_roles() -> BTreeMap<String, Vec<PolicyRule>> {
    let admin = vec![rule(&["*"], &["*"], &["*"])];
    let operator = vec![
        rule(&GLOO_CONFIG_GROUPS, &["*"], &EDIT),
        rule(
            &["admin.gloo.solo.io"],
            &[
                "workspacesettings",
                "extauthservers",
                "ratelimitserverconfigs",
                "ratelimitserversettings",
            ],
            &EDIT,
        ),
        rule(&[""], &["configmaps", "secrets"], &EDIT),
        rule(&["admin.gloo.solo.io"], &["workspaces", "kubernetesclusters"], &READ),
    ];
    let mut viewer_groups = GLOO_CONFIG_GROUPS.to_vec();
    viewer_groups.push("admin.gloo.solo.io");
    let viewer = vec![
        rule(&viewer_groups, &["*"], &READ),
        rule(&[""], &["configmaps"], &READ),
        rule(&["trellis.io"], &["checks", "clusters", "insights", "metrics"], &READ),
    ];
    BTreeMap::from([
        (ADMIN_ROLE.to_string(), admin),
        (WORKSPACE_OPERATOR_ROLE.to_string(), operator),
        (VIEWER_ROLE.to_string(), viewer),
    ])
}

pub(crate) fn admins_binding() -> Binding {
    Binding {
        name: "ClusterRoleBinding/trellis-admins (built in)".into(),
        namespace: None,
        workspace: None,
        spec: RoleBindingSpec {
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "ClusterRole".into(),
                name: ADMIN_ROLE.into(),
            },
            subjects: vec![Subject {
                kind: "Group".into(),
                name: ADMINS_GROUP.into(),
                ..Default::default()
            }],
        },
    }
}
