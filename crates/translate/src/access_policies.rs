//! AccessPolicy ─▶ inbound policies of the workloads it selects.
//!
//! - `applyToWorkloads[].selector` picks workloads by labels, namespace, cluster and workspace;
//!   `applyToDestinations[].selector` (kind SERVICE, the default) picks the workloads of the
//!   services it names; neither means every workload. Once Workspaces exist, a policy selects
//!   only workloads of its own workspace (the one owning its namespace), as Gloo documents:
//!   workload and destination selectors do not reach across workspaces, an empty selector means
//!   "all of the workspace", and a policy in no workspace selects nothing.
//! - `allowedClients[].serviceAccountSelector`: `name` + `namespace` is one identity; `namespace`
//!   alone all of that namespace; `labels` the service accounts of the workloads carrying them (in
//!   any cluster); `workspace` narrows each of these to that workspace's namespaces; an empty
//!   selector any mesh identity. An empty client (`allowedClients: [{}]`) allows every client.
//! - An authz entry with no condition at all (`authz: {}`) allows nothing: Gloo's (and Istio's)
//!   allow-nothing pattern, so the selected workloads deny every request.
//! - `allowedPaths`: `/exact`, `/prefix*`, `*suffix`. `allowedIpBlocks` and
//!   `allowedRemoteIpBlocks` both match the connection's peer address.
//! - `authzList` entries with `dryRun: true` are evaluated and counted, never enforced.

use std::collections::BTreeSet;

use trellis_api::{AccessPolicySpec, Authz, ObjectSelector, Spec, regex_escape};
use trellis_model::Snapshot;
use trellis_model::ir::{PathMatch, ValueMatch};
use trellis_model::policy::{AuthzRule, InboundPolicy, TlsMode};
use trellis_model::snapshot::Service;

use crate::Warnings;
use crate::report::Report;
use crate::workspaces::{PolicyScope, Workspaces};

/// A principal that no certificate carries: an `allowedClients` that selects nobody must not
/// turn into "anybody".
const NOBODY: &str = "spiffe://trellis.invalid/nobody";

fn path(pattern: &str) -> PathMatch {
    if let Some(prefix) = pattern.strip_suffix('*') {
        // `*` alone is every path; Envoy refuses an empty prefix.
        PathMatch::Prefix(if prefix.is_empty() { "/" } else { prefix }.to_string())
    } else if let Some(suffix) = pattern.strip_prefix('*') {
        PathMatch::Regex(format!(".*{}", regex_escape(suffix)))
    } else {
        PathMatch::Exact(pattern.to_string())
    }
}

