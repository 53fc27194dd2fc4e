//! Who may do what on the management API, decided the way Kubernetes RBAC decides it: rules in
//! Roles and ClusterRoles, granted to users and groups by RoleBindings (in their namespace) and
//! ClusterRoleBindings (everywhere). Nothing is allowed unless a rule allows it.
//!
//! Trellis adds two things:
//! - the personas as built-in ClusterRoles ([`ADMIN_ROLE`], [`WORKSPACE_OPERATOR_ROLE`],
//!   [`VIEWER_ROLE`]) and one built-in binding: the group [`ADMINS_GROUP`] is admin;
//! - a ClusterRoleBinding annotated `trellis.io/workspace: NAME` grants only in the namespaces
//!   that workspace owns, so "operator of workspace team-a" is one binding that follows the
//!   Workspace as its namespaces change.
//!
//! Pure: the caller says which workspace owns a namespace.

mod builtin;

use std::collections::BTreeMap;

use trellis_api::{PolicyRule, Resource, RoleBindingSpec, Spec};

pub use builtin::{ADMIN_ROLE, ADMINS_GROUP, VIEWER_ROLE, WORKSPACE_OPERATOR_ROLE, is_builtin};

/// The annotation that scopes a ClusterRoleBinding to one workspace's namespaces.
pub const WORKSPACE_ANNOTATION: &str = "trellis.io/workspace";

/// Who is asking, as their credential names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

/// What they ask to do: `verb` on `resource` (lower-case plural) of API `group`, in `namespace`
/// (`None`: cluster-scoped), optionally one object by `name`.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub verb: &'a str,
    pub group: &'a str,
    pub resource: &'a str,
    pub namespace: Option<&'a str>,
    pub name: Option<&'a str>,
}

impl Request<'_> {
    /// `create routetables.networking.gloo.solo.io in namespace team-a`.
    pub fn describe(&self) -> String {
        let what = if self.group.is_empty() {
            self.resource.to_string()
        } else {
            format!("{}.{}", self.resource, self.group)
        };
        match self.namespace {
            Some(namespace) => format!("{} {what} in namespace {namespace}", self.verb),
            None => format!("{} {what} (cluster-wide)", self.verb),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed, and by which binding (for the audit log).
    Allow { by: String },
    /// Refused: the message names the user, the request and what would grant it.
    Deny { reason: String },
}

struct Binding {
    /// `RoleBinding/ns/name` or `ClusterRoleBinding/name`.
    name: String,
    /// The namespace a RoleBinding grants in; `None` for a ClusterRoleBinding.
    namespace: Option<String>,
    /// For a ClusterRoleBinding scoped to one workspace.
    workspace: Option<String>,
    spec: RoleBindingSpec,
}

/// The RBAC objects of one moment of the store, with the built-ins added.
pub struct Policy {
    roles: BTreeMap<(String, String), Vec<PolicyRule>>,
    cluster_roles: BTreeMap<String, Vec<PolicyRule>>,
    bindings: Vec<Binding>,
}

impl Policy {
    pub fn from_resources<'a>(resources: impl IntoIterator<Item = &'a Resource>) -> Policy {
        let mut policy = Policy {
            roles: BTreeMap::new(),
            cluster_roles: builtin::cluster_roles(),
            bindings: vec![builtin::admins_binding()],
        };
        for resource in resources {
            let meta = &resource.metadata;
            match &resource.spec {
                Spec::Role(spec) => {
                    policy
                        .roles
                        .insert((meta.namespace.clone(), meta.name.clone()), spec.rules.clone());
                }
                // A stored ClusterRole never replaces a built-in one (the API refuses them too).
                Spec::ClusterRole(spec) if !is_builtin(&meta.name) => {
                    policy.cluster_roles.insert(meta.name.clone(), spec.rules.clone());
                }
                Spec::RoleBinding(spec) => policy.bindings.push(Binding {
                    name: format!("RoleBinding/{}/{}", meta.namespace, meta.name),
                    namespace: Some(meta.namespace.clone()),
                    workspace: None,
                    spec: spec.clone(),
                }),
                Spec::ClusterRoleBinding(spec) => policy.bindings.push(Binding {
                    name: format!("ClusterRoleBinding/{}", meta.name),
                    namespace: None,
                    workspace: meta.annotations.get(WORKSPACE_ANNOTATION).cloned(),
                    spec: spec.clone(),
                }),
                _ => {}
            }
        }
        policy
    }

    /// Decides `request` for `user`. `workspace_of(namespace)` names the workspace owning a
    /// namespace, for workspace-scoped bindings.
    pub fn authorize(&self, user: &User, request: &Request, workspace_of: &dyn Fn(&str) -> Option<String>) -> Decision {
        for binding in &self.bindings {
            if !binds(&binding.spec, user) || !in_scope(binding, request, workspace_of) {
                continue;
            }
            let rules = match (binding.spec.role_ref.kind.as_str(), &binding.namespace) {
                ("Role", Some(namespace)) => self.roles.get(&(namespace.clone(), binding.spec.role_ref.name.clone())),
                ("ClusterRole", _) => self.cluster_roles.get(&binding.spec.role_ref.name),
                _ => None,
            };
            if rules.is_some_and(|rules| rules.iter().any(|rule| allows(rule, request))) {
                return Decision::Allow {
                    by: format!(
                        "{} ({} {})",
                        binding.name, binding.spec.role_ref.kind, binding.spec.role_ref.name
                    ),
                };
            }
        }
        let groups = if user.groups.is_empty() {
            "no groups".to_string()
        } else {
            format!("groups {}", user.groups.join(", "))
        };
        let grant = match request.namespace {
            Some(namespace) => format!(
                "a Role in {namespace} or a ClusterRole, bound to the user or a group by a RoleBinding in {namespace} or a ClusterRoleBinding"
            ),
            None => "a ClusterRole bound by a ClusterRoleBinding without a workspace scope".to_string(),
        };
        Decision::Deny {
            reason: format!(
                "user {:?} ({groups}) may not {}: missing permission {:?} on {:?} in API group {:?}; grant it with {grant}",
                user.name,
                request.describe(),
                request.verb,
                request.resource,
                request.group
            ),
        }
    }
}