fn principals(
    snapshot: &Snapshot,
    workspaces: &Workspaces,
    services: &[Service<'_>],
    selector: &ObjectSelector,
) -> Vec<String> {
    let td = &snapshot.trust_domain;
    // `workspace` narrows to the namespaces that workspace owns, in any cluster.
    let in_workspace = |cluster: &str, namespace: &str| {
        selector.workspace.is_empty()
            || workspaces.of(snapshot, cluster, namespace) == Some(selector.workspace.as_str())
    };
    if selector.labels.is_empty() && selector.name.is_empty() && !selector.workspace.is_empty() {
        let namespaces: BTreeSet<&str> = services
            .iter()
            .flat_map(|s| s.workloads.iter().map(move |w| (s.cluster, w)))
            .filter(|(cluster, _)| selector.cluster.is_empty() || selector.cluster == *cluster)
            .filter(|(_, w)| selector.namespace.is_empty() || selector.namespace == w.namespace)
            .filter(|(cluster, w)| in_workspace(cluster, &w.namespace))
            .map(|(_, w)| w.namespace.as_str())
            .collect();
        return namespaces
            .into_iter()
            .map(|ns| format!("spiffe://{td}/ns/{ns}/sa/"))
            .collect();
    }
    if selector.labels.is_empty() && selector.workspace.is_empty() {
        return match (selector.namespace.as_str(), selector.name.as_str()) {
            ("", "") => vec![format!("spiffe://{td}/")],
            (namespace, "") => vec![format!("spiffe://{td}/ns/{namespace}/sa/")],
            ("", name) => services
                .iter()
                .flat_map(|s| &s.workloads)
                .filter(|w| w.service_account == name)
                .map(|w| trellis_model::spiffe_id(td, &w.namespace, name))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
            (namespace, name) => vec![trellis_model::spiffe_id(td, namespace, name)],
        };
    }
    let ids: BTreeSet<String> = services
        .iter()
        .filter(|s| selector.cluster.is_empty() || selector.cluster == s.cluster)
        .flat_map(|s| s.workloads.iter().map(move |w| (s.cluster, w)))
        .filter(|(_, w)| selector.labels.iter().all(|(k, v)| w.labels.get(k) == Some(v)))
        .filter(|(_, w)| selector.namespace.is_empty() || selector.namespace == w.namespace)
        .filter(|(_, w)| selector.name.is_empty() || selector.name == w.service_account)
        .filter(|(cluster, w)| in_workspace(cluster, &w.namespace))
        .map(|(_, w)| trellis_model::spiffe_id(td, &w.namespace, &w.service_account))
        .collect();
    ids.into_iter().collect()
}

/// A header's `values` (or `notValues`) as one pattern: any of them, each exact or with a leading
/// or trailing `*` (a suffix or prefix match); `*` alone is any value.
fn header_values(values: &[String]) -> ValueMatch {
    let alternatives: Vec<String> = values
        .iter()
        .map(|v| {
            if v == "*" {
                ".*".to_string()
            } else if let Some(prefix) = v.strip_suffix('*') {
                format!("{}.*", regex_escape(prefix))
            } else if let Some(suffix) = v.strip_prefix('*') {
                format!(".*{}", regex_escape(suffix))
            } else {
                regex_escape(v)
            }
        })
        .collect();
    ValueMatch::Regex(format!("^({})$", alternatives.join("|")))
}

/// True when an authz entry sets no condition at all: Gloo's allow-nothing pattern.
fn allows_nothing(authz: &Authz) -> bool {
    authz.allowed_clients.is_empty()
        && authz.allowed_paths.is_empty()
        && authz.allowed_methods.is_empty()
        && authz.allowed_ip_blocks.is_empty()
        && authz.allowed_remote_ip_blocks.is_empty()
        && authz
            .matcher
            .as_ref()
            .and_then(|m| m.request.as_ref())
            .is_none_or(|r| r.headers.is_empty())
}

fn rule(
    snapshot: &Snapshot,
    workspaces: &Workspaces,
    services: &[Service<'_>],
    authz: &Authz,
    key: &str,
    index: usize,
    warnings: &mut Warnings,
) -> AuthzRule {
    if allows_nothing(authz) {
        return AuthzRule {
            principals: vec![NOBODY.to_string()],
            ..Default::default()
        };
    }
    let mut principal_ids = Vec::new();
    for (c, client) in authz.allowed_clients.iter().enumerate() {
        let empty = client.service_account_selector.is_none()
            && client.external_workload_selector.is_none()
            && client.request_identity_matcher.is_none();
        if empty {
            // "To allow access for all client identities, provide a single empty selector."
            principal_ids.push(format!("spiffe://{}/", snapshot.trust_domain));
            continue;
        }
        match &client.service_account_selector {
            Some(selector) => {
                let ids = principals(snapshot, workspaces, services, selector);
                if ids.is_empty() {
                    warnings.add(key, format!("spec.config.authzList[{index}].allowedClients[{c}] selects no service account yet"));
                }
                principal_ids.extend(ids);
            }
            None => warnings.add(key, format!("spec.config.authzList[{index}].allowedClients[{c}]: only serviceAccountSelector is supported; it allows nobody")),
        }
    }
    if !authz.allowed_clients.is_empty() && principal_ids.is_empty() {
        principal_ids.push(NOBODY.to_string());
    }
    let request = authz.matcher.as_ref().and_then(|m| m.request.as_ref());
    let header_rules = |pick: fn(&trellis_api::HeaderValues) -> &Vec<String>| -> Vec<(String, ValueMatch)> {
        request
            .map(|r| {
                r.headers
                    .iter()
                    .filter(|(_, values)| !pick(values).is_empty())
                    .map(|(name, values)| (name.clone(), header_values(pick(values))))
                    .collect()
            })
            .unwrap_or_default()
    };
    let headers = header_rules(|v| &v.values);
    let not_headers = header_rules(|v| &v.not_values);
    AuthzRule {
        principals: principal_ids,
        paths: authz.allowed_paths.iter().map(|p| path(p)).collect(),
        methods: authz.allowed_methods.clone(),
        headers,
        not_headers,
        ip_blocks: authz
            .allowed_ip_blocks
            .iter()
            .chain(&authz.allowed_remote_ip_blocks)
            .cloned()
            .collect(),
    }
}

/// One selection: workloads of `namespace` (empty: any), backing `service` (empty: any), carrying
/// all of `labels`.
pub(crate) type Selection = (String, String, std::collections::BTreeMap<String, String>);

/// Selections of one policy in one cluster, limited to what its scope may select.
fn selections(
    spec: &AccessPolicySpec,
    snapshot: &Snapshot,
    workspaces: &Workspaces,
    scope: &PolicyScope,
    cluster: &str,
) -> Vec<Selection> {
    // (selector, service name) pairs; the selector's own workspace narrows further.
    let mut raw: Vec<(ObjectSelector, bool)> = Vec::new();
    if !spec.apply_to_workloads.is_empty() {
        raw.extend(
            spec.apply_to_workloads
                .iter()
                .map(|w| (w.selector.clone().unwrap_or_default(), false)),
        );
    } else if !spec.apply_to_destinations.is_empty() {
        raw.extend(
            spec.apply_to_destinations
                .iter()
                .filter(|d| d.kind.as_deref().is_none_or(|k| k == "SERVICE"))
                .map(|d| (d.selector.clone().unwrap_or_default(), true)),
        );
    } else {
        raw.push((ObjectSelector::default(), false));
    }
    scoped_selections(raw, snapshot, workspaces, scope, cluster)
}

/// `(selector, by service)` pairs as the selections they make in one cluster, limited to what
/// a policy of `scope` may select: its own workspace's namespaces once Workspaces exist.
pub(crate) fn scoped_selections(
    raw: Vec<(ObjectSelector, bool)>,
    snapshot: &Snapshot,
    workspaces: &Workspaces,
    scope: &PolicyScope,
    cluster: &str,
) -> Vec<Selection> {
    let mut out = Vec::new();
    for (selector, by_service) in raw {
        if !selector.cluster.is_empty() && selector.cluster != cluster {
            continue;
        }
        let service = if by_service {
            selector.name.clone()
        } else {
            String::new()
        };
        let namespaces: Vec<String> = match scope {
            PolicyScope::Mesh if selector.workspace.is_empty() => vec![selector.namespace.clone()],
            PolicyScope::Nothing => Vec::new(),
            _ => {
                let wanted = match scope {
                    PolicyScope::Workspace(own) if selector.workspace.is_empty() || selector.workspace == *own => *own,
                    // Workload selectors do not reach across workspaces.
                    PolicyScope::Workspace(_) => continue,
                    _ => selector.workspace.as_str(),
                };
                workspaces
                    .namespaces_of_cluster(snapshot, cluster)
                    .into_iter()
                    .filter(|(ns, ws)| ws == wanted && (selector.namespace.is_empty() || selector.namespace == *ns))
                    .map(|(ns, _)| ns)
                    .collect()
            }
        };
        out.extend(
            namespaces
                .into_iter()
                .map(|ns| (ns, service.clone(), selector.labels.clone())),
        );
    }
    out
}

/// Whether the policy has authz at all, and its enforced and dry-run rules.
fn rules_of(
    spec: &AccessPolicySpec,
    snapshot: &Snapshot,
    workspaces: &Workspaces,
    services: &[Service<'_>],
    key: &str,
    warnings: &mut Warnings,
) -> (bool, Vec<AuthzRule>, Vec<AuthzRule>) {
    let list: Vec<&Authz> = match (&spec.config.authz_list, &spec.config.authz) {
        (Some(list), _) => list.iter().collect(),
        (None, Some(authz)) => vec![authz],
        (None, None) => Vec::new(),
    };
    let has_authz = spec.config.authz_list.is_some() || spec.config.authz.is_some();
    let (mut enforced, mut dry) = (Vec::new(), Vec::new());
    for (index, authz) in list.iter().enumerate() {
        let rule = rule(snapshot, workspaces, services, authz, key, index, warnings);
        if authz.dry_run {
            dry.push(rule)
        } else {
            enforced.push(rule)
        }
    }
    (has_authz, enforced, dry)
}

/// The AccessPolicies whose `applyToDestinations` select an ExternalService (kind
/// `EXTERNAL_SERVICE`, by name, namespace, labels and workspace, within the policy's own
/// workspace), as the egress gateway enforces them on the calling mesh identity.
pub(crate) fn for_external_service(
    snapshot: &Snapshot,
    workspaces: &Workspaces,
    services: &[Service<'_>],
    route: &crate::egress::EgressRoute,
    matched: &mut BTreeSet<(String, usize)>,
    report: &mut Report,
    warnings: &mut Warnings,
) -> Vec<InboundPolicy> {
    let owner = workspaces
        .of_config_namespace(snapshot, &route.namespace)
        .map(str::to_string);
    let mut out = Vec::new();
    for resource in &snapshot.resources {
        let Spec::AccessPolicy(spec) = &resource.spec else {
            continue;
        };
        if !spec.apply_to_workloads.is_empty() {
            continue;
        }
        let in_scope = match workspaces.scope_of_policy(snapshot, &resource.metadata.namespace) {
            PolicyScope::Mesh => true,
            PolicyScope::Workspace(own) => owner.as_deref() == Some(own),
            PolicyScope::Nothing => false,
        };
        let key = resource.key().to_string();
        let mut selects = false;
        for (i, d) in spec.apply_to_destinations.iter().enumerate() {
            let selector = d.selector.clone().unwrap_or_default();
            if in_scope
                && d.kind.as_deref() == Some("EXTERNAL_SERVICE")
                && (selector.name.is_empty() || selector.name == route.name)
                && (selector.namespace.is_empty() || selector.namespace == route.namespace)
                && (selector.workspace.is_empty() || owner.as_deref() == Some(selector.workspace.as_str()))
                && selector.labels.iter().all(|(k, v)| route.labels.get(k) == Some(v))
            {
                matched.insert((key.clone(), i));
                selects = true;
            }
        }
        if !selects {
            continue;
        }
        let (has_authz, enforced, dry) = rules_of(spec, snapshot, workspaces, services, &key, warnings);
        report.entry(&key).applied += 1;
        let name = format!("{}/{}", resource.metadata.namespace, resource.metadata.name);
        if has_authz && (!enforced.is_empty() || dry.is_empty()) {
            out.push(InboundPolicy {
                name: name.clone(),
                rules: Some(enforced),
                ..Default::default()
            });
        }
        if !dry.is_empty() {
            out.push(InboundPolicy {
                name,
                rules: Some(dry),
                dry_run: true,
                ..Default::default()
            });
        }
    }
    out
}

/// An `EXTERNAL_SERVICE` destination is enforced only where an egress gateway carries the
/// service: one that selected no such service (`matched`: policy key, destination index) is
/// said, not silently ignored.
pub(crate) fn warn_unenforced_external(
    snapshot: &Snapshot,
    matched: &BTreeSet<(String, usize)>,
    warnings: &mut Warnings,
) {
    for resource in &snapshot.resources {
        let Spec::AccessPolicy(spec) = &resource.spec else {
            continue;
        };
        let key = resource.key().to_string();
        for (i, d) in spec.apply_to_destinations.iter().enumerate() {
            if d.kind.as_deref() == Some("EXTERNAL_SERVICE") && !matched.contains(&(key.clone(), i)) {
                warnings.add(
                    &key,
                    format!(
                        "spec.applyToDestinations[{i}]: selects no ExternalService routed through an egress gateway \
                         (egressGatewayRoutes) in the policy's workspace; an EXTERNAL_SERVICE policy is enforced only \
                         there, so it has no effect"
                    ),
                );
            }
        }
    }
}

/// The inbound policies of one cluster, oldest AccessPolicy first.
pub(crate) fn for_cluster(
    snapshot: &Snapshot,
    workspaces: &Workspaces,
    services: &[Service<'_>],
    cluster: &str,
    report: &mut Report,
    warnings: &mut Warnings,
) -> Vec<InboundPolicy> {
    let mut out = Vec::new();
    for resource in &snapshot.resources {
        let Spec::AccessPolicy(spec) = &resource.spec else {
            continue;
        };
        let key = resource.key().to_string();
        let name = format!("{}/{}", resource.metadata.namespace, resource.metadata.name);
        let tls_mode = spec
            .config
            .authn
            .as_ref()
            .and_then(|a| a.tls_mode.as_deref())
            .map(|m| match m {
                "DISABLE" => TlsMode::Disable,
                "PERMISSIVE" => TlsMode::Permissive,
                _ => TlsMode::Strict,
            });
        let (has_authz, enforced, dry) = rules_of(spec, snapshot, workspaces, services, &key, warnings);
        let scope = workspaces.scope_of_policy(snapshot, &resource.metadata.namespace);
        if matches!(scope, PolicyScope::Nothing) {
            warnings.add(
                &key,
                "the policy's namespace is in no workspace, so it selects nothing (Gloo scopes policies to their workspace)",
            );
        }
        for (namespace, service, labels) in selections(spec, snapshot, workspaces, &scope, cluster) {
            let selected = services
                .iter()
                .filter(|s| s.cluster == cluster)
                .flat_map(|s| &s.workloads)
                .filter(|w| {
                    (namespace.is_empty() || namespace == w.namespace) && (service.is_empty() || service == w.service)
                })
                .filter(|w| labels.iter().all(|(k, v)| w.labels.get(k) == Some(v)))
                .count();
            if selected > 0 {
                let entry = report.entry(&key);
                entry.applied += selected;
                entry.clusters.insert(cluster.to_string());
            }
            let base = InboundPolicy {
                name: name.clone(),
                namespace,
                service,
                labels,
                tls_mode,
                rules: None,
                dry_run: false,
            };
            // Dry-run-only policies enforce nothing: no enforced rule set at all.
            let enforced_rules = (has_authz && (!enforced.is_empty() || dry.is_empty())).then(|| enforced.clone());
            out.push(InboundPolicy {
                rules: enforced_rules,
                ..base.clone()
            });
            if !dry.is_empty() {
                out.push(InboundPolicy {
                    rules: Some(dry.clone()),
                    dry_run: true,
                    tls_mode: None,
                    ..base
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_path_patterns() {
        assert_eq!(path("*"), PathMatch::Prefix("/".into()));
        assert_eq!(path("/api*"), PathMatch::Prefix("/api".into()));
        assert_eq!(path("*.css"), PathMatch::Regex(".*\\.css".into()));
        assert_eq!(path("/x"), PathMatch::Exact("/x".into()));
    }

    #[test]
    fn header_values_are_exact_or_prefix_or_suffix_wildcards() {
        let values = |v: &[&str]| header_values(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            values(&["match", "partial*"]),
            ValueMatch::Regex("^(match|partial.*)$".into())
        );
        assert_eq!(values(&["*.example"]), ValueMatch::Regex("^(.*\\.example)$".into()));
        assert_eq!(values(&["*"]), ValueMatch::Regex("^(.*)$".into()));
    }
}