impl Policy {
    /// The rules a binding's `roleRef` names, seen from `namespace` (a Role is looked up there).
    pub fn rules_of(&self, role_ref: &trellis_api::RoleRef, namespace: Option<&str>) -> Vec<PolicyRule> {
        match (role_ref.kind.as_str(), namespace) {
            ("Role", Some(namespace)) => self
                .roles
                .get(&(namespace.to_string(), role_ref.name.clone()))
                .cloned()
                .unwrap_or_default(),
            ("ClusterRole", _) => self.cluster_roles.get(&role_ref.name).cloned().unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    /// Kubernetes' escalation check: `user` may grant `rules` in `namespace` (`None`:
    /// everywhere) only if it holds every permission they give there itself. Without it,
    /// whoever may edit one binding could point it at `trellis-admin`. `universe` is every
    /// (API group, resource) the API serves, against which wildcards expand.
    pub fn covers(
        &self,
        user: &User,
        rules: &[PolicyRule],
        namespace: Option<&str>,
        universe: &[(&str, &str)],
        workspace_of: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), String> {
        for rule in rules {
            for verb in trellis_api::VERBS.iter().filter(|v| matches(&rule.verbs, v)) {
                let targets = universe
                    .iter()
                    .filter(|(group, resource)| matches(&rule.api_groups, group) && matches(&rule.resources, resource));
                for (group, resource) in targets {
                    let names: Vec<Option<&str>> = if rule.resource_names.is_empty() {
                        vec![None]
                    } else {
                        rule.resource_names.iter().map(|n| Some(n.as_str())).collect()
                    };
                    for name in names {
                        let request = Request {
                            verb,
                            group,
                            resource,
                            namespace,
                            name,
                        };
                        if let Decision::Deny { .. } = self.authorize(user, &request, workspace_of) {
                            return Err(format!(
                                "user {:?} may not grant what it does not hold: {}",
                                user.name,
                                request.describe()
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

fn binds(spec: &RoleBindingSpec, user: &User) -> bool {
    spec.subjects.iter().any(|subject| match subject.kind.as_str() {
        "User" => subject.name == user.name,
        "Group" => user.groups.contains(&subject.name),
        "ServiceAccount" => user.name == format!("system:serviceaccount:{}:{}", subject.namespace, subject.name),
        _ => false,
    })
}

fn in_scope(binding: &Binding, request: &Request, workspace_of: &dyn Fn(&str) -> Option<String>) -> bool {
    match (&binding.namespace, &binding.workspace, request.namespace) {
        // A RoleBinding grants in its own namespace, never cluster-wide.
        (Some(namespace), _, Some(requested)) => namespace == requested,
        (Some(_), _, None) => false,
        (None, None, _) => true,
        (None, Some(workspace), Some(requested)) => workspace_of(requested).as_deref() == Some(workspace.as_str()),
        (None, Some(_), None) => false,
    }
}

fn matches(list: &[String], value: &str) -> bool {
    list.iter().any(|item| item == "*" || item == value)
}

fn allows(rule: &PolicyRule, request: &Request) -> bool {
    matches(&rule.verbs, request.verb)
        && matches(&rule.api_groups, request.group)
        && matches(&rule.resources, request.resource)
        && (rule.resource_names.is_empty() || request.name.is_some_and(|name| matches(&rule.resource_names, name)))
}

#[cfg(test)]
mod tests;
